"""What every command finds in ``ctx.obj``: the settings, and the ways to reach the daemon.

``client()`` never starts anything; ``started_client()`` starts a daemon when none runs
(only ``load`` and ``embed`` use it). With ``--url`` every call goes over HTTP to that
server, and nothing is ever started. No typer at run time: shell completion
(completion/responder.py) builds its settings here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelctl import __version__
from modelctl.cli.global_options import GlobalOptions
from modelctl.config import Settings
from modelctl.errors import DaemonNotRunning, DaemonUnreachable

if TYPE_CHECKING:
    import typer

    from modelctl.client import Client
    from modelctl.wire import Health


def build_settings(*, socket: Path | None = None, url: str | None = None,
                   api_key: str | None = None, runtime_dir: Path | None = None,
                   environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment, then the global flags (``None``: flag not given).

    Lenient: a bad value of a daemon's knob is the daemon's to reject (``daemon start``
    and ``serve`` check the environment strictly first), never a reason for ``ls`` to fail.
    """
    return Settings.from_env(environ, strict=False).with_overrides(
        runtime_dir=runtime_dir, socket_path=socket, url=url, api_key=api_key)


class State:
    """``ctx.obj`` of every command (a plain class: it is on every command's import path)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def client(self, timeout: float | None = 600.0) -> Client:
        """A client for the daemon on the socket (or ``--url``); connects on first use."""
        from modelctl.client import Client

        s = self.settings
        if s.url:
            return Client(s.url, api_key=s.api_key, timeout=timeout)
        return Client(socket_path=s.socket_path, timeout=timeout)

    def socket_client(self, timeout: float | None = 30.0) -> Client:
        """A client for this user's daemon on its socket, whatever ``--url`` says."""
        from modelctl.client import Client

        return Client(socket_path=self.settings.socket_path, timeout=timeout)

    def started_client(self, timeout: float | None = 600.0) -> Client:
        """A client for a daemon that runs: start one first if none answers the socket."""
        if not self.settings.url:
            self.ensure_daemon()
        return self.client(timeout)

    def ensure_daemon(self, settings: Settings | None = None) -> tuple[Health, bool]:
        """Start the daemon unless one answers; say so on stderr. Returns health, started."""
        from modelctl import runtime
        from modelctl.cli.output import activity, hint

        with activity("starting the modelctl daemon"):
            health, started = runtime.start_daemon(settings or self.settings)
        if started:
            hint(f"started modelctl daemon (pid {health.get('pid')})")
        check_version(health)
        return health, started

    def surely_no_daemon(self) -> bool:
        """No socket file: no daemon, known without importing the HTTP client."""
        return not self.settings.url and not self.settings.socket_path.exists()

    def no_daemon(self, exc: DaemonNotRunning, consequence: str = "") -> DaemonNotRunning:
        """``exc`` with what it means, or what to do next, for commands that start nothing.

        ``consequence`` (``"so nothing is loaded"``) replaces the advice to start a daemon,
        where starting one would not help.
        """
        if isinstance(exc, DaemonUnreachable):
            return exc  # a daemon runs: advice about starting one would mislead
        if self.settings.url:
            return DaemonNotRunning(f"{exc.message}; check the URL, and that "
                                    "`modelctl serve --http` runs there")
        if consequence:
            return DaemonNotRunning(f"{exc.message}, {consequence}")
        return DaemonNotRunning(f"{exc.message}; start one with `modelctl daemon start`")


def check_version(health: Health) -> None:
    """Say so when the daemon that answers is another version than this CLI."""
    version = health.get("version")
    if version and version != __version__:
        from modelctl.cli.output import warn

        warn(f"the running daemon is modelctl {version}, this CLI is {__version__}; "
             "restart it with `modelctl daemon stop` to use this version")


def get_state(ctx: typer.Context) -> State:
    """The root callback's ``State``; during completion, one built from the global options."""
    root = ctx.find_root()
    if isinstance(root.obj, State):
        return root.obj
    given = root.obj if isinstance(root.obj, GlobalOptions) else GlobalOptions()
    return State(build_settings(**given.as_overrides()))


def static_registry() -> list[dict[str, Any]] | None:
    """The registry shipped with modelctl, without asking a daemon.

    ``modelctl.registry`` is data read with the stdlib. Whether weights are on
    this machine is the daemon's to say, so ``available_offline`` is ``None`` here.
    """
    try:
        from modelctl.registry import list_registry
    except ImportError:
        return None
    return [{**entry, "available_offline": None} for entry in list_registry()]
