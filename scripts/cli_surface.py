"""The CLI's public surface, read from its own ``--help`` output.

The completion tree (``modelctl/cli/completion/tree.py``) and the man page
(``man/modelctl.1``) are generated from what ``modelctl CMD --help`` prints for every
command, so they list exactly what a person sees, and nothing here reaches into Typer's
or click's internals. Only the generators (``gen-completions``, ``gen-man``) import it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from modelctl.cli import global_options

# Typer wraps help at min(terminal width, 80): pin it, so generated files do not drift.
_ENV = {"COLUMNS": "200", "NO_COLOR": "1"}

_SECTION = re.compile(r"^([A-Z][A-Za-z ]*):$")
_ENTRY = re.compile(r"^  (\S.*?)(?: {2,}(.*))?$")
_TYPE = re.compile(r"\s<([^>]*)>$")


@dataclass
class Option:
    """One option as help shows it: ``-d, --device DEVICE`` or ``--normalize / --no-normalize``."""

    names: tuple[str, ...]
    metavar: str | None  # None: a flag
    help: str


@dataclass
class Argument:
    metavar: str
    required: bool
    repeated: bool
    choices: tuple[str, ...]
    help: str


@dataclass
class Command:
    path: tuple[str, ...]
    usage: str
    description: str
    epilog: str = ""
    arguments: list[Argument] = field(default_factory=list)
    options: list[Option] = field(default_factory=list)
    commands: dict[str, Command] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return " ".join(self.path)

    @property
    def summary(self) -> str:
        """The description's first sentence, as a one-line summary."""
        first = self.description.split("\n\n")[0].replace("\n", " ")
        return re.split(r"(?<=\.)\s", first, maxsplit=1)[0].rstrip(".")

    def walk(self) -> list[Command]:
        """This command and every command below it, depth first."""
        found = [self]
        for child in self.commands.values():
            found.extend(child.walk())
        return found


def help_text(path: tuple[str, ...]) -> str:
    """What ``modelctl PATH --help`` prints (in-process, through Typer's test runner)."""
    from typer.testing import CliRunner

    from modelctl.cli.application import app

    result = CliRunner().invoke(app, [*path, "--help"], prog_name="modelctl", env=_ENV)
    if result.exit_code != 0:
        raise RuntimeError(f"modelctl {' '.join(path)} --help exited {result.exit_code}:\n"
                           f"{result.output}")
    return result.output


def parse_help(path: tuple[str, ...], text: str) -> Command:
    """Read one command's help: usage, description, then its Arguments/Options/Commands."""
    lines = text.splitlines()
    usage = lines[0].removeprefix("Usage: ").strip()
    sections: dict[str, list[str]] = {"": []}
    current = ""
    for line in lines[1:]:
        match = _SECTION.match(line)
        if match:
            current = match.group(1)
            sections[current] = []
        elif not line.strip() and current not in ("", "epilog") and sections[current]:
            current = "epilog"  # a blank line ends a definition list: the epilog follows
            sections[current] = []
        else:
            sections[current].append(line)
    description = _dedent(sections[""])
    command = Command(path, usage, description, epilog=_dedent(sections.get("epilog", [])))
    for term, text_ in _entries(sections.get("Options", [])):
        command.options.append(_option(term, text_))
    for term, text_ in _entries(sections.get("Arguments", [])):
        command.arguments.append(_argument(term, text_))
    for name, _ in _entries(sections.get("Commands", [])):
        command.commands[name] = Command((*path, name), "", "")
    return command


def read_surface(path: tuple[str, ...] = ()) -> Command:
    """The whole command tree below ``path``, each command read from its own help."""
    command = parse_help(path, help_text(path))
    for name in list(command.commands):
        command.commands[name] = read_surface((*path, name))
    return command


