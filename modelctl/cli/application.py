"""The Typer app: the root callback and every command, registered in one place.

Imported by ``main()`` only when a command runs; a shell's completion request is answered
without it (completion/responder.py), since Typer and its command modules are most of the
CLI's start-up time.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from modelctl import __version__
from modelctl.cli import cluster, daemon, devices, embed, global_options, models, pull
from modelctl.cli.completion import shell_scripts
from modelctl.cli.global_options import GlobalOptions
from modelctl.cli.params import help_without_command
from modelctl.cli.state import State, build_settings

__all__ = ["ROOT_EPILOG", "app", "help_defaults", "make_app"]


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"modelctl {__version__}\n")
        raise typer.Exit()


ROOT_HELP = ("Load models once, share them with every process, see what they cost, "
             "free them.\n\n" + global_options.help_text())

ROOT_EPILOG = ("Exit status: 0 success, 1 error, 2 usage error, 3 no daemon reachable. "
               "`modelctl COMMAND --help` describes a command; `man modelctl` describes "
               "them all, with the environment variables and files.")


def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    help_without_command(ctx)
    given = ctx.obj if isinstance(ctx.obj, GlobalOptions) else GlobalOptions()
    settings = build_settings(**given.as_overrides())
    if settings.url:
        from modelctl.client import Client

        try:
            Client(settings.url)
        except ValueError as exc:
            raise typer.BadParameter(f"{exc}; give http://HOST:PORT",
                                     param_hint="--url") from exc
    ctx.obj = State(settings)


def make_app() -> typer.Typer:
    """The ``modelctl`` app.

    Typer's own completion (``--install-completion``) is left out: it imports pydantic on
    every <TAB> and its bash script splits names at ``:``; ``modelctl completion`` installs
    ours.
    """
    new = typer.Typer(
        name="modelctl",
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
        # Plain help: rich's help rendering imports markdown-it, doubling `--help`'s time.
        rich_markup_mode=None,
    )
    new.callback(help=ROOT_HELP, epilog=ROOT_EPILOG, invoke_without_command=True)(_root)
    new.command("ls")(models.ls)
    new.command("ps", help="Alias of ls.")(models.ls)
    new.command("load")(models.load)
    new.command("pull")(pull.pull)
    new.command("eject")(models.eject)
    new.command("stop", help="Alias of eject (as in ollama stop).")(models.eject)
    new.command("unload", help="Alias of eject (as in lms unload).")(models.eject)
    new.command("pin")(models.pin)
    new.command("unpin")(models.unpin)
    new.command("embed")(embed.embed)
    new.command("models")(models.models)
    new.command("devices")(devices.devices)
    new.command("top")(devices.top)
    new.command("serve")(daemon.serve)
    new.add_typer(daemon.app, name="daemon")
    new.add_typer(shell_scripts.app, name="completion")
    new.add_typer(cluster.app, name="cluster")
    return new


app = make_app()


def help_defaults(typer_app: typer.Typer) -> dict[str, Any]:
    """``{"help": False}`` for every command, nested as click's ``default_map`` nests.

    Typer checks a parameter's value with pydantic unless it is a bool, and ``--help``
    has no default of its own: without this every command would import pydantic (~40 ms).
    """
    tree: dict[str, Any] = {"help": False}
    for command in typer_app.registered_commands:
        if command.name:
            tree[command.name] = {"help": False}
    for group in typer_app.registered_groups:
        if group.name and group.typer_instance is not None:
            tree[group.name] = help_defaults(group.typer_instance)
    return tree
