"""The ``modelctl`` command line: a Typer app, and ``main()``, its one error boundary.

Importing this package must stay cheap (``modelctl ls --json`` costs about what importing
typer costs): command modules import only typer, the stdlib client and small modules;
rich is imported where something is drawn, numpy where a ``.npy`` is written, and the
daemon's stack only by ``serve``.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from modelctl import __version__
from modelctl.cli import completion, daemon, devices, embed, global_options, models
from modelctl.cli.global_options import GlobalOptions
from modelctl.cli.state import State, build_settings
from modelctl.errors import DaemonError, ModelctlError

__all__ = ["app", "main"]

# Exit codes: 0 ok, 1 an error, 2 a usage error (Typer's), 3 no daemon to talk to.
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3
COMPLETE_VAR = "_MODELCTL_COMPLETE"

def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"modelctl {__version__}\n")
        raise typer.Exit()


ROOT_HELP = ("Load models once, share them with every process, see what they cost, "
             "free them.\n\n" + global_options.help_text())


def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    given = ctx.obj if isinstance(ctx.obj, GlobalOptions) else GlobalOptions()
    settings = build_settings(**given.as_overrides())
    if settings.url:
        from modelctl.client import Client

        try:
            Client(settings.url)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--url") from exc
    ctx.obj = State(settings)


def make_app(*, add_completion: bool = False) -> typer.Typer:
    """The ``modelctl`` app.

    ``add_completion=True`` is for completion requests only: Typer registers its shell
    protocol (``_MODELCTL_COMPLETE=complete_fish``) only for an app built with it, and
    its own ``--install-completion`` script breaks names with ``:`` in bash, so the app
    people see leaves it out (``modelctl completion`` installs ours).
    """
    new = typer.Typer(
        name="modelctl",
        no_args_is_help=True,
        add_completion=add_completion,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
        # Plain help: rich's help rendering imports markdown-it, doubling `--help`'s time.
        rich_markup_mode=None,
    )
    new.callback(help=ROOT_HELP)(_root)
    new.command("ls")(models.ls)
    new.command("ps", hidden=True)(models.ls)
    new.command("load")(models.load)
    new.command("eject")(models.eject)
    new.command("pin")(models.pin)
    new.command("unpin")(models.unpin)
    new.command("embed")(embed.embed)
    new.command("models")(models.models)
    new.command("devices")(devices.devices)
    new.command("top")(devices.top)
    new.command("serve")(daemon.serve)
    new.add_typer(daemon.app, name="daemon")
    new.add_typer(completion.app, name="completion")
    return new


app = make_app()


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; the one place where errors become a message and an exit code.

    ``ModelctlError`` -> one line ``modelctl: error: ...`` on stderr, exit 1, or exit 3
    when no daemon can be reached. Anything else is a bug: one line too, and the
    traceback with ``MODELCTL_DEBUG=1``.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        given, args = global_options.split(args)
        target = app
        if os.environ.get(COMPLETE_VAR):
            # A completion request carries its line in Typer's protocol variable.
            line = os.environ.get("_TYPER_COMPLETE_ARGS", "")
            given, os.environ["_TYPER_COMPLETE_ARGS"] = global_options.from_completion_line(line)
            target = make_app(add_completion=True)
        target(args=args, prog_name="modelctl", obj=given, default_map=_help_defaults(target))
    except global_options.GlobalOptionError as exc:
        _fail(exc, f"{exc}; see `modelctl --help`", EXIT_USAGE)
    except DaemonError as exc:
        _fail(exc, exc.message, EXIT_NO_DAEMON)
    except ModelctlError as exc:
        _fail(exc, exc.message, EXIT_ERROR)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # stdout's: the client turns its own into DaemonNotRunning
        _quiet_stdout()
        sys.exit(EXIT_ERROR)
    except Exception as exc:
        if _unreachable(exc):
            _fail(exc, f"cannot talk to the modelctl daemon: {exc or type(exc).__name__}; "
                       "`modelctl daemon status` checks on it", EXIT_NO_DAEMON)
        _fail(exc, f"unexpected {type(exc).__name__}: {exc} (this is a bug in modelctl; "
                   "MODELCTL_DEBUG=1 shows the traceback)", EXIT_ERROR)


def _unreachable(exc: Exception) -> bool:
    """Whether ``exc`` is the network's: a timeout, a refused or reset connection, bad HTTP."""
    import http.client
    import socket

    return isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror,
                            http.client.HTTPException))


def _help_defaults(typer_app: typer.Typer) -> dict[str, Any]:
    """``{"help": False}`` for every command, nested as click's ``default_map`` nests.

    Typer checks a parameter's value with pydantic unless it is a bool, and ``--help``
    (like the completion options) has no default of its own: without this every command
    would import pydantic (~40 ms).
    """
    tree: dict[str, Any] = {"help": False, "install_completion": False,
                            "show_completion": False}
    for command in typer_app.registered_commands:
        if command.name:
            tree[command.name] = {"help": False}
    for group in typer_app.registered_groups:
        if group.name and group.typer_instance is not None:
            tree[group.name] = _help_defaults(group.typer_instance)
    return tree


def _fail(exc: BaseException, message: str, code: int) -> None:
    if _debug():
        import traceback

        traceback.print_exception(exc)
    try:
        sys.stderr.write(f"modelctl: error: {message}\n")
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    sys.exit(code)


def _debug() -> bool:
    try:
        return build_settings().debug
    except Exception:
        return False


def _quiet_stdout() -> None:
    """After a reader closed the pipe (``modelctl embed ... | head``), exit without noise."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
