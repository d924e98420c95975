"""The global options (``modelctl --socket PATH ls``), taken off the line before Typer parses it.

Typer 0.29 checks every option that is not a plain flag with a pydantic ``TypeAdapter``,
and importing pydantic costs about 40 ms, more than all the rest of ``modelctl ls --json``.
As options of the root callback they would be checked on every command. So ``main()``
takes them off the front of the line here; the root help, the man page and shell
completion list them from the same table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelctl.errors import GlobalOptionError


class GlobalOptions:
    """The global options a command line gave (``None``: not given)."""

    # A plain class, not a dataclass: this module is on every command's import path.
    def __init__(self, socket: Path | None = None, url: str | None = None,
                 api_key: str | None = None, runtime_dir: Path | None = None) -> None:
        self.socket = socket
        self.url = url
        self.api_key = api_key
        self.runtime_dir = runtime_dir

    def as_overrides(self) -> dict[str, Any]:
        return {"socket": self.socket, "url": self.url, "api_key": self.api_key,
                "runtime_dir": self.runtime_dir}


# flag: (GlobalOptions field, metavar, help)
OPTIONS: dict[str, tuple[str, str, str]] = {
    "--socket": ("socket", "PATH", "the daemon's Unix socket (env MODELCTL_SOCKET)"),
    "--url": ("url", "URL", "talk HTTP to a `modelctl serve --http` there instead "
                            "(env MODELCTL_URL)"),
    "--api-key": ("api_key", "KEY", "API key for --url (env MODELCTL_API_KEY)"),
    "--runtime-dir": ("runtime_dir", "DIR", "where the daemon keeps its socket, lock "
                                            "and log (env MODELCTL_RUNTIME_DIR)"),
}

_PATHS = {"socket", "runtime_dir"}


def split(args: list[str]) -> tuple[GlobalOptions, list[str]]:
    """Take the global options off ``args`` up to the command's name; return the rest.

    Options after the command's name belong to the command (``serve --api-key`` is the
    server's key), so the scan stops at the first word that is not an option.
    """
    values: dict[str, Any] = {}
    kept: list[str] = []
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "--":
        flag, eq, value = args[i].partition("=")
        if flag not in OPTIONS:  # --help, --version: Typer's
            kept.append(args[i])
            i += 1
            continue
        field, metavar, _ = OPTIONS[flag]
        if not eq:
            if i + 1 >= len(args):
                raise GlobalOptionError(f"option {flag} needs a value ({metavar})")
            value = args[i + 1]
            i += 1
        i += 1
        values[field] = Path(value).expanduser() if field in _PATHS else value
    return GlobalOptions(**values), kept + args[i:]


def help_text() -> str:
    """The root help's paragraph on global options (``\\b``: keep these lines as they are)."""
    width = max(len(f"{flag} {metavar}") for flag, (_, metavar, _) in OPTIONS.items())
    lines = ["\b", "Global options (before the command):"]
    for flag, (_, metavar, text) in OPTIONS.items():
        lines.append(f"  {f'{flag} {metavar}':<{width}}  {text}")
    return "\n".join(lines)
