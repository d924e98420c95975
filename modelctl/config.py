"""Settings: flags > environment (``MODELCTL_*``, then Marqo's ``MARQO_*`` aliases) > defaults.

This is the only module that reads ``os.environ``. Everything else takes a ``Settings``
built by ``Settings.from_env(environ=...)``, so tests pass a dict instead of patching
the process environment. Stdlib only: the CLI imports it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from modelctl.errors import InvalidArgument
from modelctl.units import parse_duration, parse_keep_alive, parse_size

SOCKET_NAME = "modelctl.sock"
LOCK_NAME = "modelctl.lock"
STATUS_NAME = "modelctl.json"
LOG_NAME = "modelctl.log"

# A loaded model's variants (daemon/loaders/precision.py says which devices run which).
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
ENGINES = ("torch", "onnx")

# Host header values a loopback listener answers; a web page that rebinds its own domain
# to 127.0.0.1 sends its domain, and is refused.
LOOPBACK_HOST_NAMES = ("localhost", "127.0.0.1", "::1")

@dataclass(frozen=True)
class PreloadItem:
    """One model to load when the daemon starts."""

    name: str
    properties: dict[str, Any] | None = None
    device: str | None = None


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask of the daemon."""

    max_body_bytes: int = 32 * 2**20
    max_batch_items: int = 2048
    max_text_chars: int = 100_000
    max_image_bytes: int = 20 * 2**20
    max_image_pixels: int = 40_000_000
    # Decoded images take 4 bytes a pixel (RGB is stored as RGBX) and more on the way:
    # 100 Mpixels is a few big photographs, and well under a GiB decoded.
    max_request_pixels: int = 100_000_000
    max_inflight_pixels: int = 200_000_000
    max_queue_items: int = 8192


@dataclass(frozen=True)
class Timeouts:
    """How long the daemon waits on its clients, and on its own requests when stopping."""

    # A kept-alive connection with no request in progress is closed past this.
    idle_connection_s: float = 30.0
    # From a connection (or the end of the last answer) to a whole request head.
    request_head_s: float = 10.0
    # From a request's head to the last byte of its body.
    request_body_s: float = 60.0
    # After SIGTERM, requests in flight may finish for this long; then they are cancelled.
    shutdown_grace_s: float = 30.0


@dataclass(frozen=True)
class Settings:
    runtime_dir: Path
    socket_path: Path
    url: str | None = None
    max_cpu_memory: int | None = None  # bytes; None: derive from the machine (daemon)
    max_cuda_memory: int | None = None  # bytes per GPU; None: derive from the GPU
    keep_alive: float | None = None  # seconds; None: never expire (Marqo's semantics)
    preload: tuple[PreloadItem, ...] = ()
    api_key: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int | None = None
    default_device: str | None = None  # None: cuda when present, else cpu
    offline: bool = False
    debug: bool = False
    limits: Limits = field(default_factory=Limits)
    timeouts: Timeouts = field(default_factory=Timeouts)
    # The variant a load gets when it names none (Marqo's default: fp32 torch).
    precision: str = "fp32"
    engine: str = "torch"
    threads: int | None = None  # cpu intra-op threads; None: adapt to the free cores
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "modelctl")
    # Host header values a loopback TCP listener accepts (``*``: any); loopback names
    # always.
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOST_NAMES
    # Marqo's ``url`` property over http(s) from TCP clients (the socket's always may).
    allow_url_downloads: bool = False

    @property
    def lock_path(self) -> Path:
        return self.runtime_dir / LOCK_NAME

    @property
    def status_path(self) -> Path:
        return self.runtime_dir / STATUS_NAME

    @property
    def log_path(self) -> Path:
        return self.runtime_dir / LOG_NAME

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the flags a command was given (``None`` means "not given")."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if "runtime_dir" in given and "socket_path" not in given:
            given["socket_path"] = Path(given["runtime_dir"]) / SOCKET_NAME
        return replace(self, **given)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *,
                 strict: bool = True) -> Settings:
        """Settings from ``environ`` (default ``os.environ``).

        ``strict=False`` (clients: the CLI, ``Client()``): a bad value of a knob only the
        daemon uses (budgets, keep-alive, preload, port, limits, variant, threads) is left
        to the daemon to reject, so it cannot break ``modelctl ls`` or an unrelated program.
        """
        env = os.environ if environ is None else environ
        runtime_dir = default_runtime_dir(env)
        socket_path = Path(env["MODELCTL_SOCKET"]) if env.get("MODELCTL_SOCKET") else (
            runtime_dir / SOCKET_NAME)

        def daemon_only(parse: Callable[[], Any], default: Any) -> Any:
            try:
                return parse()
            except InvalidArgument:
                if strict:
                    raise
                return default

        return cls(
            runtime_dir=runtime_dir,
            socket_path=socket_path,
            url=env.get("MODELCTL_URL") or None,
            max_cpu_memory=daemon_only(lambda: _budget(
                env, "MODELCTL_MAX_CPU_MEMORY", "MARQO_MAX_CPU_MODEL_MEMORY"), None),
            max_cuda_memory=daemon_only(lambda: _budget(
                env, "MODELCTL_MAX_CUDA_MEMORY", "MARQO_MAX_CUDA_MODEL_MEMORY"), None),
            keep_alive=daemon_only(lambda: _keep_alive(env.get("MODELCTL_KEEP_ALIVE")), None),
            preload=daemon_only(lambda: _preload(env), ()),
            api_key=env.get("MODELCTL_API_KEY") or None,
            http_host=env.get("MODELCTL_HTTP_HOST") or "127.0.0.1",
            http_port=daemon_only(lambda: _port(env.get("MODELCTL_HTTP_PORT")), None),
            default_device=env.get("MODELCTL_DEVICE") or None,
            offline=_truthy(env.get("MODELCTL_OFFLINE")) or _truthy(env.get("HF_HUB_OFFLINE")),
            debug=_truthy(env.get("MODELCTL_DEBUG")),
            limits=daemon_only(lambda: _limits(env), Limits()),
            timeouts=daemon_only(lambda: _timeouts(env), Timeouts()),
            allowed_hosts=LOOPBACK_HOST_NAMES + tuple(
                host.strip().lower() for host in env.get("MODELCTL_ALLOWED_HOSTS", "").split(",")
                if host.strip()),
            precision=daemon_only(
                lambda: _choice(env, "MODELCTL_PRECISION", PRECISIONS, "fp32"), "fp32"),
            engine=daemon_only(lambda: _choice(env, "MODELCTL_ENGINE", ENGINES, "torch"), "torch"),
            threads=daemon_only(lambda: _threads(env.get("MODELCTL_THREADS")), None),
            cache_dir=default_cache_dir(env),
            allow_url_downloads=_truthy(env.get("MODELCTL_ALLOW_URL_DOWNLOADS")),
        )


