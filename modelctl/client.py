"""A stdlib-only client for the daemon's API, over its Unix socket or over HTTP.

``Client()`` talks to this user's daemon on its Unix socket; ``Client("http://host:8882",
api_key=...)`` talks to a ``modelctl serve --http`` (or a Marqo server, for the Marqo
calls). It imports nothing but the standard library, so any program, and the CLI, can
use it without paying for torch.

Marqo's documented calls return the contract's dicts unchanged::

    mq = Client()
    mq.get_loaded_models()          # {"models": [{"model_name": ..., "model_device": ...}]}
    mq.eject_model("ViT-L/14", "cuda")
    mq.get_cpu_info(); mq.get_cuda_info()

Every error the daemon answers is raised as a ``modelctl.errors.ApiError`` subclass
carrying ``status``, ``code`` and ``message``; a daemon that cannot be reached raises
``DaemonNotRunning``, and an exchange that fails midway ``DaemonUnreachable``
(``TRANSPORT_ERRORS`` is the one table of what each transport failure means).
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from modelctl.errors import (
    DaemonError,
    DaemonNotRunning,
    DaemonUnreachable,
    ServerClosed,
    error_from_body,
    reply_body,
)
from modelctl.unix_http import UnixConnection

if TYPE_CHECKING:
    from modelctl.wire import (
        CacheEntry,
        DevicesReport,
        EjectResult,
        Health,
        MarqoCpu,
        MarqoCuda,
        MarqoEjected,
        MarqoModels,
        MarqoRoot,
    )

# What each transport failure means to a caller: the class to raise and its message
# ({where}: the daemon's address; {exc}: the failure's own words). The most derived
# class that matches wins, as in httpx's map_httpcore_exceptions, so order is free.
# Failures not listed (EACCES on the socket, say) are the machine's and pass as they are.
_NO_DAEMON = "no modelctl daemon is running at {where}"
_CLOSED = "the daemon at {where} closed the connection: {exc}"
_UNREACHABLE = "cannot talk to the modelctl daemon: {exc}"
TRANSPORT_ERRORS: dict[type[Exception], tuple[type[DaemonError], str]] = {
    FileNotFoundError: (DaemonNotRunning, _NO_DAEMON),
    ConnectionRefusedError: (DaemonNotRunning, _NO_DAEMON),
    ConnectionResetError: (DaemonNotRunning, _CLOSED),
    BrokenPipeError: (DaemonNotRunning, _CLOSED),
    ServerClosed: (DaemonNotRunning, _CLOSED),
    ConnectionError: (DaemonUnreachable, _UNREACHABLE),
    TimeoutError: (DaemonUnreachable, _UNREACHABLE),
    socket.gaierror: (DaemonUnreachable, _UNREACHABLE),
    DaemonUnreachable: (DaemonUnreachable, _UNREACHABLE),
}
# A kept-alive connection the server has since closed fails on first use like this; one
# retry on a fresh connection is safe because the request never reached the server.
_CLOSED_WHILE_IDLE = (ConnectionResetError, BrokenPipeError, ServerClosed)


def _daemon_alive(socket_path: Path) -> bool:
    """Whether the status file beside ``socket_path`` names it and a live daemon holds
    the lock beside it."""
    from modelctl.config import LOCK_NAME, STATUS_NAME
    from modelctl.runtime import lock_file_held

    try:
        status = json.loads((socket_path.parent / STATUS_NAME).read_text())
        if status.get("socket") != str(socket_path):
            return False
    except (OSError, ValueError, AttributeError):
        return False
    return lock_file_held(socket_path.parent / LOCK_NAME)


def transport_error(exc: Exception, where: str) -> DaemonError | None:
    """The error to raise for transport failure ``exc``, or ``None`` to let it pass."""
    found: tuple[type[DaemonError], str] | None = None
    found_key: type[Exception] | None = None
    for key, mapped in TRANSPORT_ERRORS.items():
        if isinstance(exc, key) and (found_key is None or issubclass(key, found_key)):
            found, found_key = mapped, key
    if found is None:
        return None
    cls, template = found
    return cls(template.format(where=where, exc=str(exc) or type(exc).__name__))


class _TcpConnection:
    """``http.client`` behind ``UnixConnection``'s interface, for http(s) URLs."""

    def __init__(self, scheme: str, host: str, port: int | None, timeout: float | None) -> None:
        import http.client  # only URL clients pay for it (and the ssl it imports)

        cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        self._conn = cls(host, port, timeout=timeout)
        self.reused = False

    def exchange(self, method: str, target: str, body: bytes | None,
                 headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        import http.client

        try:
            self._conn.request(method, target, body=body, headers=headers)
            resp = self._conn.getresponse()
            data = resp.read()
        except http.client.RemoteDisconnected as exc:
            raise ServerClosed(str(exc)) from exc
        except http.client.HTTPException as exc:  # an answer that is not HTTP
            raise DaemonUnreachable(str(exc) or type(exc).__name__) from exc
        self.reused = True
        answer_headers = {k.lower(): v for k, v in resp.getheaders()}
        if answer_headers.get("connection", "").lower() == "close":
            self.close()
        return resp.status, answer_headers, data

    def close(self) -> None:
        self._conn.close()
        self.reused = False


class Client:
    """A connection to one daemon. Safe to share between threads (one connection each)."""

    def __init__(self, url: str | None = None, *, socket_path: str | Path | None = None,
                 api_key: str | None = None, timeout: float | None = 600.0,
                 autostart: bool = False) -> None:
        """``autostart=True``: start this user's daemon on first use when none runs, as
        ``modelctl load`` does (socket clients only; a URL's server is never started)."""
        self.autostart = autostart and url is None
        if url is None and socket_path is None:
            from modelctl.config import Settings

            settings = Settings.from_env(strict=False)  # the daemon's knobs are its own
            url = settings.url
            socket_path = settings.socket_path
            if url:
                api_key = api_key or settings.api_key
        self.url = url.rstrip("/") if url else None
        self.socket_path = str(socket_path) if socket_path is not None else None
        self.api_key = api_key
        self.timeout = timeout
        self._local = threading.local()
        if self.url:
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an http(s) URL: {url!r}")
            self._scheme = parts.scheme
            self._host = parts.hostname
            self._port = parts.port
            self._prefix = parts.path.rstrip("/")

    @property
    def where(self) -> str:
        """Where this client connects, for messages."""
        return self.url or f"unix:{self.socket_path}"

    # -- transport -------------------------------------------------------------------
    def _connection(self) -> UnixConnection | _TcpConnection:
        conn: UnixConnection | _TcpConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self.url:
                conn = _TcpConnection(self._scheme, self._host, self._port, self.timeout)
            else:
                assert self.socket_path is not None
                conn = UnixConnection(self.socket_path, self.timeout)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def request_raw(self, method: str, path: str, *, query: dict[str, Any] | None = None,
                    body: Any = None, headers: dict[str, str] | None = None,
                    ) -> tuple[int, dict[str, str], bytes]:
        """Send one request; return status, headers and the raw body."""
        if query:
            pairs = [(k, v) for k, v in query.items() if v is not None]
            if pairs:
                path = f"{path}?{urlencode(pairs)}"
        if self.url:
            path = self._prefix + path
        payload = None if body is None else json.dumps(body).encode()
        hdrs = {"Accept": "application/json"}
        if payload is not None:
            hdrs["Content-Type"] = "application/json"
        if self.api_key:
            hdrs["x-api-key"] = self.api_key
        hdrs.update(headers or {})
        for attempt in (0, 1):
            conn = self._connection()
            try:
                return conn.exchange(method, path, payload, hdrs)
            except Exception as exc:
                reused = conn.reused  # read before close(), which forgets it
                self.close()
                if attempt == 0 and reused and isinstance(exc, _CLOSED_WHILE_IDLE):
                    continue
                if isinstance(exc, ConnectionRefusedError) and self.socket_path and \
                        not self.url and _daemon_alive(Path(self.socket_path)):
                    # A live daemon's socket refusing: overloaded, not missing.
                    raise DaemonUnreachable(
                        f"a modelctl daemon runs at {self.where} but refused the connection "
                        "(overloaded, or out of file descriptors); try again") from exc
                if attempt == 0 and self.autostart and not self.url and \
                        isinstance(exc, (FileNotFoundError, ConnectionRefusedError)):
                    self._start_daemon()
                    continue
                mapped = transport_error(exc, self.where)
                if mapped is None:
                    raise
                raise mapped from exc
        raise AssertionError("unreachable")

    def _start_daemon(self) -> None:
        """Start a daemon for this client's socket (its runtime dir from the environment)."""
        from modelctl import runtime
        from modelctl.config import Settings

        settings = Settings.from_env()
        if self.socket_path is not None and Path(self.socket_path) != settings.socket_path:
            settings = settings.with_overrides(socket_path=Path(self.socket_path))
        runtime.start_daemon(settings)

    def request(self, method: str, path: str, *, query: dict[str, Any] | None = None,
                body: Any = None) -> Any:
        """Send one request and return its JSON; raise the daemon's error as an ``ApiError``."""
        status, _, data = self.request_raw(method, path, query=query, body=body)
        return reply_body(status, data)

    # -- Marqo's documented calls (docs/MARQO.md) ----------------------------------
    def get_marqo(self) -> MarqoRoot:
        """``GET /``: ``{"message": ..., "version": ...}``."""
        return self.request("GET", "/")

    def get_loaded_models(self) -> MarqoModels:
        """``GET /models``: ``{"models": [{"model_name", "model_device"}]}``."""
        return self.request("GET", "/models")

    def eject_model(self, model_name: str, model_device: str | None = None) -> MarqoEjected:
        """``DELETE /models``: eject from one device, or from every device when none is given."""
        return self.request("DELETE", "/models",
                            query={"model_name": model_name, "model_device": model_device})

    def get_cpu_info(self) -> MarqoCpu:
        """``GET /device/cpu``: usage and memory as Marqo's strings."""
        return self.request("GET", "/device/cpu")

    def get_cuda_info(self) -> MarqoCuda:
        """``GET /device/cuda``: one entry per visible GPU; 400 without CUDA."""
        return self.request("GET", "/device/cuda")

    # -- the native API --------------------------------------------------------------
    def health(self) -> Health:
        """``GET /v1/health``: ``{status, version, pid, uptime_s, torch_ready, ...}``."""
        return self.request("GET", "/v1/health")

    def list_models(self) -> list[CacheEntry]:
        """Every cache entry with full detail (docs/API.md's entry fields).

        ``GET /v1/models`` is OpenAI's model list; each item is an entry with OpenAI's
        ``id``, ``object``, ``created`` and ``owned_by`` in front.
        """
        return self.request("GET", "/v1/models")["data"]

    def get_model(self, model_id: str) -> CacheEntry:
        """``GET /v1/models/{id}``: one loaded model (OpenAI's model object, full detail)."""
        from urllib.parse import quote

        return self.request("GET", f"/v1/models/{quote(model_id, safe='/')}")


    def load_model(self, name: str, device: str | None = None, *, pin: bool | None = None,
                   keep_alive: str | float | None = None,
                   properties: dict[str, Any] | None = None, precision: str | None = None,
                   engine: str | None = None, copies: int | None = None,
                   node: str | None = None) -> CacheEntry:
        """Load ``name`` on ``device`` (waits for the load; returns the entry).

        ``precision``/``engine`` choose the variant (default: the daemon's, fp32 torch).
        ``copies`` and ``node`` are for a cluster (``modelctl cluster``): load on that
        many replicas, or on that node; the entry then lists every copy in ``copies``.
        """
        body = {"name": name, "device": device, "pin": pin, "keep_alive": keep_alive,
                "properties": properties, "precision": precision, "engine": engine,
                "copies": copies, "node": node}
        return self.request("POST", "/v1/models",
                            body={k: v for k, v in body.items() if v is not None})

    def update_model(self, name: str, device: str | None = None, *, pin: bool | None = None,
                     keep_alive: str | float | None = None) -> list[CacheEntry]:
        """Change pin or keep-alive of a loaded model; returns the entries changed."""
        body = {"name": name, "device": device, "pin": pin, "keep_alive": keep_alive}
        return self.request("PATCH", "/v1/models",
                            body={k: v for k, v in body.items() if v is not None})["models"]

    def eject(self, name: str | None = None, device: str | None = None, *,
              all: bool = False, force: bool = False, precision: str | None = None,
              engine: str | None = None, node: str | None = None) -> EjectResult:
        """Eject one model (from ``device``, or every device; every variant unless
        ``precision``/``engine`` narrow it) or, with ``all``, everything; on a cluster,
        ``node`` limits it to one node."""
        query: dict[str, Any] = {"name": name, "device": device, "precision": precision,
                                 "engine": engine, "node": node}
        if all:
            query["all"] = "true"
        if force:
            query["force"] = "true"
        return self.request("DELETE", "/v1/models", query=query)

    def registry(self, *, offline: bool = True) -> list[dict[str, Any]]:
        """Every model name the daemon knows, with family, dimensions, Marqo's properties
        and (unless ``offline=False``, which answers faster) whether weights are here."""
        path = "/v1/registry" if offline else "/v1/registry?offline=false"
        return self.request("GET", path)["models"]

    def devices(self) -> DevicesReport:
        """``GET /v1/devices``: cpu and each cuda device, with memory and budgets."""
        return self.request("GET", "/v1/devices")

    def embeddings(self, model: str, input: str | Sequence[str], *, device: str | None = None,
                   normalize: bool | None = None, encoding_format: str | None = None,
                   precision: str | None = None, engine: str | None = None,
                   input_type: str | None = None) -> dict[str, Any]:
        """``POST /v1/embeddings`` as the OpenAI API defines it, plus ``device``,
        ``normalize``, ``input_type`` (``query``/``document``: the model's prefixes) and
        the variant (``precision``, ``engine``)."""
        body: dict[str, Any] = {"model": model, "input": input}
        for key, value in (("device", device), ("normalize", normalize),
                           ("encoding_format", encoding_format), ("input_type", input_type),
                           ("precision", precision), ("engine", engine)):
            if value is not None:
                body[key] = value
        return self.request("POST", "/v1/embeddings", body=body)

    def embed(self, model: str, inputs: Sequence[str], *, device: str | None = None,
              normalize: bool | None = None, input_type: str | None = None,
              precision: str | None = None, engine: str | None = None,
              ) -> list[list[float]]:
        """Embeddings of ``inputs`` (texts, or ``data:image/...;base64,`` strings) in order.

        ``input_type`` ``"query"`` or ``"document"`` puts the model's query or document
        prefix (e5's ``query: ``, bge's instruction) before each text."""
        reply = self.embeddings(model, list(inputs), device=device, normalize=normalize,
                                encoding_format="base64", input_type=input_type,
                                precision=precision, engine=engine)
        return [decode_base64_embedding(item["embedding"]) for item in reply["data"]]

    def metrics(self) -> str:
        status, _, data = self.request_raw("GET", "/metrics", headers={"Accept": "text/plain"})
        if status >= 400:
            raise error_from_body(status, json.loads(data or b"null"))
        return data.decode()

    def add_listener(self, port: int, host: str = "127.0.0.1",
                     api_key: str | None = None) -> dict[str, Any]:
        """Ask a running daemon to open a TCP listener (Unix socket only)."""
        body = {"port": port, "host": host, "api_key": api_key}
        return self.request("POST", "/v1/listeners",
                            body={k: v for k, v in body.items() if v is not None})


    def close_listener(self, port: int, host: str | None = None) -> dict[str, Any]:
        """Close a running daemon's TCP listener on ``port`` (Unix socket only)."""
        return self.request("DELETE", "/v1/listeners", query={"port": port, "host": host})


def decode_base64_embedding(value: str | list[float]) -> list[float]:
    """OpenAI's ``base64`` encoding: little-endian float32s. Floats pass through."""
    if isinstance(value, list):
        return value
    import base64

    raw = base64.b64decode(value)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def image_data_uri(path: str | Path) -> str:
    """A file as the ``data:image/...;base64,`` string the embeddings API accepts."""
    data = Path(path).read_bytes()
    kind = _sniff_image(data)
    import base64

    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}"


def _sniff_image(data: bytes) -> str:
    signatures: Iterable[tuple[bytes, str]] = (
        (b"\x89PNG", "png"), (b"\xff\xd8\xff", "jpeg"), (b"GIF8", "gif"),
        (b"BM", "bmp"), (b"RIFF", "webp"))
    for magic, kind in signatures:
        if data.startswith(magic):
            return kind
    return "png"
