"""What a person at a terminal sees: 80-column tables, warm-up notices, the daemon's own
memory, eject's freed figure explained, and a Python client that starts the daemon.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
from collections.abc import Iterator
from fcntl import ioctl
from pathlib import Path

import pytest

from modelctl.cli import output
from modelctl.cli.models import ENTRY_COLUMNS, ENTRY_DROP, freed_note
from modelctl.client import Client
from modelctl.errors import DaemonNotRunning
from modelctl.testing import MINILM, Daemon, base_env

_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LONG = "a-rather-long-model-name-that-people-give/custom-tiny-clip-for-tests"


def in_terminal(d: Daemon, *args: str, columns: int = 80) -> str:
    """``modelctl ARGS`` on a pseudo-terminal ``columns`` wide; what it drew, plain."""
    primary, secondary = pty.openpty()
    ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {**d.env, "COLUMNS": str(columns), "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "modelctl", *args], env=env,
                            stdin=secondary, stdout=secondary, stderr=subprocess.DEVNULL)
    os.close(secondary)
    chunks = []
    while True:
        ready, _, _ = select.select([primary], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=60)
    os.close(primary)
    return _ESCAPES.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")


@pytest.fixture
def crowded(clean_daemon: Daemon, tiny_clip: dict) -> Daemon:
    """A model with a long name, pinned, with a keep-alive: every column has something."""
    clean_daemon.client.load_model(LONG, "cpu", properties=tiny_clip, pin=True)
    clean_daemon.client.load_model(MINILM, "cpu", keep_alive="10m")
    return clean_daemon


@pytest.mark.parametrize("args", [["ls"], ["ps"], ["devices"], ["models"], ["top", "--once"]])
def test_tables_fit_80_columns(crowded: Daemon, args: list[str]) -> None:
    screen = in_terminal(crowded, *args)
    lines = [line for line in screen.splitlines() if line.strip()]
    assert lines, screen
    assert max(len(line) for line in lines) <= 80, screen
    header = next(line for line in lines if line.split()[0] in ("NAME", "DEVICE"))
    # Every header word is one of the table's whole headers: none is broken mid-word.
    words = {"NAME", "DEVICE", "FAMILY", "DIM", "STATE", "SIZE", "LOADED", "LAST", "USED",
             "REQUESTS", "PIN", "EXPIRES", "MEMORY", "TOTAL", "MODELS", "BUDGET", "UTIL",
             "IN", "FLIGHT", "MODALITIES", "OFFLINE", "ALIASES"}
    assert set(header.split()) <= words, header
    if args[0] in ("ls", "ps"):
        row = next(line for line in lines if line.startswith("a-rather"))
        assert "…" in row and row.split()[0].endswith("tiny-clip-for-tests")


def test_ls_in_a_wide_terminal_or_a_pipe_keeps_every_column(crowded: Daemon) -> None:
    wide = in_terminal(crowded, "ls", columns=200)
    assert LONG in wide and "REQUESTS" in wide and "LOADED" in wide
    piped = crowded.cli("ls", env={"COLUMNS": "80"}).stdout
    assert LONG in piped and max(len(line) for line in piped.splitlines()) > 80


def test_fit_on_a_rich_console_of_80_columns() -> None:
    rows = [[LONG, "cuda:0", "torch/fp16", "open_clip", "512", "ready", "1.2 GiB", "3m ago",
             "1s ago", "12345", "pinned", "in 9m"]]
    buffer = io.StringIO()
    output.use_console(output.make_console(file=buffer, width=80))
    try:
        output.print_table(ENTRY_COLUMNS, rows, drop=ENTRY_DROP)
    finally:
        output.use_console(None)
    lines = buffer.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    assert lines[0].split()[:3] == ["NAME", "DEVICE", "VARIANT"] and "LOADED" not in lines[0]
    assert lines[1].startswith("a-rather") and "…" in lines[1]
    assert output.cut_middle("abcdefghij", 7) == "ab…ghij"
    assert output.cut_middle("short", 7) == "short"


def test_eject_explains_a_freed_figure_unlike_size() -> None:
    mib = 2**20
    assert freed_note(100 * mib, 98 * mib, "cpu") == ""  # close enough: nothing to say
    cpu = freed_note(100 * mib, 40 * mib, "cpu")
    assert "memory-mapped" in cpu and "not a leak" in cpu and "100.0 MiB" in cpu
    cuda = freed_note(100 * mib, 10 * mib, "cuda:0")
    assert "allocator keeps what it reserved" in cuda
    assert "more than its size" in freed_note(100 * mib, 150 * mib, "cpu")


def test_eject_line_through_the_cli(clean_daemon: Daemon) -> None:
    clean_daemon.client.load_model(MINILM, "cpu")
    size = clean_daemon.client.list_models()[0]["bytes"]
    result = clean_daemon.cli("stop", MINILM, "--json")  # ollama's verb
    assert result.returncode == 0, result.stderr
    [item] = json.loads(result.stdout)["ejected"]
    assert item["bytes"] == size
    clean_daemon.client.load_model(MINILM, "cpu")
    line = clean_daemon.cli("unload", MINILM, check=True).stdout.strip()  # lms's verb
    assert line.startswith(f"ejected {MINILM} from cpu, freed ")
    assert clean_daemon.client.list_models() == []


def test_daemon_memory_in_status_and_devices(daemon: Daemon) -> None:
    health = daemon.client.health()
    assert health["idle_rss_bytes"] > 50 * 2**20  # torch is in there
    assert health["rss_bytes"] >= health["idle_rss_bytes"] // 2
    status = daemon.cli("daemon", "status", check=True).stdout
    assert re.search(r"^memory\s+RSS [\d.]+ \w+ \([\d.]+ \w+ with no model loaded\)$",
                     status, re.MULTILINE), status
    devices = daemon.cli("devices", check=True).stdout
    assert "modelctl daemon: RSS " in devices
    cpu = json.loads(daemon.cli("devices", "--json", check=True).stdout)["cpu"]
    assert cpu["process_idle_rss"] == health["idle_rss_bytes"]


@pytest.fixture
def fresh_runtime() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mc-", dir="/tmp"))
    yield path
    Daemon(runtime_dir=path).stop()
    shutil.rmtree(path, ignore_errors=True)


def test_client_autostart_then_devices_while_torch_warms_up(fresh_runtime: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           ) -> None:
    """One fresh daemon for both: the Python client starts it, and `devices`, asked at
    once, says it waits for torch's import."""
    for key, value in base_env(fresh_runtime).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MODELCTL_SOCKET", raising=False)
    with pytest.raises(DaemonNotRunning):
        Client().list_models()  # the default: never starts anything
    assert not (fresh_runtime / "modelctl.sock").exists()
    client = Client(autostart=True)
    assert client.list_models() == []
    assert (fresh_runtime / "modelctl.sock").exists()

    d = Daemon(runtime_dir=fresh_runtime)
    warming = not d.client.health()["torch_ready"]
    result = d.cli("devices")
    assert result.returncode == 0, result.stderr
    if warming:  # torch takes seconds to import; the CLI asked well within them
        assert "the daemon is still importing torch; waiting for it" in result.stderr
    assert "cpu" in result.stdout
    assert "a request waits for torch to finish importing" in d.log() or not warming
    d.client.close()

    client.load_model("all-MiniLM-L6-v2", "cpu")
    assert len(client.embed("all-MiniLM-L6-v2", ["hello"])[0]) == 384
    pid = client.health()["pid"]
    assert Client(autostart=True).health()["pid"] == pid  # one daemon, not two
    client.close()  # the fixture stops the daemon