def set_compute_environment(environ: MutableMapping[str, str] | None = None) -> None:
    """Before torch is imported: OpenMP workers that sleep when idle, not spin.

    A spinning worker holds a core another process on a shared host needs, and every
    pass then waits for the thread that got none. A value the user set is kept.
    """
    env = os.environ if environ is None else environ
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _choice(env: Mapping[str, str], var: str, choices: tuple[str, ...], default: str) -> str:
    raw = (env.get(var) or "").strip().lower()
    if not raw:
        return default
    if raw not in choices:
        raise InvalidArgument(f"{var}: must be one of {', '.join(choices)}, not {raw!r}")
    return raw


def _threads(raw: str | None) -> int | None:
    """``MODELCTL_THREADS``: cpu intra-op threads, pinned (unset or 0: adapt)."""
    if not raw or not raw.strip():
        return None
    try:
        threads = int(raw)
    except ValueError:
        raise InvalidArgument(f"MODELCTL_THREADS: not a whole number: {raw!r}") from None
    if not 0 <= threads <= 1024:
        raise InvalidArgument(f"MODELCTL_THREADS: must be 0 (adapt) to 1024, not {threads}")
    return threads or None


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``MODELCTL_CACHE_DIR``, else ``$XDG_CACHE_HOME/modelctl``, else ``~/.cache/modelctl``."""
    env = os.environ if env is None else env
    if env.get("MODELCTL_CACHE_DIR"):
        return Path(env["MODELCTL_CACHE_DIR"]).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]) / "modelctl"
    return Path.home() / ".cache" / "modelctl"


def default_runtime_dir(env: Mapping[str, str]) -> Path:
    """``$MODELCTL_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/modelctl``, else
    ``/tmp/modelctl-$UID``."""
    if env.get("MODELCTL_RUNTIME_DIR"):
        return Path(env["MODELCTL_RUNTIME_DIR"])
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "modelctl"
    return Path(f"/tmp/modelctl-{os.getuid()}")


def _limits(env: Mapping[str, str]) -> Limits:
    """``MODELCTL_MAX_QUEUE``: inputs a model's batcher may hold waiting (past it, 429);
    ``MODELCTL_MAX_REQUEST_PIXELS``: image pixels one request may send (past it, 413);
    the pixels all requests in flight may hold are twice that."""
    given: dict[str, int] = {}
    queue = _whole_number(env, "MODELCTL_MAX_QUEUE")
    if queue is not None:
        given["max_queue_items"] = queue
    pixels = _whole_number(env, "MODELCTL_MAX_REQUEST_PIXELS")
    if pixels is not None:
        given["max_request_pixels"] = pixels
        given["max_inflight_pixels"] = 2 * pixels
    return Limits(**given)


# The environment variable of each field of Timeouts.
TIMEOUT_VARIABLES = {
    "idle_connection_s": "MODELCTL_IDLE_CONNECTION_TIMEOUT",
    "request_head_s": "MODELCTL_REQUEST_HEAD_TIMEOUT",
    "request_body_s": "MODELCTL_REQUEST_BODY_TIMEOUT",
    "shutdown_grace_s": "MODELCTL_SHUTDOWN_GRACE",
}
MAX_TIMEOUT_S = 24 * 3600.0


def _timeouts(env: Mapping[str, str]) -> Timeouts:
    """Each of ``TIMEOUT_VARIABLES`` a duration (``30``, ``500ms``, ``2m``) over 0 and at
    most a day: a connection timer of "never" would let one client hold a descriptor
    forever, and a stop that waits forever is not a stop."""
    given: dict[str, float] = {}
    for name, var in TIMEOUT_VARIABLES.items():
        raw = (env.get(var) or "").strip()
        if not raw:
            continue
        try:
            seconds = parse_duration(raw)
        except ValueError as exc:
            raise InvalidArgument(f"{var}: {exc}") from exc
        if seconds is None or not 0 < seconds <= MAX_TIMEOUT_S:
            raise InvalidArgument(f"{var}: must be a duration over 0 and at most 24h, "
                                  f"not {raw!r}")
        given[name] = seconds
    return Timeouts(**given)


def _whole_number(env: Mapping[str, str], var: str) -> int | None:
    raw = env.get(var)
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise InvalidArgument(f"{var}: not a whole number: {raw!r}") from None
    if value < 1:
        raise InvalidArgument(f"{var}: must be at least 1, not {value}")
    return value


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _port(raw: str | None) -> int | None:
    if not raw:
        return None
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise InvalidArgument(f"MODELCTL_HTTP_PORT: not a TCP port: {raw!r}")
    return port


def _budget(env: Mapping[str, str], ours: str, marqo: str) -> int | None:
    """Bytes from ``ours`` (``4GiB``, ``512MB``, bytes), else from Marqo's ``marqo`` (GB)."""
    var = ours if env.get(ours, "").strip() else marqo if env.get(marqo, "").strip() else None
    if var is None:
        return None
    try:
        # Marqo's knob is a number of GB (decimal, as Marqo's docs say); a unit is honoured.
        value = parse_size(env[var], default_unit="gb" if var == marqo else "")
    except ValueError as exc:
        raise InvalidArgument(f"{var}: {exc}") from exc
    if value <= 0:
        raise InvalidArgument(f"{var}: a budget of {env[var]!r} fits no model; give a size "
                              "such as 4GiB, or unset it for the default")
    return value


