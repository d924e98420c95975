"""The daemon process: lock, bind, serve, shut down cleanly.

Order matters here, and each step says why:
1. take the runtime dir's flock (two daemons never share a socket);
2. bind the Unix socket (and TCP port) *before* importing the web stack or torch, so
   clients can connect at once; connections wait in the backlog until we accept;
3. write the status file only after the bind, so whoever reads it can connect;
4. serve before FastAPI is imported: the Listener answers the fast GET routes
   (views.py: ``/v1/health``, ``/v1/models``, Marqo's ``/models``, ``/device/cpu``,
   ``/``) from the start, which is all a client that just started the daemon asks
   before ``ls``; every other request waits for the FastAPI app (``LateApp``), never
   fails for want of it;
5. in one background thread (warmup.py), build the FastAPI app, *then* import torch
   and the loaders: the app is ready in a fraction of a second, torch takes seconds,
   and requests that need torch await it (``DaemonState.torch_ready``);
6. on SIGTERM/SIGINT, remove the status file and socket *first* (a new client sees no
   daemon rather than a dying one), then let in-flight requests finish, bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from modelctl import __version__
from modelctl.config import Settings, Timeouts
from modelctl.errors import DaemonError, InvalidArgument, ModelctlError
from modelctl.runtime import (
    EXIT_ALREADY_RUNNING,
    DaemonLock,
    DaemonStatus,
    ensure_runtime_dir,
    read_status,
    write_status,
)

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from modelctl.daemon.listener import LateApp
    from modelctl.daemon.state import DaemonState
    from modelctl.daemon.warmup import ImportThread

log = logging.getLogger("modelctl.daemon")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def bind_unix(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # stale: we hold the lock, so no live daemon owns it
    old_umask = os.umask(0o177)  # created 0600: no window where others could connect
    try:
        sock.bind(path)
    finally:
        os.umask(old_umask)
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, ValueError, TypeError) as exc:  # TypeError: a NUL in the host
        sock.close()
        reason = getattr(exc, "strerror", None) or str(exc)
        raise DaemonError(f"cannot listen on {host}:{port}: {reason}") from exc
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def tcp_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run_daemon(settings: Settings, *, foreground: bool = False) -> int:
    """Run a daemon until it is told to stop; return the process exit status."""
    _configure_logging(settings, foreground)
    try:
        ensure_runtime_dir(settings.runtime_dir)
    except DaemonError as exc:
        log.error("%s", exc)
        return 1
    lock = DaemonLock(settings)
    if not lock.acquire():
        status = read_status(settings)
        pid = f" (pid {status.pid})" if status else ""
        log.error("a modelctl daemon is already running in %s%s", settings.runtime_dir, pid)
        return EXIT_ALREADY_RUNNING
    try:
        try:
            unix = bind_unix(str(settings.socket_path))
            tcp = (bind_tcp(settings.http_host, settings.http_port)
                   if settings.http_port is not None else None)
        except (OSError, DaemonError) as exc:
            log.error("%s", exc)
            return 1
        urls = [tcp_url(tcp)] if tcp is not None else []
        write_status(settings, _own_status(settings, urls[0] if urls else None))
        return _run_loop(settings, unix, tcp)
    finally:
        for path in (settings.status_path, settings.socket_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        lock.release()


def exit_process(status: int) -> None:
    """Exit now, skipping the interpreter's teardown.

    By the time ``run_daemon`` returns, the socket and status file are gone and the lock
    is released; what is left is unloading torch and friends module by module, which
    takes seconds and would keep ``daemon stop`` waiting for no benefit.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _run_loop(settings: Settings, unix: socket.socket, tcp: socket.socket | None) -> int:
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        return runner.run(_serve(settings, unix, tcp))


async def _serve(settings: Settings, unix: socket.socket, tcp: socket.socket | None) -> int:
    # Imported here, after the bind. None of these imports FastAPI or pydantic (half a
    # second): the app is built in the background as the listeners start (steps 4-5).
    from modelctl.daemon import views  # noqa: F401  (registers the fast GET routes)
    from modelctl.daemon.access_log import AccessLog
    from modelctl.daemon.connections import ConnectionCap
    from modelctl.daemon.listener import Listener
    from modelctl.daemon.state import DaemonState
    from modelctl.daemon.warmup import ImportThread

    state = DaemonState(settings)
    imports = ImportThread("warm-up")
    app = _app_built_in(imports, state)
    servers: list[Any] = []
    tasks: list[asyncio.Task[None]] = []
    by_url: dict[str, tuple[Any, asyncio.Task[None]]] = {}

    tcp_cap = ConnectionCap.for_this_process()

    def serve(sock: socket.socket, kind: str, api_key: str | None) -> None:
        host = sock.getsockname()[0] if kind == "tcp" else None
        allowed = settings.allowed_hosts if host is not None and _is_loopback(host) else None
        listener: Any = Listener(app, state, kind=kind, api_key=api_key, allowed_hosts=allowed)
        server = _make_server(AccessLog(listener) if kind == "tcp" else listener,
                              tcp_cap if kind == "tcp" else None, settings.timeouts)
        servers.append(server)
        task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        tasks.append(task)
        if kind == "tcp":
            by_url[tcp_url(sock)] = (server, task)

    async def open_listener(host: str, port: int, api_key: str | None) -> str:
        try:
            sock = bind_tcp(host, port)
        except DaemonError as exc:  # the request's host or port: the client's error
            raise InvalidArgument(exc.message) from exc
        url = tcp_url(sock)
        serve(sock, "tcp", api_key)
        _warn_if_exposed(host, api_key)
        state.http_urls.append(url)
        _record_http(settings, state.http_urls)
        log.info("listening on %s", url)
        return url

    async def close_listener(url: str) -> None:
        server, task = by_url.pop(url)
        state.http_urls.remove(url)
        _record_http(settings, state.http_urls)
        server.should_exit = True  # requests in flight finish, as at shutdown
        await asyncio.gather(task, return_exceptions=True)
        log.info("closed the listener on %s", url)

    state.open_listener = open_listener
    state.close_listener = close_listener
    serve(unix, "unix", None)
    if tcp is not None:
        state.http_urls.append(tcp_url(tcp))
        serve(tcp, "tcp", settings.api_key)
        _warn_if_exposed(settings.http_host, settings.api_key)
    state.start(imports)  # builds the app, then imports torch
    log.info("modelctl %s daemon (pid %d) listening on %s%s", __version__, os.getpid(),
             settings.socket_path, "".join(f" and {u}" for u in state.http_urls))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = loop.create_task(_keep_socket(settings, lambda sock: serve(sock, "unix", None)))
    await stop.wait()
    watcher.cancel()
    await _stop(settings, servers, tasks, state)
    return 0


