"""The runtime dir and the daemon's life: lock, status file, spawn, wait until ready, stop.

Layout of ``Settings.runtime_dir`` (mode 0700, owned by this user)::

    modelctl.sock   the daemon's Unix socket (0600)
    modelctl.lock   flock'ed by the daemon for its whole life: two daemons never share a dir
    modelctl.json   status {pid, socket, version, started_at, http}, written after bind
    modelctl.log    the daemon's log

Every bad state (dir owned by someone else, stale files, a daemon that died while
starting) becomes one ``DaemonError`` with a sentence a person can act on. Stdlib only.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import stat
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from modelctl.config import MAX_TIMEOUT_S, Settings, Timeouts
from modelctl.errors import (
    DaemonError,
    DaemonNotRunning,
    DaemonStartError,
    DaemonUnreachable,
    reply_body,
)
from modelctl.unix_http import UnixConnection

if TYPE_CHECKING:
    from modelctl.wire import Health

# The daemon process exits with this when another daemon already holds the lock.
EXIT_ALREADY_RUNNING = 3

# What a daemon child needs from the spawner's settings, passed through its environment
# (never on argv, where other users could read an API key with ps).
_SETTING_ENV = {
    "runtime_dir": "MODELCTL_RUNTIME_DIR",
    "socket_path": "MODELCTL_SOCKET",
    "http_port": "MODELCTL_HTTP_PORT",
    "http_host": "MODELCTL_HTTP_HOST",
    "api_key": "MODELCTL_API_KEY",
    "max_cpu_memory": "MODELCTL_MAX_CPU_MEMORY",
    "max_cuda_memory": "MODELCTL_MAX_CUDA_MEMORY",
    "default_device": "MODELCTL_DEVICE",
    "keep_alive": "MODELCTL_KEEP_ALIVE",
    "precision": "MODELCTL_PRECISION",
    "engine": "MODELCTL_ENGINE",
    "threads": "MODELCTL_THREADS",
    "cache_dir": "MODELCTL_CACHE_DIR",
}


@dataclass(frozen=True)
class DaemonStatus:
    pid: int
    socket: str
    version: str
    started_at: str
    http: str | None = None
    # How long the daemon lets requests finish after SIGTERM (None: a daemon from before
    # it said so, which allowed 30 s).
    shutdown_grace_s: float | None = None


def ensure_runtime_dir(path: Path) -> Path:
    """Create ``path`` 0700, or check an existing one is ours and private.

    Refuses a dir (or a symlink to one) another user owns, and a dir that group or others
    can write: a socket there could already be theirs, and our clients would send them
    our requests; tightening the mode afterwards would not undo that. A dir that others
    can only read or enter is tightened to 0700 (nothing of theirs can be inside).
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        infos = (os.lstat(path), path.stat())
    except OSError as exc:
        raise DaemonError(f"cannot create runtime dir {path}: {exc.strerror}") from exc
    for info in infos:
        if info.st_uid != os.getuid():
            raise DaemonError(f"runtime dir {path} belongs to uid {info.st_uid}, not to you; "
                              "set MODELCTL_RUNTIME_DIR to a directory of your own")
    mode = stat.S_IMODE(infos[1].st_mode)
    if mode & 0o022:
        raise DaemonError(f"runtime dir {path} can be written by other users (mode "
                          f"{mode:04o}), so a socket in it may not be yours; `chmod 700 "
                          f"{path}` if only you used it, or set MODELCTL_RUNTIME_DIR to a "
                          "directory of your own")
    if mode != 0o700:
        os.chmod(path, 0o700)
    return path