def _dedent(lines: list[str]) -> str:
    """The description paragraphs, without click's two-space indent."""
    text = "\n".join(line[2:] if line.startswith("  ") else line for line in lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def _entries(lines: list[str]) -> list[tuple[str, str]]:
    """(term, help) pairs of a definition list, help lines joined."""
    found: list[tuple[str, str]] = []
    for line in lines:
        if not line.strip():
            continue
        match = _ENTRY.match(line)
        if match:  # a term at two spaces' indent starts an entry
            found.append((match.group(1).strip(), (match.group(2) or "").strip()))
        elif found:  # deeper indent continues its help
            term, text = found[-1]
            # "Marqo-" / "compatible": textwrap broke the line at a word's hyphen
            joiner = "" if re.search(r"[A-Za-z]-$", text) else " "
            found[-1] = (term, f"{text}{joiner}{line.strip()}".strip())
    return found


def _option(term: str, text: str) -> Option:
    metavar = None
    match = _TYPE.search(term)
    if match:  # `--batch-size <int range>`: Typer shows the type where no metavar is set
        metavar = f"<{match.group(1)}>"
        term = term[:match.start()]
    names: list[str] = []
    for part in re.split(r",\s*|\s+/\s+", term):
        flag, _, rest = part.strip().partition(" ")
        names.append(flag)
        if rest:
            metavar = rest.strip()
    return Option(tuple(names), metavar, text)


def _argument(term: str, text: str) -> Argument:
    choices: tuple[str, ...] = ()
    kind = ""
    match = _TYPE.search(term)
    if match:  # Typer's type: <str>, <list[str]>, <bash|zsh|fish>
        kind = match.group(1)
        if "|" in kind:
            choices = tuple(kind.removeprefix("list[").removesuffix("]").split("|"))
        term = term[:match.start()]
    repeated = term.endswith("...") or kind.startswith("list[")
    metavar = term.removesuffix("...").strip("[]{}")
    required = "[required]" in text
    text = re.sub(r"\s*\[required\]", "", text).strip()
    return Argument(metavar, required, repeated, choices, text)


# -- the completion spec -------------------------------------------------------------------
def completion_tree(root: Command) -> dict[str, dict[str, Any]]:
    """What the completion engine needs, keyed by command path (``""``, ``"daemon start"``).

    Global options join the root's options: ``main()`` takes them off the line before
    Typer sees it, so the root help lists them in its description, not under Options.
    """
    tree: dict[str, dict[str, Any]] = {}
    for command in root.walk():
        options: list[list[Any]] = [[list(o.names), o.metavar, o.help] for o in command.options]
        if not command.path:
            options[:0] = [[[flag], metavar, text[:1].upper() + text[1:] + "."]
                           for flag, (_, metavar, text) in global_options.OPTIONS.items()]
        tree[command.name] = {
            "summary": command.summary,
            "commands": {name: child.summary for name, child in command.commands.items()},
            "arguments": [[a.metavar, a.repeated, list(a.choices)] for a in command.arguments],
            "options": options,
        }
    return tree


def tree_source(root: Command) -> str:
    """The text of ``modelctl/cli/completion/tree.py``."""
    return (
        '"""The command tree, for shell completion (generated: do not edit).\n\n'
        "Written by ``scripts/gen-completions`` from every command's ``--help``\n"
        "(``scripts/cli_surface.py``), so that completion never imports typer (responder.py).\n"
        '"""\n'
        "# ruff: noqa: E501\n\n"
        "from __future__ import annotations\n\n"
        "from typing import Any\n\n"
        f"TREE: dict[str, dict[str, Any]] = {_literal(completion_tree(root), 0)}\n"
    )


def _literal(value: Any, depth: int) -> str:
    """``value`` as Python source: dicts one key a line, lists of scalars on one line."""
    pad = "    " * (depth + 1)
    if isinstance(value, dict) and value:
        items = "".join(f"{pad}{k!r}: {_literal(v, depth + 1)},\n" for k, v in value.items())
        return "{\n" + items + "    " * depth + "}"
    if isinstance(value, list) and not _flat(value):
        items = "".join(f"{pad}{_literal(v, depth + 1)},\n" for v in value)
        return "[\n" + items + "    " * depth + "]"
    return repr(value)


def _flat(items: list[Any]) -> bool:
    """Whether a list holds only scalars and lists of scalars (written on one line)."""
    return all(not isinstance(v, (dict, list)) or
               (isinstance(v, list) and not any(isinstance(w, (dict, list)) for w in v))
               for v in items)
