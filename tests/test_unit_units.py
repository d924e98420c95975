"""Sizes and durations as flags, environment variables and tables read them: ``modelctl.units``."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from modelctl.units import (
    MAX_KEEP_ALIVE_S,
    format_bytes,
    format_duration,
    iso_from_timestamp,
    parse_duration,
    parse_iso,
    parse_keep_alive,
    parse_size,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("4GiB", 4 * 2**30), ("512MB", 512 * 10**6), ("1.5GB", 1_500_000_000),
    ("  2 kib ", 2048), ("100", 100), ("100b", 100), ("1T", 10**12), (".5k", 500), (7, 7),
])
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


def test_parse_size_default_unit_applies_to_bare_numbers_only() -> None:
    assert parse_size("4", default_unit="gb") == 4 * 10**9  # Marqo's GB knobs
    assert parse_size("4MiB", default_unit="gb") == 4 * 2**20


@pytest.mark.parametrize("text", ["", "GB", "-1GB", "4 GiBs", "4XB", "1e9", "4 4"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("10m", 600.0), ("1h30m", 5400.0), ("30s", 30.0), ("500ms", 0.5), ("1.5s", 1.5),
    ("2d", 172800.0), ("0", 0.0), ("90", 90.0), (" 10M ", 600.0), (45, 45.0), (2.5, 2.5),
    ("-1", None), (-1, None), ("never", None), ("inf", None),
])
def test_parse_duration(text: str | float, expected: float | None) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "10x", "m10", "10m junk", "1h 30m", "ten"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_keep_alive_is_bounded() -> None:
    assert parse_keep_alive("10m") == 600.0 and parse_keep_alive("never") is None
    assert parse_keep_alive(MAX_KEEP_ALIVE_S) == MAX_KEEP_ALIVE_S
    for bad in ("nan", "1e300", MAX_KEEP_ALIVE_S + 1, math.nan):
        with pytest.raises(ValueError, match="100 years"):
            parse_keep_alive(bad)


@pytest.mark.parametrize(("n", "text"), [
    (None, "-"), (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (90_000_000, "85.8 MiB"),
    (4 * 2**30, "4.0 GiB"), (3 * 2**50, "3072.0 TiB"), (-2048, "-2.0 KiB"),
])
def test_format_bytes(n: int | None, text: str) -> None:
    assert format_bytes(n) == text


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "never"), (0, "0s"), (-5, "0s"), (59.6, "1m"), (75, "1m15s"), (3600, "1h"),
    (3660, "1h01m"), (47 * 3600, "47h"), (48 * 3600, "2d"), (30 * 86400, "30d"),
])
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_duration_reads_back() -> None:
    for seconds in (5, 75, 600, 3660, 7200):
        text = format_duration(seconds)
        assert parse_duration(text) == seconds, text


def test_iso_times() -> None:
    assert iso_from_timestamp(None) is None
    assert iso_from_timestamp(0) == "1970-01-01T00:00:00.000Z"
    text = iso_from_timestamp(1_700_000_000.1234)
    assert text == "2023-11-14T22:13:20.123Z"
    assert parse_iso(text) == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
