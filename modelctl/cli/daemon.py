"""The daemon's life from the CLI: ``serve`` (foreground) and ``daemon start|stop|status|logs``."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer

from modelctl.cli import output
from modelctl.cli.params import (
    HostOpt,
    HttpOpt,
    JsonOpt,
    MaxCpuMemoryOpt,
    MaxCudaMemoryOpt,
    ServerApiKeyOpt,
    ServerEngineOpt,
    ServerKeepAliveOpt,
    ServerPrecisionOpt,
    ThreadsOpt,
    duration_value,
    help_without_command,
    size_value,
)
from modelctl.cli.state import State, check_version, get_state
from modelctl.config import ENGINES, PRECISIONS, PreloadItem, Settings
from modelctl.errors import (
    ApiError,
    DaemonNotRunning,
    MethodNotAllowed,
    ModelctlError,
    NotFound,
)
from modelctl.units import format_bytes, format_duration

if TYPE_CHECKING:
    from modelctl.wire import Health

app = typer.Typer()
app.callback(help="Start, stop and inspect the background daemon.",
             invoke_without_command=True)(help_without_command)


def server_settings(settings: Settings, *, http: int | None, host: str | None,
                    api_key: str | None, max_cpu_memory: str | None,
                    max_cuda_memory: str | None, keep_alive: str | None,
                    preload: list[str] | None = None, precision: str | None = None,
                    engine: str | None = None, threads: int | None = None) -> Settings:
    """``settings`` with the server flags a command was given, parsed and checked."""
    for flag, value, choices in (("--precision", precision, PRECISIONS),
                                 ("--engine", engine, ENGINES)):
        if value is not None and value not in choices:
            raise typer.BadParameter(f"must be one of {', '.join(choices)}, not {value!r}",
                                     param_hint=flag)
    new = settings.with_overrides(precision=precision, engine=engine,
        http_port=http, http_host=host, api_key=api_key,
        max_cpu_memory=size_value(max_cpu_memory, "--max-cpu-memory"),
        max_cuda_memory=size_value(max_cuda_memory, "--max-cuda-memory"),
        preload=tuple(PreloadItem(n) for n in preload) if preload else None)
    seconds = duration_value(keep_alive, "--keep-alive")
    if seconds is not None:  # -1 means never, which Settings spells None
        new = replace(new, keep_alive=None if seconds < 0 else seconds)
    if threads is not None:  # 0 means adapt, which Settings spells None
        new = replace(new, threads=threads or None)
    if new.http_port is not None and not new.api_key and not _is_loopback(new.http_host):
        output.warn(f"http://{new.http_host}:{new.http_port} accepts requests from other "
                    "machines without an API key; give --api-key KEY (or MODELCTL_API_KEY)")
    return new


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _running(state: State) -> Health | None:
    """Health of the daemon on this user's socket, or ``None`` when none answers."""
    from modelctl.runtime import ping

    return ping(state.settings)


def _add_listener(state: State, health: Health, settings: Settings) -> None:
    """Ask the daemon that already runs to open ``settings``' TCP listener too."""
    assert settings.http_port is not None
    pid, port, host = health.get("pid"), settings.http_port, settings.http_host
    served = _serving(health, host, port)
    if served:
        output.hint(f"the running daemon (pid {pid}) already serves {served}")
        return
    client = state.socket_client()
    try:
        reply = client.add_listener(port, host, settings.api_key)
    except (NotFound, MethodNotAllowed) as exc:
        raise ModelctlError(
            f"the running daemon (pid {pid}) cannot open another listener; stop it with "
            f"`modelctl daemon stop`, then run `modelctl serve --http {port}`") from exc
    except ApiError as exc:
        raise ModelctlError(
            f"the running daemon (pid {pid}) could not listen on http://{host}:{port}: "
            f"{exc.message}; pick a free port, or stop the daemon (`modelctl daemon stop`) "
            f"and run `modelctl serve --http {port}`") from exc
    finally:
        client.close()
    output.hint(f"the running daemon (pid {pid}) now also listens on "
                f"{reply.get('url') or f'http://{host}:{port}'}")


def _serving(health: Health, host: str, port: int) -> str | None:
    """The daemon's listener on ``host:port``, if it has one (port 0 asks for a new one)."""
    from urllib.parse import urlsplit

    if port == 0:
        return None
    first = health.get("http")
    for url in health.get("listeners") or ([first] if first else []):
        parts = urlsplit(url)
        if parts.port == port and (parts.hostname == host.strip("[]") or
                                   host == "localhost" and parts.hostname == "127.0.0.1"):
            return str(url)
    return None


