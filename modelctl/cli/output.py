"""The one place that prints: rich tables on stdout, or the JSON document with ``--json``.

With ``--json``, stdout carries only the JSON document; hints, warnings, spinners and
progress bars go to stderr. Rich is imported inside the functions that draw, so
``modelctl ls --json`` and shell completion never pay for it. Rich honours ``NO_COLOR``
and ``FORCE_COLOR`` itself; tests pass ``make_console(file=StringIO(), width=...)`` to
``use_console`` and compare text.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

from modelctl.units import parse_iso

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Table
    from rich.text import Text

# A table printed into a pipe is not cut at 80 columns: `modelctl ls | grep` sees whole rows.
_PIPE_WIDTH = 512

_consoles: dict[str, Console] = {}

# Spaces at the end of a line, before any closing escape codes.
_TRAILING_SPACES = re.compile(r" +((?:\x1b\[[0-9;]*m)*)$", re.MULTILINE)


def make_console(*, file: IO[str] | None = None, width: int | None = None,
                 stderr: bool = False) -> Console:
    """A rich Console on ``file`` (default stdout, or stderr), wide when it is not a terminal."""
    from rich.console import Console

    stream = file if file is not None else (sys.stderr if stderr else sys.stdout)
    if width is None and not _isatty(stream):
        width = _PIPE_WIDTH
    return Console(file=stream, width=width, highlight=False, soft_wrap=False,
                   stderr=stderr and file is None)


def use_console(console: Console | None, *, stderr: bool = False) -> None:
    """Send later output to ``console`` (tests); ``None`` goes back to the default."""
    key = "err" if stderr else "out"
    if console is None:
        _consoles.pop(key, None)
    else:
        _consoles[key] = console


def console(*, stderr: bool = False) -> Console:
    """The console ``use_console`` set, else one on the current stdout (or stderr)."""
    chosen = _consoles.get("err" if stderr else "out")
    return chosen if chosen is not None else make_console(stderr=stderr)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def stderr_is_tty() -> bool:
    return _isatty(sys.stderr)


# -- what a terminal must not interpret ----------------------------------------------------
def printable(text: str, keep: str = "") -> str:
    """``text`` with every control and format character (escape sequences, OSC 52
    clipboard writes, carriage returns, bidi overrides, zero-width characters) written
    as a visible escape like ``\\x1b``, except those in ``keep``.

    Model names, paths and messages come from whoever talks to the daemon: printed raw,
    they could clear the screen, write the clipboard or forge log lines.
    """
    if text.isascii() and text.isprintable():
        return text
    import unicodedata

    out = []
    for char in text:
        if char in keep or (char.isprintable() and unicodedata.category(char)[0] != "C"):
            out.append(char)
        else:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
                       if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def printable_lines(text: str) -> str:
    """``printable`` line by line: lines and tabs stay, everything else is escaped."""
    return printable(text, keep="\n\t")


# -- plain text ------------------------------------------------------------------------
def print_json(data: Any, indent: int | None = 2) -> None:
    """The JSON document, alone on stdout."""
    sys.stdout.write(json.dumps(data, indent=indent) + "\n")
    sys.stdout.flush()


def say(message: str) -> None:
    """One line of result on stdout (``ejected X from cpu, freed 85.8 MiB``)."""
    sys.stdout.write(printable_lines(message) + "\n")
    sys.stdout.flush()


def hint(message: str) -> None:
    """One line for the person on stderr: never part of the data on stdout."""
    sys.stderr.write(printable_lines(message) + "\n")
    sys.stderr.flush()


def warn(message: str) -> None:
    hint(f"modelctl: warning: {message}")


# -- rich ------------------------------------------------------------------------------
Column = tuple[str, str]  # (header, justify: "left" | "right")


def terminal_width() -> int | None:
    """The width tables must fit: the terminal's (or a test console's); ``None`` in a pipe."""
    width = console().width
    return None if width >= _PIPE_WIDTH else width


def fit(columns: Sequence[Column], rows: Sequence[Sequence[Any]], width: int,
        drop: Sequence[str] = (), shrink: str = "NAME",
        ) -> tuple[list[Column], list[list[Any]]]:
    """The columns and rows of a table cut to ``width`` terminal cells.

    Columns named in ``drop`` go first, in that order, until the rest fits; then the
    ``shrink`` column's values are cut in the middle with "…" (a hub name's last part is
    the one that tells models apart). Headers are never cut.
    """
    from rich.cells import cell_len

    def cells(value: Any) -> int:
        return int(value.cell_len) if hasattr(value, "cell_len") else cell_len(str(value))

    widths = [max([len(header), *(cells(row[i]) for row in rows)])
              for i, (header, _) in enumerate(columns)]
    kept = list(range(len(columns)))

    def total() -> int:
        return sum(widths[i] for i in kept) + 2 * (len(kept) - 1)

    names = [header for header, _ in columns]
    for header in drop:
        if total() <= width:
            break
        if header in names and names.index(header) in kept:
            kept.remove(names.index(header))
    new_rows = [[row[i] for i in kept] for row in rows]
    new_columns = [columns[i] for i in kept]
    if total() > width and shrink in names and names.index(shrink) in kept:
        at = kept.index(names.index(shrink))
        room = max(len(shrink), 8, widths[names.index(shrink)] - (total() - width))
        for row in new_rows:
            if isinstance(row[at], str):
                row[at] = cut_middle(row[at], room)
    return new_columns, new_rows


def cut_middle(text: str, width: int) -> str:
    """``text`` in at most ``width`` cells: its start, "…", and a longer end."""
    if len(text) <= width:
        return text
    tail = (width - 1) * 2 // 3
    return text[:width - 1 - tail] + "…" + text[len(text) - tail:]


def make_table(columns: Sequence[Column], rows: Sequence[Sequence[Any]], *,
               title: str | None = None, caption: str | None = None,
               show_header: bool = True, drop: Sequence[str] | None = None,
               shrink: str = "NAME") -> Table:
    """A borderless table (like ``docker ps``): easy to read, easy to grep.

    With ``drop`` (the columns to give up first), a table wider than the terminal is cut
    to fit it (``fit``); in a pipe every column is kept whole. Text cells are shown as
    they are: never read as rich markup (a model named ``[link=...]`` stays those
    characters), control characters escaped.
    """
    from rich.table import Table
    from rich.text import Text

    width = terminal_width() if drop is not None else None
    if width is not None:
        columns, rows = fit(columns, rows, width, drop or (), shrink)

    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold",
                  show_header=show_header,
                  title=title, title_justify="left", title_style="bold",
                  caption=caption, caption_justify="left", caption_style="dim")
    for header, justify in columns:
        table.add_column(header, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*(Text(printable(cell)) if isinstance(cell, str) else cell
                        for cell in row))
    return table


def print_table(columns: Sequence[Column], rows: Sequence[Sequence[Any]], *,
                title: str | None = None, caption: str | None = None,
                show_header: bool = True, drop: Sequence[str] | None = None,
                shrink: str = "NAME") -> None:
    show(make_table(columns, rows, title=title, caption=caption, show_header=show_header,
                    drop=drop, shrink=shrink))


def show(renderable: RenderableType) -> None:
    """Print ``renderable`` on stdout, unpadded, never squeezed by rich.

    Tables are cut to the terminal by ``make_table(drop=...)``, which chooses what to
    give up; whatever is still wider is printed whole and left to the terminal to wrap,
    rather than have rich break headers mid-word and elide numbers.
    """
    from rich.measure import Measurement

    out = console()
    natural = Measurement.get(out, out.options.update_width(_PIPE_WIDTH), renderable).maximum
    width = out.width
    out.width = max(width, natural)
    try:
        with out.capture() as captured:
            out.print(renderable)
    finally:
        out.width = width
    text = _TRAILING_SPACES.sub(r"\1", captured.get())
    out.file.write(text)
    out.file.flush()


def usage_bar(used: int | None, total: int | None, width: int = 20) -> Text:
    """``████████░░░░  41%``, green below 70 %, yellow below 90 %, red above."""
    from rich.text import Text

    if not used or not total:
        return Text("-" if total is None else "░" * width + "   0%", style="dim")
    frac = min(max(used / total, 0.0), 1.0)
    filled = round(frac * width)
    style = "green" if frac < 0.7 else "yellow" if frac < 0.9 else "red"
    text = Text("█" * filled, style=style)
    text.append("░" * (width - filled), style="dim")
    text.append(f" {frac * 100:3.0f}%")
    return text


@contextmanager
def activity(message: str) -> Iterator[None]:
    """A spinner on stderr while the block runs, when stderr is a terminal."""
    if not stderr_is_tty():
        yield
        return
    from rich.text import Text

    with console(stderr=True).status(Text(printable(message))):  # a name: never markup
        yield


# -- times -----------------------------------------------------------------------------
def _short(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _when(iso: str | None) -> datetime | None:
    if not iso:
        return None
    try:
        return parse_iso(iso)
    except ValueError:
        return None


def ago(iso: str | None, now: datetime | None = None) -> str:
    """``"3m ago"`` for an ISO time in the past; ``"-"`` when there is none."""
    when = _when(iso)
    if when is None:
        return "-"
    now = now or datetime.now(UTC)
    return f"{_short((now - when).total_seconds())} ago"


def until(iso: str | None, now: datetime | None = None) -> str:
    """``"in 4m"`` for an ISO time in the future; ``"never"`` when there is none."""
    when = _when(iso)
    if when is None:
        return "never"
    now = now or datetime.now(UTC)
    left = (when - now).total_seconds()
    return f"in {_short(left)}" if left >= 1 else "now"