def read_status(settings: Settings) -> DaemonStatus | None:
    """The status file, or ``None`` when there is none or it is unreadable."""
    try:
        data = json.loads(settings.status_path.read_text())
        return DaemonStatus(**{k: data.get(k) for k in DaemonStatus.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        return None


def write_status(settings: Settings, status: DaemonStatus) -> None:
    """Write the status file atomically, so a reader never sees half of it."""
    tmp = settings.status_path.with_suffix(".json.tmp")
    try:
        tmp.write_text(json.dumps(asdict(status)))
        os.chmod(tmp, 0o600)
        os.replace(tmp, settings.status_path)
    except BaseException:
        # A full disk leaves half a temporary file: never leave it behind.
        tmp.unlink(missing_ok=True)
        raise


class DaemonLock:
    """The flock that makes a daemon the only one in its runtime dir."""

    def __init__(self, settings: Settings) -> None:
        self.path = settings.lock_path
        self._file: IO[str] | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; ``False`` if another daemon holds it."""
        f = open(self.path, "a+")  # noqa: SIM115 - held for the daemon's whole life
        os.chmod(self.path, 0o600)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            f.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        self._file = f
        return True

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def lock_is_held(settings: Settings) -> bool:
    """Whether a live daemon holds the runtime dir's lock."""
    return lock_file_held(settings.lock_path)


def lock_file_held(path: Path) -> bool:
    """Whether a live process holds the flock on ``path``. A daemon's lock goes with its
    last breath, where its pid may linger a while as a zombie, or be another's later."""
    try:
        f = open(path)
    except FileNotFoundError:
        return False
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def remove_stale_files(settings: Settings) -> bool:
    """Remove a socket and status file no live daemon owns; ``True`` if any were removed."""
    if lock_is_held(settings):
        return False
    removed = False
    for path in (settings.socket_path, settings.status_path):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed = True
    return removed


def daemon_environment(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a daemon child: ours, plus the settings given as flags."""
    env = dict(os.environ if base is None else base)
    for attr, var in _SETTING_ENV.items():
        value = getattr(settings, attr)
        if value is not None:
            env[var] = str(value)
    if settings.keep_alive is None and "MODELCTL_KEEP_ALIVE" in env:
        env["MODELCTL_KEEP_ALIVE"] = "-1"
    if settings.preload:
        env["MODELCTL_PRELOAD"] = json.dumps([
            {"model": p.name, "modelProperties": p.properties, "device": p.device}
            for p in settings.preload])
        env.pop("MARQO_MODELS_TO_PRELOAD", None)  # already merged into settings.preload
    return env


def spawn_daemon(settings: Settings) -> subprocess.Popen[bytes]:
    """Start ``python -m modelctl.daemon`` detached, logging to the runtime dir."""
    ensure_runtime_dir(settings.runtime_dir)
    with open(settings.log_path, "ab") as log:
        os.chmod(settings.log_path, 0o600)
        return subprocess.Popen(
            [sys.executable, "-m", "modelctl.daemon"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=daemon_environment(settings), start_new_session=True, close_fds=True)


def ping(settings: Settings, timeout: float = 2.0) -> Health | None:
    """``/v1/health`` of the daemon on the socket, or ``None`` if none answers.

    Asked over ``unix_http`` itself rather than through ``Client``, which imports this
    module to start daemons. An error the daemon answers is raised as ``Client`` would.
    """
    conn = UnixConnection(str(settings.socket_path), timeout)
    try:
        status, _, data = conn.exchange("GET", "/v1/health", None,
                                        {"Accept": "application/json"})
    except (DaemonUnreachable, OSError):  # no socket, refused, reset, timed out
        return None
    finally:
        conn.close()
    health: Health = reply_body(status, data)
    return health


def wait_ready(settings: Settings, proc: subprocess.Popen[bytes] | None,
               timeout: float = 30.0) -> Health:
    """Wait until the daemon answers on its socket; return its health.

    If ``proc`` lost the race for the lock, wait for the daemon that won instead.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    log_size = _size(settings.log_path)
    while True:
        health = ping(settings, timeout=max(0.5, deadline - time.monotonic()))
        if health is not None:
            return health
        if proc is not None and proc.poll() is not None and proc.returncode != \
                EXIT_ALREADY_RUNNING:
            raise DaemonStartError(
                f"the daemon exited with status {proc.returncode} while starting; "
                + _last_lines(settings, log_size))
        if time.monotonic() > deadline:
            raise DaemonStartError(f"the daemon did not answer on {settings.socket_path} "
                                   f"within {timeout:.0f}s; see {settings.log_path}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def start_daemon(settings: Settings, timeout: float = 30.0) -> tuple[Health, bool]:
    """Start a daemon unless one answers; return its health and whether we started it."""
    ensure_runtime_dir(settings.runtime_dir)  # before talking to a socket in it
    health = ping(settings)
    if health is not None:
        return health, False
    remove_stale_files(settings)
    proc = spawn_daemon(settings)
    health = wait_ready(settings, proc, timeout)
    started = proc.poll() is None or proc.returncode == 0
    return health, started and health.get("pid") == proc.pid


# The daemon lets requests in flight finish for its shutdown grace (its status file says
# how long) after SIGTERM, then frees its models: `daemon stop` waits this much past the
# grace, so a daemon that exits just after its grace period is reported stopped, not failed.
STOP_MARGIN_S = 30.0


def stop_daemon(settings: Settings, timeout: float | None = None) -> int:
    """SIGTERM the daemon and wait until it has let go of its lock; return its pid.

    ``timeout`` (default: the daemon's grace plus ``STOP_MARGIN_S``) bounds the wait."""
    status = read_status(settings)
    if status is None or not lock_is_held(settings):
        remove_stale_files(settings)
        raise DaemonNotRunning(f"no modelctl daemon is running in {settings.runtime_dir}")
    try:
        os.kill(status.pid, signal.SIGTERM)
    except ProcessLookupError:
        remove_stale_files(settings)
        raise DaemonNotRunning(f"no modelctl daemon is running in {settings.runtime_dir}") \
            from None
    if timeout is None:
        grace = status.shutdown_grace_s
        if not isinstance(grace, (int, float)) or not 0 < grace <= MAX_TIMEOUT_S:
            grace = Timeouts().shutdown_grace_s  # a daemon from before it said
        timeout = grace + STOP_MARGIN_S
    deadline = time.monotonic() + timeout
    while lock_is_held(settings):
        if time.monotonic() > deadline:
            raise DaemonError(f"the daemon (pid {status.pid}) did not stop within "
                              f"{timeout:.0f}s; `kill -9 {status.pid}` ends it at once")
        time.sleep(0.02)
    return status.pid


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _last_lines(settings: Settings, since: int) -> str:
    """What the failed start wrote to the log, or why there is nothing to show."""
    if _size(settings.log_path) <= since:
        return (f"it wrote nothing to {settings.log_path}; `modelctl serve` runs it in the "
                "foreground, where the failure shows")
    return f"last lines of {settings.log_path}:\n{tail_log(settings, 10)}"


def tail_log(settings: Settings, lines: int) -> str:
    try:
        with open(settings.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
    except FileNotFoundError:
        return ""
