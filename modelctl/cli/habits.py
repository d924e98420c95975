"""Command lines typed from other tools' habits, checked before Typer parses them.

An unknown command gets the closest commands, never one that does the opposite
(``unlod`` is not offered ``load``), or, for another tool's verb (``ollama run``,
``docker rm``), modelctl's way to do it. A global option given after the command gets
told where it goes. Both read the generated command tree, so no typer is imported.
"""

from __future__ import annotations

from modelctl.cli import global_options
from modelctl.errors import UsageError

# Commands that add or take away; a typo of one is never offered the other kind.
_ADDING = {"load", "pin", "start", "serve", "pull"}
_REMOVING = {"eject", "unload", "stop", "unpin"}
_OPPOSITE = {"eject": {"load"}, "unload": {"load"}, "stop": {"start", "load"},
             "unpin": {"pin"}}
_REMOVING_MARKS = ("un", "rm", "de", "dis", "kill", "stop", "eject", "evict", "drop",
                   "remov", "close", "off", "free")

# Other tools' verbs (ollama, lms, docker, openai) that modelctl spells otherwise.
FOREIGN: dict[str, str] = {
    "run": "`modelctl load NAME` loads a model and `modelctl embed NAME TEXT` embeds with "
           "it (modelctl serves embedding models: there is no chat)",
    "rm": "`modelctl eject NAME` frees a loaded model (its weights stay on disk)",
    "rmi": "`modelctl eject NAME` frees a loaded model (its weights stay on disk)",
    "remove": "`modelctl eject NAME` frees a loaded model",
    "delete": "`modelctl eject NAME` frees a loaded model",
    "kill": "`modelctl eject NAME` frees a model; `modelctl daemon stop` stops the daemon",
    "list": "`modelctl ls` lists the loaded models, `modelctl models` the known names",
    "show": "`modelctl ls` shows the loaded models, `modelctl models` the known names",
    "inspect": "`modelctl ls --json` shows every field of the loaded models",
    "info": "`modelctl ls --json` shows every field of the loaded models",
    "search": "`modelctl models` lists the names modelctl knows",
    "get": "`modelctl pull NAME` downloads a model's weights",
    "download": "`modelctl pull NAME` downloads a model's weights",
    "fetch": "`modelctl pull NAME` downloads a model's weights",
    "start": "`modelctl daemon start` starts the daemon; `modelctl load NAME` loads a model",
    "status": "`modelctl daemon status` shows the daemon",
    "logs": "`modelctl daemon logs` shows the daemon's log",
    "restart": "`modelctl daemon stop`, then `modelctl daemon start`",
    "version": "`modelctl --version` prints the version",
    "help": "`modelctl --help` lists the commands",
    "server": "`modelctl serve --http PORT` serves the HTTP API",
}


class HabitError(UsageError):
    """Raised for a command line that cannot be what was meant (exit 2)."""


def check(args: list[str]) -> None:
    """Raise ``HabitError`` for an unknown command or a global option after the command."""
    from modelctl.cli.completion.tree import TREE

    path: list[str] = []
    i = 0
    while i < len(args) and not args[i].startswith("-"):
        node = TREE[" ".join(path)]
        word = args[i]
        if not node["commands"]:
            break  # a command's arguments from here on
        if word not in node["commands"]:
            raise HabitError(_unknown(word, path, list(node["commands"])))
        path.append(word)
        i += 1
    options = {name for names, _, _ in TREE[" ".join(path)]["options"] for name in names}
    for arg in args[i:]:
        if arg == "--":
            break
        flag = arg.partition("=")[0]
        if path and flag in global_options.OPTIONS and flag not in options:
            metavar = global_options.OPTIONS[flag][1]
            raise HabitError(f"{flag} is a global option: it goes before the command "
                             f"(`modelctl {flag} {metavar} {' '.join(path)} ...`)")


def _unknown(word: str, path: list[str], commands: list[str]) -> str:
    where = " ".join(["modelctl", *path])
    message = f"no such command {word!r}"
    advice = FOREIGN.get(word.lower()) if not path else None
    found = [] if advice else suggestions(word, commands)
    if advice:
        message += f"; {advice}"
    elif found:
        message += "; did you mean " + " or ".join(f"'{c}'" for c in found) + "?"
    return f"{message} (`{where} --help` lists the commands)"


def suggestions(word: str, commands: list[str]) -> list[str]:
    """The commands closest to ``word``, without those that do the reverse of it."""
    from modelctl.suggest import close_names

    found = close_names(word, commands)
    lowered = word.lower()
    if lowered.startswith(_REMOVING_MARKS):
        return [c for c in found if c not in _ADDING]
    # A typo of "pin" is close to "unpin" too: keep only the adding one of such a pair.
    return [c for c in found if not (c in _REMOVING and _OPPOSITE.get(c, set()) & set(found))]
