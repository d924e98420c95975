"""The cache against a real daemon: keep-alive, eject (one, all, concurrent) and memory
that really comes back to the OS.

The shared daemon, with its cpu budget from ``MODELCTL_MAX_CPU_MEMORY``.
"""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pytest

from modelctl.client import Client
from modelctl.errors import ModelNotInCache
from modelctl.testing import (
    MINILM,
    Daemon,
    counter,
    daemon_rss,
    embed_on_own_connection,
    make_tiny_clip,
    wide_clip_config,
)

LONG_BATCH = [f"request {i}: " + "a long sentence that keeps the model busy " * 12
              for i in range(64)]


@pytest.fixture
def d(clean_daemon: Daemon) -> Daemon:
    """The shared daemon (``MODELCTL_MAX_CPU_MEMORY=6GiB``: conftest.py), emptied."""
    return clean_daemon


@pytest.fixture(scope="module")
def wide_clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A random open_clip model of about 380 MB."""
    return make_tiny_clip(tmp_path_factory.mktemp("wide-clip"), arch="rss-wide",
                          config=wide_clip_config(768, 4))


def seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def wait_gone(d: Daemon, name: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while any(m["name"] == name for m in d.client.list_models()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} is still loaded after {timeout}s")
        time.sleep(0.05)


def test_budget_from_environment(d: Daemon) -> None:
    assert d.client.devices()["cpu"]["budget"] == 6 * 2**30


def test_keep_alive_expires_an_idle_model(d: Daemon, tiny_clip: dict[str, Any]) -> None:
    out = d.cli("load", "ka-clip", "--device", "cpu", "--keep-alive", "1s", "--properties",
                json.dumps(tiny_clip), "--json", check=True)
    entry = json.loads(out.stdout)
    assert entry["keep_alive"] == 1.0 and entry["pinned"] is False
    assert seconds(entry["expires_at"]) - seconds(entry["last_used_at"]) == pytest.approx(1.0)

    wait_gone(d, "ka-clip")
    assert counter(d, "modelctl_expirations", "ka-clip") == 1
    assert counter(d, "modelctl_ejects", "ka-clip") == 0
    assert "ka-clip on cpu idle past its keep-alive" in d.log()


def test_model_in_use_does_not_expire_mid_request(d: Daemon) -> None:
    d.client.load_model(MINILM, "cpu", keep_alive="1s")
    # One request that runs well past the keep-alive, however fast this machine is.
    started = time.monotonic()
    embed_on_own_connection(d, MINILM, LONG_BATCH)
    copies = max(1, min(30, math.ceil(2.5 / (time.monotonic() - started))))
    long_request = LONG_BATCH * copies
    with ThreadPoolExecutor(1) as pool:
        request = pool.submit(embed_on_own_connection, d, MINILM, long_request)
        started = time.monotonic()
        in_use_for = 0.0
        while not request.done():
            models = {m["name"]: m for m in d.client.list_models()}
            if request.done():
                break
            entry = models.get(MINILM)
            assert entry is not None, "expired while a request was using it"
            if entry["in_flight"]:
                assert entry["expires_at"] is None  # no expiry while in use
                in_use_for = time.monotonic() - started
            time.sleep(0.1)
        assert request.result() == len(long_request)
    assert in_use_for > 1.5, "the request was too short to outlive the keep-alive"
    # Idle again: its keep-alive runs from the end of the request.
    wait_gone(d, MINILM)
    assert counter(d, "modelctl_expirations", MINILM) >= 1


def test_pin_and_negative_keep_alive_never_expire(d: Daemon, tiny_clip: dict[str, Any]) -> None:
    d.client.load_model("pinned-clip", "cpu", properties=tiny_clip, keep_alive=0.2, pin=True)
    d.client.load_model("forever-clip", "cpu", properties=tiny_clip, keep_alive="1s")
    d.client.update_model("forever-clip", keep_alive=-1)
    d.client.load_model("short-clip", "cpu", properties=tiny_clip, keep_alive=0.3)
    wait_gone(d, "short-clip")  # the reaper ran past the other two's keep-alive
    listed = {m["name"]: m for m in d.client.list_models()}
    assert set(listed) == {"pinned-clip", "forever-clip"}
    assert listed["pinned-clip"]["expires_at"] is None
    assert listed["forever-clip"]["keep_alive"] is None


def test_eject_all_optionally_per_device(d: Daemon, tiny_clip: dict[str, Any]) -> None:
    for name in ("all-1", "all-2"):
        d.client.load_model(name, "cpu", properties=tiny_clip)
    none = d.cli("eject", "--all", "--device", "cuda", "--json", check=True)
    assert json.loads(none.stdout) == {"ejected": [], "bytes_freed": 0}
    assert len(d.client.list_models()) == 2

    out = json.loads(d.cli("eject", "--all", "--device", "cpu", "--json", check=True).stdout)
    assert sorted(e["name"] for e in out["ejected"]) == ["all-1", "all-2"]
    for item in out["ejected"]:
        assert item["device"] == "cpu" and item["bytes"] > 10**7
        assert isinstance(item["bytes_freed"], int) and item["device_bytes_freed"] is None
    assert out["bytes_freed"] == sum(e["bytes_freed"] for e in out["ejected"])
    assert d.client.list_models() == []

    again = d.cli("eject", "--all", check=True)
    assert "nothing" in again.stderr


def test_concurrent_ejects_of_one_model_free_it_once(d: Daemon,
                                                     tiny_clip: dict[str, Any]) -> None:
    d.client.load_model("twice-clip", "cpu", properties=tiny_clip)

    def eject(_: int) -> dict[str, Any] | None:
        client = Client(socket_path=d.socket_path)
        try:
            return client.eject("twice-clip", "cpu")
        except ModelNotInCache:
            return None  # arrived after the eject had finished: found it gone
        finally:
            client.close()

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(eject, range(4)))
    # Whoever came first started the eject; the others joined it (or found it gone).
    joined = [a for a in answers if a is not None]
    assert joined and all(a["ejected"][0]["name"] == "twice-clip" for a in joined)
    assert counter(d, "modelctl_ejects", "twice-clip") == 1
    assert d.client.list_models() == []


def test_eject_gives_the_memory_back_to_the_os(d: Daemon, wide_clip: dict[str, Any]) -> None:
    pid = d.pid
    assert pid is not None
    entry = d.client.load_model("rss-wide", "cpu", properties=wide_clip)
    size = entry["bytes"]
    assert size > 300 * 10**6  # several hundred MB of parameters, measured

    before = daemon_rss(pid)
    reply = d.client.eject("rss-wide", "cpu")
    after = daemon_rss(pid)  # read as soon as the eject is answered
    dropped = before - after
    freed = reply["bytes_freed"]
    assert dropped >= 0.8 * size, (before, after, size)
    assert freed == pytest.approx(dropped, rel=0.2)  # the daemon's own measurement agrees
    assert 0.8 * size <= freed <= 1.2 * size
    assert reply["ejected"][0]["rss_freed"] == freed

    # The CLI says what was freed, in words.
    d.client.load_model("rss-wide", "cpu", properties=wide_clip)
    out = d.cli("eject", "rss-wide", check=True)
    assert "ejected rss-wide from cpu, freed" in out.stdout