def _ignored_flags(given: dict[str, Any], pid: Any) -> None:
    names = [flag for flag, value in given.items() if value]
    if names:
        output.warn(f"{', '.join(names)} not applied: the running daemon (pid {pid}) keeps "
                    "its settings; `modelctl daemon stop` first to change them")


def serve(
    ctx: typer.Context,
    http: HttpOpt = None,
    host: HostOpt = None,
    api_key: ServerApiKeyOpt = None,
    max_cpu_memory: MaxCpuMemoryOpt = None,
    max_cuda_memory: MaxCudaMemoryOpt = None,
    keep_alive: ServerKeepAliveOpt = None,
    preload: Annotated[list[str] | None, typer.Option(
        "--preload", metavar="NAME", help="Load this model at start; repeatable.")] = None,
    precision: ServerPrecisionOpt = None,
    engine: ServerEngineOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Run the daemon in the foreground (Ctrl-C stops it); --http adds a TCP listener."""
    Settings.from_env()  # the daemon's knobs, checked strictly: a bad one fails here
    state = get_state(ctx)
    settings = server_settings(state.settings, http=http, host=host, api_key=api_key,
                               max_cpu_memory=max_cpu_memory, max_cuda_memory=max_cuda_memory,
                               keep_alive=keep_alive, preload=preload, precision=precision,
                               engine=engine, threads=threads)
    health = _running(state)
    if health is not None:
        check_version(health)
        _ignored_flags({"--max-cpu-memory": max_cpu_memory, "--max-cuda-memory":
                        max_cuda_memory, "--keep-alive": keep_alive, "--preload": preload,
                        "--precision": precision, "--engine": engine, "--threads": threads},
                       health.get("pid"))
        if http is not None:
            _add_listener(state, health, settings)
        else:
            output.hint(f"modelctl daemon already running (pid {health.get('pid')}) on "
                        f"{state.settings.socket_path}")
        return
    try:
        from modelctl.daemon.server import exit_process, run_daemon  # torch: only here
    except ImportError as exc:
        raise ModelctlError(f"the daemon cannot be imported ({exc}); reinstall modelctl "
                            "with its dependencies (pip install modelctl)") from exc
    exit_process(run_daemon(settings, foreground=True))


@app.command("start")
def start(
    ctx: typer.Context,
    http: HttpOpt = None,
    host: HostOpt = None,
    api_key: ServerApiKeyOpt = None,
    max_cpu_memory: MaxCpuMemoryOpt = None,
    max_cuda_memory: MaxCudaMemoryOpt = None,
    keep_alive: ServerKeepAliveOpt = None,
    precision: ServerPrecisionOpt = None,
    engine: ServerEngineOpt = None,
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start the daemon in the background (nothing happens if one runs)."""
    Settings.from_env()  # the daemon's knobs, checked strictly: a bad one fails here
    state = get_state(ctx)
    settings = server_settings(state.settings, http=http, host=host, api_key=api_key,
                               max_cpu_memory=max_cpu_memory, max_cuda_memory=max_cuda_memory,
                               keep_alive=keep_alive, precision=precision, engine=engine,
                               threads=threads)
    if threads == 0:
        # Settings spells "adapt" None, which the child's environment cannot carry.
        os.environ["MODELCTL_THREADS"] = "0"
    health, started = state.ensure_daemon(settings)
    if started and health.get("http"):
        output.hint(f"HTTP API on {health['http']}")
    if not started:
        output.hint(f"modelctl daemon already running (pid {health.get('pid')})")
        _ignored_flags({"--max-cpu-memory": max_cpu_memory, "--max-cuda-memory":
                        max_cuda_memory, "--keep-alive": keep_alive,
                        "--precision": precision, "--engine": engine, "--threads": threads},
                       health.get("pid"))
        if http is not None:
            _add_listener(state, health, settings)
    if as_json:
        output.print_json({**health, "started": started})


@app.command("stop")
def stop(ctx: typer.Context) -> None:
    """Stop the daemon: in-flight requests finish (within MODELCTL_SHUTDOWN_GRACE, 30s
    unless set), every model is freed."""
    from modelctl.runtime import stop_daemon

    state = get_state(ctx)
    try:
        with output.activity("stopping the modelctl daemon"):
            pid = stop_daemon(state.settings)
    except DaemonNotRunning as exc:
        raise state.no_daemon(exc, "so there is nothing to stop") from exc
    output.hint(f"stopped modelctl daemon (pid {pid})")


@app.command("status")
def status(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Show whether the daemon runs, and how (exit 3 when none runs)."""
    state = get_state(ctx)
    client = state.client(timeout=10.0)
    try:
        health = client.health()
    except DaemonNotRunning as exc:
        raise state.no_daemon(exc) from exc
    finally:
        client.close()
    if as_json:
        output.print_json(health)
        return
    check_version(health)
    rows = [
        ["status", str(health.get("status"))],
        ["pid", str(health.get("pid"))], ["version", str(health.get("version"))],
        ["uptime", format_duration(health.get("uptime_s"))],
        ["socket", str(health.get("socket") or state.settings.socket_path)],
    ]
    listeners = health.get("listeners")
    if listeners is None:  # an older daemon: its first listener only
        listeners = [health["http"]] if health.get("http") else []
    rows += [["http", str(url)] for url in listeners] or [["http", "-"]]
    rows += [
        ["torch", "ready" if health.get("torch_ready") else "warming up"],
        ["memory", daemon_memory(health.get("rss_bytes"), health.get("idle_rss_bytes"))],
    ]
    for item in health.get("preload") or ():
        error = f" ({item['error']})" if item.get("error") else ""
        rows.append(["preload", f"{item.get('name')} on {item.get('device') or '-'}: "
                                f"{item.get('state')}{error}"])
    output.print_table([("", "left"), ("", "left")], rows, show_header=False)


def daemon_memory(rss: int | None, idle_rss: int | None) -> str:
    """``"RSS 612 MiB (480 MiB with no model loaded)"``: the daemon's own footprint."""
    if rss is None:
        return "-"
    own = f" ({format_bytes(idle_rss)} with no model loaded)" if idle_rss else \
        " (torch still warming up)"
    return f"RSS {format_bytes(rss)}{own}"


@app.command("close-listener")
def close_listener(
    ctx: typer.Context,
    port: Annotated[int, typer.Argument(metavar="PORT", min=1, max=65535,
                                        help="The TCP port to stop listening on.")],
    host: Annotated[str | None, typer.Option(
        "--host", metavar="HOST", help="Only the listener on this address [default: any].")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Close one of the daemon's HTTP listeners; the daemon and its models stay."""
    state = get_state(ctx)
    client = state.socket_client()
    try:
        reply = client.close_listener(port, host)
    except DaemonNotRunning as exc:
        raise state.no_daemon(exc, "so nothing listens") from exc
    finally:
        client.close()
    if as_json:
        output.print_json(reply)
        return
    for url in reply.get("closed") or ():
        output.say(f"closed {url}")
    left = reply.get("listeners") or []
    output.hint(f"still listening on {', '.join(left)}" if left else
                "the daemon now listens on its Unix socket only")


@app.command("logs")
def logs(
    ctx: typer.Context,
    lines: Annotated[int, typer.Option(
        "--lines", "-n", min=0, metavar="N", help="Lines to show.")] = 50,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Keep printing new lines until Ctrl-C.")] = False,
) -> None:
    """Show the end of the daemon's log file."""
    from modelctl.runtime import tail_log

    settings = get_state(ctx).settings
    path = settings.log_path
    if not path.exists() and not follow:
        raise ModelctlError(f"there is no daemon log at {path} yet; "
                            "`modelctl daemon start` creates it")
    text = tail_log(settings, lines) if lines else ""
    if text:
        output.say(text)
    if follow:
        try:
            _follow(path)
        except KeyboardInterrupt:
            pass


def _follow(path: Path) -> None:
    """Print what is appended to ``path``; start over when it is replaced or truncated."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    f: IO[bytes] | None = None
    inode = None
    skip_to_end = path.exists()  # its tail was printed already
    while True:
        if f is None:
            try:
                f = open(path, "rb")  # not `with`: reopened when the file is replaced
            except FileNotFoundError:
                time.sleep(0.5)
                continue
            if skip_to_end:
                f.seek(0, os.SEEK_END)
                skip_to_end = False
            inode = os.fstat(f.fileno()).st_ino
        chunk = f.read()
        if chunk:
            # Decoded incrementally: a read may end inside a UTF-8 character.
            sys.stdout.write(output.printable_lines(decoder.decode(chunk)))
            sys.stdout.flush()
            continue
        time.sleep(0.25)
        try:
            info = os.stat(path)
        except FileNotFoundError:
            continue
        if info.st_ino != inode or info.st_size < f.tell():
            f.close()
            f = None