async def _stop(settings: Settings, servers: list[Any], tasks: list[asyncio.Task[None]],
                state: DaemonState) -> None:
    log.info("stopping: finishing requests in flight (at most %gs)",
             settings.timeouts.shutdown_grace_s)
    for path in (settings.status_path, settings.socket_path):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    for server in servers:
        server.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)
    await state.close()
    log.info("stopped")


def _app_built_in(imports: ImportThread, state: DaemonState) -> LateApp:
    """The FastAPI app, as ``imports`` will build it (it imports FastAPI); requests that
    need it before then wait for it."""
    from modelctl.daemon.listener import LateApp

    def build() -> ASGIApp:
        from modelctl.daemon.app import create_app

        return create_app(state)

    def log_failure(built: asyncio.Future[ASGIApp]) -> None:
        if not built.cancelled() and built.exception() is not None:
            log.error("building the web app failed", exc_info=built.exception())

    built = imports.submit(build)
    built.add_done_callback(log_failure)
    return LateApp(built)


def _own_status(settings: Settings, http: str | None) -> DaemonStatus:
    """This daemon's status file, as it starts (or writes it again)."""
    return DaemonStatus(pid=os.getpid(), socket=str(settings.socket_path), version=__version__,
                        started_at=datetime.now(UTC).isoformat(timespec="seconds"), http=http,
                        shutdown_grace_s=settings.timeouts.shutdown_grace_s)


def _record_http(settings: Settings, urls: list[str]) -> None:
    """The status file's ``http``: the first TCP listener still open."""
    status = read_status(settings)
    first = urls[0] if urls else None
    if status is not None and status.http != first:
        write_status(settings, DaemonStatus(**{**status.__dict__, "http": first}))


SOCKET_CHECK_S = 2.0


async def _keep_socket(settings: Settings, serve: Any) -> None:
    """Bind the socket again when its file is deleted or replaced (a cleanup script, a
    careless `rm`): else the daemon runs on, holding models that no client can reach
    and that `daemon status` cannot see. The status file likewise."""
    path = settings.socket_path
    inode = os.stat(path).st_ino
    while True:
        await asyncio.sleep(SOCKET_CHECK_S)
        try:
            if os.stat(path).st_ino == inode:
                continue
        except FileNotFoundError:
            pass
        log.warning("the socket %s was removed or replaced; listening on a new one", path)
        try:
            serve(bind_unix(str(path)))
            inode = os.stat(path).st_ino
        except OSError as exc:
            log.error("cannot bind %s again: %s", path, exc)
            continue
        if read_status(settings) is None:
            write_status(settings, _own_status(settings, None))


def _make_server(app: Any, cap: Any, timeouts: Timeouts) -> Any:
    import uvicorn

    from modelctl.daemon.connections import guarded

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # The daemon handles signals once for all its listeners (_serve).
            yield

    try:
        import httptools  # noqa: F401
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as protocol
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol as protocol  # type: ignore[assignment]
    # uvicorn annotates these two as int, but hands them to call_later and wait_for, which
    # take fractions of a second as well.
    idle: Any = timeouts.idle_connection_s
    grace: Any = timeouts.shutdown_grace_s
    config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False,
                            http=guarded(protocol, cap, timeouts), timeout_keep_alive=idle,
                            server_header=False, timeout_graceful_shutdown=grace, ws="none")
    return _Server(config)


def _is_loopback(address: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _warn_if_exposed(host: str, api_key: str | None) -> None:
    if host not in LOOPBACK_HOSTS and not api_key:
        log.warning("listening on %s without an API key: anyone who can reach this port can "
                    "load and eject models; set --api-key or MODELCTL_API_KEY", host)


class _OneLineFormatter(logging.Formatter):
    """Each message on one line, control characters escaped: a name or path a client
    sent cannot forge log lines or reach the terminal of whoever reads the log.
    Tracebacks, added after the message, keep their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        message = record.message
        if not (message.isascii() and message.isprintable()):
            record.message = "".join(c if c.isprintable() else
                                     c.encode("unicode_escape").decode("ascii")
                                     for c in message)
        return super().formatMessage(record)


def _configure_logging(settings: Settings, foreground: bool) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if foreground:
        # A spawned daemon's stderr is already the log file; a foreground one writes both.
        with contextlib.suppress(OSError, ModelctlError):
            ensure_runtime_dir(settings.runtime_dir)
            handlers.append(logging.FileHandler(settings.log_path))
    logging.basicConfig(level=logging.DEBUG if settings.debug else logging.INFO,
                        handlers=handlers, force=True)
    formatter = _OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in handlers:
        handler.setFormatter(formatter)
    for noisy in ("uvicorn.error", "httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