def _keep_alive(raw: str | None) -> float | None:
    if not raw or not raw.strip():
        return None
    try:
        return parse_keep_alive(raw)
    except ValueError as exc:
        raise InvalidArgument(f"MODELCTL_KEEP_ALIVE: {exc}") from exc


def parse_preload(raw: str, source: str) -> tuple[PreloadItem, ...]:
    """A JSON list of names or ``{"model": ..., "modelProperties": {...}}`` (Marqo's shape).

    One such object alone is accepted, and a comma-separated list of names, for
    ``MODELCTL_PRELOAD=a,b``.
    """
    raw = raw.strip()
    if not raw:
        return ()
    if not raw.startswith(("[", "{", '"')):
        return tuple(PreloadItem(name.strip()) for name in raw.split(",") if name.strip())
    try:
        items = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"{source} is not valid JSON: {exc}") from exc
    return tuple(_preload_item(item, source) for item in
                 (items if isinstance(items, list) else [items]))


def _preload_item(item: Any, source: str) -> PreloadItem:
    shape = '{"model": NAME, "modelProperties": {...}}'
    if isinstance(item, str) and item.strip():
        return PreloadItem(item.strip())
    if not isinstance(item, dict):
        raise InvalidArgument(f"{source}: each item must be a model name or {shape}, "
                              f"not {item!r}")
    name = item.get("model")
    if not isinstance(name, str) or not name.strip():
        raise InvalidArgument(f"{source}: {item!r} has no \"model\" name; use {shape}")
    props = item.get("modelProperties", item.get("model_properties"))
    if props is not None and not isinstance(props, dict):
        raise InvalidArgument(f"{source}: modelProperties of {name!r} must be an object")
    device = item.get("device")
    if device is not None and not isinstance(device, str):
        raise InvalidArgument(f"{source}: device of {name!r} must be a string")
    return PreloadItem(name.strip(), props, device)


def _preload(env: Mapping[str, str]) -> tuple[PreloadItem, ...]:
    items = (parse_preload(env.get("MODELCTL_PRELOAD", ""), "MODELCTL_PRELOAD")
             + parse_preload(env.get("MARQO_MODELS_TO_PRELOAD", ""), "MARQO_MODELS_TO_PRELOAD"))
    unique: dict[tuple[str, str | None], PreloadItem] = {}
    for item in items:  # named in both variables: load (and report) it once
        unique.setdefault((item.name, item.device), item)
    return tuple(unique.values())
