"""Shell completion, answered without importing typer.

The scripts of shell_scripts.py call ``modelctl`` with ``_MODELCTL_COMPLETE`` set to the
shell's name and ``_MODELCTL_COMPLETE_LINE`` to the command line up to the cursor.
``main()`` hands such a request to ``respond()``, which prints one candidate per line,
``value<TAB>description`` (bash drops the description), and nothing else, ever; the exit
status is always 0. No candidates is an empty answer, never an error.

Why not Typer's own completion: Typer 0.29 checks every non-flag parameter of the
command being completed with pydantic, so each <TAB> imported pydantic (~40 ms) on top of
typer and every command module: ``eject <TAB>`` took 200 ms on a busy two-core machine.
Here the command tree is data generated from the app's own ``--help``
(tree.py, by ``scripts/gen-completions``; a test fails when it drifts), and
the values come from ``SOURCES`` below and sources.py.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from modelctl.cli import global_options
from modelctl.cli.completion.tree import TREE

LINE_VAR = "_MODELCTL_COMPLETE_LINE"

Candidate = tuple[str, str]

# What each option value or argument completes with, by (command, long flag or metavar):
# "loaded" the loaded models' names, "loaded_devices" the devices the NAME on the line is
# loaded on, "models" loaded + registry names and aliases, "devices" this machine's
# devices, "choices" the argument's choices, "precisions"/"engines" a variant's fields,
# "files"/"dirs" paths (the shell's own
# completion: the scripts read file_options()), "" free text (nothing to offer).
# A test checks that every option value and argument of the app is listed here.
SOURCES: dict[tuple[str, str], str] = {
    ("", "--socket"): "files",
    ("", "--url"): "",
    ("", "--api-key"): "",
    ("", "--runtime-dir"): "dirs",
    ("load", "NAME"): "models",
    ("load", "--device"): "devices",
    ("load", "--keep-alive"): "",
    ("load", "--properties"): "",
    ("load", "--precision"): "precisions",
    ("load", "--engine"): "engines",
    ("eject", "NAME"): "loaded",
    ("eject", "--device"): "loaded_devices",
    ("stop", "NAME"): "loaded",
    ("stop", "--device"): "loaded_devices",
    ("unload", "NAME"): "loaded",
    ("unload", "--device"): "loaded_devices",
    ("pull", "NAME"): "models",
    ("daemon close-listener", "PORT"): "",
    ("daemon close-listener", "--host"): "",
    ("pin", "NAME"): "loaded",
    ("pin", "--device"): "loaded_devices",
    ("unpin", "NAME"): "loaded",
    ("unpin", "--device"): "loaded_devices",
    ("embed", "NAME"): "models",
    ("embed", "TEXT"): "",
    ("embed", "--image"): "files",
    ("embed", "--device"): "devices",
    ("embed", "--output"): "files",
    ("embed", "--batch-size"): "",
    ("top", "--interval"): "",
    ("serve", "--preload"): "models",
    ("daemon logs", "--lines"): "",
    ("completion show", "SHELL"): "choices",
    ("completion install", "SHELL"): "choices",
}
# The server's settings, on both commands that start one: free text.
for _command in ("serve", "daemon start"):
    for _flag in ("--http", "--host", "--api-key", "--max-cpu-memory", "--max-cuda-memory",
                  "--keep-alive"):
        SOURCES[(_command, _flag)] = ""
    SOURCES[(_command, "--threads")] = ""
    SOURCES[(_command, "--precision")] = "precisions"
    SOURCES[(_command, "--engine")] = "engines"
# A variant narrows an eject, under each of its names.
for _command in ("eject", "stop", "unload"):
    SOURCES[(_command, "--precision")] = "precisions"
    SOURCES[(_command, "--engine")] = "engines"
# On a cluster (`modelctl cluster`): node names come from no daemon; free text.
SOURCES.update({("load", "--copies"): "", ("load", "--node"): "", ("eject", "--node"): "",
                ("stop", "--node"): "", ("unload", "--node"): ""})
for _command in ("cluster up", "cluster config"):
    for _flag in ("--address", "--http", "--host", "--proxy-location", "--api-key", "--gpus",
                  "--replicas-per-gpu", "--cpu-replicas", "--replica-cpus",
                  "--max-cpu-memory", "--max-cuda-memory", "--keep-alive"):
        SOURCES[(_command, _flag)] = ""
for _command in ("cluster status", "cluster down"):
    SOURCES[(_command, "--address")] = ""

_ENDS_LINE = ("-h", "--help", "--version")


@dataclass
class _Position:
    """Where the cursor is: which command, its arguments so far, an option awaiting a value."""

    path: str = ""
    args: list[str] = field(default_factory=list)
    global_words: list[str] = field(default_factory=list)
    pending: str | None = None  # the long flag whose value is being typed
    ended: bool = False  # after `--`: no more options
    dead: bool = False  # after --help, or an unknown command: nothing to offer


def respond(environ: Mapping[str, str] | None = None, out: IO[str] | None = None) -> None:
    """Answer one completion request (see the module's docstring); never raises."""
    env = os.environ if environ is None else environ
    try:
        found = candidates(env.get(LINE_VAR, ""), env)
        text = "".join(f"{value}\t{about}\n" if about else f"{value}\n"
                       for value, about in found
                       # a value with a newline or tab would break the line protocol
                       if value and not any(c in value + about for c in "\n\t"))
        stream = out or sys.stdout
        stream.write(text)
        stream.flush()
    except Exception:  # BrokenPipeError, a bad environment, a bug: no candidates, no noise
        pass


def candidates(line: str, environ: Mapping[str, str]) -> list[Candidate]:
    """The candidates for the last word of ``line`` (the whole line up to the cursor)."""
    words, incomplete = split_line(line)
    pos = _walk(words[1:])
    if pos.dead:
        return []
    node = TREE[pos.path]
    if pos.pending:
        return _values(pos, pos.pending, incomplete, environ)
    if incomplete.startswith("-") and not pos.ended:
        flag, eq, value = incomplete.partition("=")
        if eq:
            option = _option(node, flag)
            return _values(pos, option[0], value, environ) if option and option[1] else []
        return _options(node, incomplete)
    if node["commands"] and not pos.args:
        return [(name, text) for name, text in node["commands"].items()
                if name.startswith(incomplete)]
    arguments = node["arguments"]
    if not arguments:
        return []
    index = len(pos.args)
    if index >= len(arguments) and not arguments[-1][1]:  # all given, none repeats
        return []
    return _values(pos, arguments[min(index, len(arguments) - 1)][0], incomplete, environ)


def split_line(line: str) -> tuple[list[str], str]:
    """The words before the cursor, and the (unquoted) word being typed, ``""`` after a space."""
    words: list[str] | None = None
    for ending in ("", '"', "'"):  # an open quote is part of the word being typed
        try:
            words = shlex.split(line + ending)
            break
        except ValueError:
            continue
    if words is None:  # a lone trailing backslash
        words = shlex.split(line[:-1]) if line.endswith("\\") else []
    if not line or (line[-1].isspace() and not line.endswith("\\ ")):
        words.append("")
    if not words:
        return [], ""
    return words[:-1], words[-1]


def _option(node: dict[str, Any], flag: str) -> tuple[str, str | None] | None:
    """(long flag, metavar or ``None`` for a flag) of the option ``flag`` names, if any."""
    for names, metavar, _ in node["options"]:
        if flag in names:
            longs = [n for n in names if n.startswith("--")]
            return (longs[0] if longs else names[0]), metavar
    return None


def _options(node: dict[str, Any], incomplete: str) -> list[Candidate]:
    """Options starting with ``incomplete``: long ones, and a short one typed in full."""
    found = []
    for names, _, text in node["options"]:
        for name in names:
            if name.startswith(incomplete) and (name.startswith("--") or name == incomplete):
                found.append((name, text))
    return found


def _walk(words: list[str]) -> _Position:
    pos = _Position()
    for word in words:
        node = TREE[pos.path]
        if pos.pending:
            if not pos.path:
                pos.global_words.append(word)
            pos.pending = None
        elif word == "--" and not pos.ended:
            pos.ended = True
        elif word.startswith("-") and len(word) > 1 and not pos.ended:
            flag, eq, _ = word.partition("=")
            option = _option(node, flag)
            if flag in _ENDS_LINE:
                pos.dead = True
            elif option is not None and not pos.path:
                pos.global_words.append(word)
            if option is not None and option[1] and not eq:
                pos.pending = option[0]
        elif node["commands"] and not pos.args:
            if word not in node["commands"]:
                pos.dead = True
                break
            pos.path = f"{pos.path} {word}".strip()
        else:
            pos.args.append(word)
    return pos


def _values(pos: _Position, key: str, incomplete: str,
            environ: Mapping[str, str]) -> list[Candidate]:
    kind = SOURCES.get((pos.path, key), "")
    if kind in ("", "files", "dirs"):  # free text, or the shell's own path completion
        return []
    if kind == "choices":
        choices: list[str] = next(
            (a[2] for a in TREE[pos.path]["arguments"] if a[0] == key), [])
        found = [(str(c), "") for c in choices]
    elif kind in ("precisions", "engines"):
        from modelctl.config import ENGINES, PRECISIONS

        found = [(c, "") for c in (PRECISIONS if kind == "precisions" else ENGINES)]
    else:
        from modelctl.cli.completion import sources
        from modelctl.cli.state import build_settings

        given, _ = global_options.split(pos.global_words)
        settings = build_settings(**given.as_overrides(), environ=environ)
        if kind == "loaded":
            found = sources.loaded_names(settings)
        elif kind == "loaded_devices":
            found = sources.loaded_devices(settings, pos.args[0] if pos.args else None)
        elif kind == "models":
            found = sources.model_names(settings)
        else:
            found = sources.machine_devices(settings, environ)
    return [(value, text) for value, text in found if value.startswith(incomplete)]


def file_options() -> dict[str, list[str]]:
    """``{"files": [...], "dirs": [...]}``: every flag (short ones too) whose value is a path.

    The shell scripts complete these with the shell's own path completion. A flag is
    listed by name alone, whatever the command, so no flag may take a path in one
    command and something else in another (a test checks).
    """
    found: dict[str, list[str]] = {"files": [], "dirs": []}
    for path, node in TREE.items():
        for names, metavar, _ in node["options"]:
            longs = [n for n in names if n.startswith("--")]
            kind = SOURCES.get((path, longs[0] if longs else names[0]), "")
            if metavar and kind in found:
                found[kind].extend(n for n in names if n not in found[kind])
    return found
