"""Budgets and eviction against a real daemon: LRU, leases, pins, 409s, concurrent loads.

The budget daemon (conftest.py; test_metrics.py uses it too), with a cpu budget of
250 MB, given as ``modelctl daemon start --max-cpu-memory 250MB`` (over a Marqo alias in
the environment, which the flag beats).
Its models are about 91 MB each (MiniLM, and one random open_clip checkpoint loaded
under several names), so any two fit and any three do not; a 208 MB open_clip model
fits only next to one of them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelctl.client import Client
from modelctl.errors import CacheManagementError
from modelctl.testing import (
    MINILM,
    Daemon,
    counter,
    embed_on_own_connection,
)

BUDGET = 250 * 10**6
# Long enough for MiniLM to keep a lease out for seconds: the loads a test makes while
# it runs are decided well before it returns.
LONG_BATCH = [f"request {i}: " + "a long sentence that keeps the model busy " * 12
              for i in range(64)]


@pytest.fixture(scope="module")
def checkpoints(budget_checkpoints: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return budget_checkpoints


@pytest.fixture
def d(budget_daemon: Daemon) -> Iterator[Daemon]:
    """The budget daemon, emptied before each test with ``modelctl eject --all``."""
    budget_daemon.cli("eject", "--all", check=True)
    assert budget_daemon.client.list_models() == []
    yield budget_daemon


def load_small(d: Daemon, name: str, checkpoints: dict[str, dict[str, Any]],
               **kwargs: Any) -> dict[str, Any]:
    return d.client.load_model(name, "cpu", properties=checkpoints["small"], **kwargs)


def names(d: Daemon) -> set[str]:
    return {m["name"] for m in d.client.list_models()}


def test_budget_comes_from_the_start_flag(d: Daemon) -> None:
    assert d.client.devices()["cpu"]["budget"] == BUDGET  # the flag beats MARQO_...=8
    families = {m.name: m for m in text_string_to_metric_families(d.client.metrics())}
    budgets = {s.labels["device"]: s.value for s in families["modelctl_budget_bytes"].samples}
    assert budgets["cpu"] == BUDGET


def test_third_load_evicts_the_least_recently_used_idle_model(
        d: Daemon, checkpoints: dict[str, dict[str, Any]]) -> None:
    load_small(d, "clip-1", checkpoints)
    load_small(d, "clip-2", checkpoints)
    d.client.embed("clip-1", ["used after clip-2 was loaded"])  # clip-2 is now the LRU
    before = {n: counter(d, "modelctl_evictions", n) for n in ("clip-1", "clip-2")}

    # The third load goes through the CLI, as a user would type it.
    out = d.cli("load", "clip-3", "--device", "cpu", "--properties",
                json.dumps(checkpoints["small"]), "--json", check=True)
    assert json.loads(out.stdout)["state"] == "ready"
    assert names(d) == {"clip-1", "clip-3"}
    assert counter(d, "modelctl_evictions", "clip-2") == before["clip-2"] + 1
    assert counter(d, "modelctl_evictions", "clip-1") == before["clip-1"]
    assert "evicting clip-2 from cpu" in d.log()

    # Sizes are measured, shown in ls, and within the budget.
    listed = json.loads(d.cli("ls", "--json", check=True).stdout)
    sizes = [m["bytes"] for m in listed]
    assert all(85 * 10**6 < size < 100 * 10**6 for size in sizes), sizes
    assert sum(sizes) <= BUDGET


def test_pinned_model_is_skipped_and_unpin_makes_it_evictable(
        d: Daemon, checkpoints: dict[str, dict[str, Any]]) -> None:
    pinned = d.cli("load", "clip-1", "--device", "cpu", "--pin", "--properties",
                   json.dumps(checkpoints["small"]), "--json", check=True)
    assert json.loads(pinned.stdout)["pinned"] is True
    load_small(d, "clip-2", checkpoints)
    load_small(d, "clip-3", checkpoints)  # clip-1 is the LRU, but pinned: clip-2 goes
    assert names(d) == {"clip-1", "clip-3"}

    d.cli("unpin", "clip-1", check=True)
    assert [m["pinned"] for m in d.client.list_models() if m["name"] == "clip-1"] == [False]
    load_small(d, "clip-2", checkpoints)  # now the LRU clip-1 can go
    assert names(d) == {"clip-3", "clip-2"}

    d.cli("pin", "clip-3", check=True)
    load_small(d, "clip-1", checkpoints)
    assert names(d) == {"clip-3", "clip-1"}


def test_model_in_use_is_not_evicted(d: Daemon, checkpoints: dict[str, dict[str, Any]]) -> None:
    d.client.load_model(MINILM, "cpu")
    evictions = counter(d, "modelctl_evictions", MINILM)
    with ThreadPoolExecutor(1) as pool:
        request = pool.submit(embed_on_own_connection, d, MINILM, LONG_BATCH)
        _wait_in_flight(d, MINILM)
        # MiniLM was last used when its request started, before clip-1 was loaded: it
        # is the LRU model, but it holds a lease, so the idle clip-1 is the one to go.
        load_small(d, "clip-1", checkpoints)
        load_small(d, "clip-2", checkpoints)
        during = {m["name"]: m for m in d.client.list_models()}
        assert set(during) == {MINILM, "clip-2"}
        assert during[MINILM]["in_flight"] == 1, "the request ended before the load decided"
        assert request.result() == len(LONG_BATCH)
    assert counter(d, "modelctl_evictions", MINILM) == evictions


def test_no_room_is_409_naming_the_holders_and_evicts_nothing(
        d: Daemon, checkpoints: dict[str, dict[str, Any]]) -> None:
    load_small(d, "clip-1", checkpoints, pin=True)
    load_small(d, "clip-2", checkpoints)
    before = {m["name"]: m["loaded_at"] for m in d.client.list_models()}
    evictions = counter(d, "modelctl_evictions", "clip-2")

    # 208 MB more needs 140 MB freed; evicting the idle clip-2 gives only 91: so it
    # stays, and the load is refused.
    with pytest.raises(CacheManagementError) as info:
        d.client.load_model("clip-big", "cpu", properties=checkpoints["big"])
    err = info.value
    assert (err.status, err.code) == (409, "model_cache_management_error")
    assert "clip-1" in err.message and "pinned" in err.message and "clip-2" in err.message
    assert "clip-big" in err.message
    assert {m["name"]: m["loaded_at"] for m in d.client.list_models()} == before
    assert counter(d, "modelctl_evictions", "clip-2") == evictions

    # One pinned model and one in use: nothing may go, not even for a small load.
    d.client.eject("clip-2")
    d.client.load_model(MINILM, "cpu")
    with ThreadPoolExecutor(1) as pool:
        request = pool.submit(embed_on_own_connection, d, MINILM, LONG_BATCH)
        _wait_in_flight(d, MINILM)
        proc = d.cli("load", "clip-3", "--device", "cpu", "--properties",
                     json.dumps(checkpoints["small"]))
        assert proc.returncode == 1 and proc.stdout == ""
        assert "clip-1" in proc.stderr and "pinned" in proc.stderr
        assert MINILM in proc.stderr and "in use" in proc.stderr
        assert names(d) == {"clip-1", MINILM}
        assert request.result() == len(LONG_BATCH)


def test_concurrent_loads_that_each_need_eviction(
        d: Daemon, checkpoints: dict[str, dict[str, Any]]) -> None:
    load_small(d, "clip-1", checkpoints)
    load_small(d, "clip-2", checkpoints)
    before = {n: counter(d, "modelctl_evictions", n) for n in ("clip-1", "clip-2")}
    barrier = threading.Barrier(2)

    def load(name: str) -> str:
        client = Client(socket_path=d.socket_path)
        barrier.wait()
        try:
            return str(client.load_model(name, "cpu", properties=checkpoints["small"])["state"])
        finally:
            client.close()

    with ThreadPoolExecutor(2) as pool:
        states = list(pool.map(load, ["clip-3", "clip-4"]))
    assert states == ["ready", "ready"]
    models = d.client.list_models()
    assert {m["name"] for m in models} == {"clip-3", "clip-4"}
    assert sum(m["bytes"] for m in models) <= BUDGET
    assert counter(d, "modelctl_evictions", "clip-1") == before["clip-1"] + 1
    assert counter(d, "modelctl_evictions", "clip-2") == before["clip-2"] + 1




def _wait_in_flight(d: Daemon, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(m["name"] == name and m["in_flight"] for m in d.client.list_models()):
            return
        time.sleep(0.01)
    raise AssertionError(f"{name} never had a request in flight")
