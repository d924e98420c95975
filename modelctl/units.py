"""Parsing and formatting of byte sizes and durations, shared by the CLI and the daemon.

JSON always carries integer bytes and float seconds; these helpers exist for flags,
environment variables and what a person reads in a table.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
    "t": 10**12, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")
_DURATION_RE = re.compile(r"([0-9]*\.?[0-9]+)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_size(text: str | int, default_unit: str = "") -> int:
    """``"4GiB"`` -> 4294967296, ``"512MB"`` -> 512000000; a bare number is in ``default_unit``."""
    if isinstance(text, int):
        return text
    match = _SIZE_RE.match(str(text))
    if not match:
        raise ValueError(f"not a size: {text!r} (try 4GiB, 512MB or a number of bytes)")
    number, unit = match.groups()
    unit = (unit or default_unit).lower()
    if unit not in _SIZE_UNITS:
        raise ValueError(f"unknown size unit {unit!r} in {text!r} "
                         "(use B, KB, MB, GB, KiB, MiB, GiB)")
    return int(float(number) * _SIZE_UNITS[unit])


def parse_duration(text: str | float | int) -> float | None:
    """Seconds for ``"10m"``, ``"1h30m"``, ``"30s"``, ``"0"``; ``None`` (never) if negative."""
    if isinstance(text, (int, float)):
        value = float(text)
        return None if value < 0 else value
    raw = str(text).strip().lower()
    if raw in ("never", "inf", "infinite"):
        return None
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        return None if value < 0 else value
    pos, total = 0, 0.0
    for match in _DURATION_RE.finditer(raw):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(raw) or not raw:
        raise ValueError(f"not a duration: {text!r} (try 30s, 10m, 1h, 0, or -1 for never)")
    return total


MAX_KEEP_ALIVE_S = 100 * 365 * 86400.0


def parse_keep_alive(text: str | float | int) -> float | None:
    """``parse_duration`` bounded for a keep-alive: seconds, or ``None`` for never.

    NaN, infinity or 1e300 would be stored on a cache entry and break every later
    expiry time, so they are refused here rather than where they are used.
    """
    seconds = parse_duration(text)
    if seconds is not None and not 0 <= seconds <= MAX_KEEP_ALIVE_S:
        raise ValueError(f"{text!r} is not a duration of at most 100 years "
                         "(-1 or \"never\" means never expire)")
    return seconds


def format_bytes(n: int | None) -> str:
    """Human size in binary units: ``format_bytes(90_000_000)`` -> ``"85.8 MiB"``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float | None) -> str:
    """``75`` -> ``"1m15s"``; ``None`` -> ``"never"``."""
    if seconds is None:
        return "never"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s" if sec else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    return f"{hours // 24}d"


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso_from_timestamp(ts: float | None) -> str | None:
    if ts is None:
        return None
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")
