"""Victim choice in ``Budgets``, as plain functions: no daemon, no model, no torch.

The cache asks ``choose_victims`` which idle models to evict before a load; these tests
build real cache entries with chosen sizes, states and ages and check the policy: least
recently used first, only as many as needed, never a pinned, busy or loading model, and
all or nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from modelctl.daemon.budget import Budgets
from modelctl.daemon.devices import Nvml
from modelctl.daemon.entry import Entry
from modelctl.daemon.loaders import ModelSpec
from modelctl.errors import CacheManagementError

MB = 10**6


class FixedFree(Budgets):
    """``Budgets`` on a machine whose free memory is a given figure (``None``: unknown).

    The budget arithmetic is the code under test; what the kernel or NVML reports free
    is the machine's, so the tests fix it.
    """

    def __init__(self, max_cpu: int | None = None, max_cuda: int | None = None, *,
                 free: int | None = None) -> None:
        super().__init__(max_cpu, max_cuda, Nvml())
        self.free_bytes = free

    def free(self, device: str) -> int | None:
        return self.free_bytes


def make_entries(*rows: dict[str, Any]) -> list[Entry]:
    """Cache entries from ``{"name", "bytes", "last_used", ...}`` rows (device cpu unless
    given). Entries hold futures, so they are made inside a running loop."""
    async def build() -> list[Entry]:
        out = []
        for row in rows:
            row = {"device": "cpu", "pinned": False, "state": "ready", **row}
            spec = ModelSpec(row["name"], "sbert", 8, row["name"])
            fields = {k: v for k, v in row.items() if k not in ("name", "device", "pinned")}
            out.append(Entry(row["name"], spec, row["device"], row["pinned"], None, **fields))
        return out

    return asyncio.run(build())


def names(entries: list[Entry]) -> list[str]:
    return [e.name for e in entries]


def test_nothing_is_evicted_when_the_load_fits() -> None:
    held = make_entries({"name": "a", "bytes": 300 * MB, "last_used": 1.0})
    budgets = FixedFree(max_cpu=1000 * MB)
    assert budgets.shortfall("cpu", 700 * MB, held) == 0
    assert budgets.choose_victims("cpu", 700 * MB, held, "new") == []


def test_least_recently_used_go_first_and_only_as_many_as_needed() -> None:
    held = make_entries({"name": "newest", "bytes": 300 * MB, "last_used": 30.0},
                        {"name": "oldest", "bytes": 300 * MB, "last_used": 10.0},
                        {"name": "middle", "bytes": 300 * MB, "last_used": 20.0})
    budgets = FixedFree(max_cpu=1000 * MB)
    # 900 held + 400 needed - 1000 budget: 300 short, so one model (the oldest) goes.
    assert budgets.shortfall("cpu", 400 * MB, held) == 300 * MB
    assert names(budgets.choose_victims("cpu", 400 * MB, held, "new")) == ["oldest"]
    # 600 short: the two oldest, in age order.
    assert names(budgets.choose_victims("cpu", 700 * MB, held, "new")) == ["oldest", "middle"]


def test_pinned_busy_loading_and_ejecting_models_are_never_victims() -> None:
    held = make_entries(
        {"name": "pinned", "bytes": 100 * MB, "last_used": 1.0, "pinned": True},
        {"name": "busy", "bytes": 100 * MB, "last_used": 2.0, "leases": 1},
        {"name": "loading", "estimate": 100 * MB, "last_used": 3.0, "state": "loading"},
        {"name": "ejecting", "bytes": 100 * MB, "last_used": 4.0, "state": "ejecting"},
        {"name": "idle", "bytes": 100 * MB, "last_used": 5.0})
    budgets = FixedFree(max_cpu=500 * MB)
    assert names(budgets.choose_victims("cpu", 100 * MB, held, "new")) == ["idle"]


def test_all_or_nothing_when_evicting_every_idle_model_would_not_make_room() -> None:
    held = make_entries({"name": "idle", "bytes": 100 * MB, "last_used": 1.0},
                        {"name": "keeper", "bytes": 400 * MB, "last_used": 2.0,
                         "pinned": True})
    budgets = FixedFree(max_cpu=600 * MB)
    # 500 held + 300 needed = 800: 200 short, and only 100 is evictable.
    assert budgets.choose_victims("cpu", 300 * MB, held, "new", strict=False) == []
    with pytest.raises(CacheManagementError) as info:
        budgets.choose_victims("cpu", 300 * MB, held, "big-model")
    message = info.value.message
    assert info.value.status == 409 and info.value.code == "model_cache_management_error"
    # The message names the model asked for, the budget and every holder (largest first).
    assert "big-model" in message and "budget" in message
    assert message.index("keeper") < message.index("idle") and "pinned" in message
    assert "MODELCTL_MAX_CPU_MEMORY" in message


def test_free_memory_short_of_the_load_evicts_even_within_budget() -> None:
    held = make_entries({"name": "old", "bytes": 200 * MB, "last_used": 1.0},
                        {"name": "new", "bytes": 200 * MB, "last_used": 2.0})
    # The budget has room (400 + 300 <= 10000) but the machine has only 150 free.
    budgets = FixedFree(max_cpu=10_000 * MB, free=150 * MB)
    assert budgets.shortfall("cpu", 300 * MB, held) == 150 * MB
    assert names(budgets.choose_victims("cpu", 300 * MB, held, "x")) == ["old"]
    # Unknown free memory (no NVML): the budget alone decides.
    assert FixedFree(max_cpu=10_000 * MB).choose_victims("cpu", 300 * MB, held, "x") == []


def test_no_room_because_of_free_memory_says_so() -> None:
    held = make_entries({"name": "pinned", "bytes": 100 * MB, "last_used": 1.0,
                         "pinned": True})
    budgets = FixedFree(max_cpu=10_000 * MB, free=50 * MB)
    with pytest.raises(CacheManagementError) as info:
        budgets.choose_victims("cpu", 300 * MB, held, "x")
    assert "of RAM available" in info.value.message
    assert "free memory outside modelctl" in info.value.message


def test_a_zero_byte_request_checks_the_budget_only() -> None:
    # Re-checking what is held (needed=0) ignores free memory: the models are already in.
    held = make_entries({"name": "a", "bytes": 300 * MB, "last_used": 1.0})
    budgets = FixedFree(max_cpu=200 * MB, free=0)
    assert budgets.shortfall("cpu", 0, held) == 100 * MB
    assert names(budgets.choose_victims("cpu", 0, held, "x")) == ["a"]


def test_held_bytes_counts_measured_sizes_before_estimates() -> None:
    cpu, cuda, cuda_unmeasured, estimated = make_entries(
        {"name": "cpu", "bytes": 300 * MB, "device_bytes": 999 * MB, "last_used": 1.0},
        {"name": "cuda", "device": "cuda:0", "bytes": 300 * MB, "device_bytes": 250 * MB,
         "last_used": 1.0},
        {"name": "cuda2", "device": "cuda:0", "bytes": 300 * MB, "last_used": 1.0},
        {"name": "est", "estimate": 80 * MB, "last_used": 1.0, "state": "loading"})
    assert cpu.held_bytes == 300 * MB  # device_bytes is a cuda figure only
    assert cuda.held_bytes == 250 * MB  # the allocator's delta wins on cuda
    assert cuda_unmeasured.held_bytes == 300 * MB
    assert estimated.held_bytes == 80 * MB
    budgets = FixedFree(max_cuda=600 * MB)
    # On cuda: 250 + 300 held + 100 needed = 650 against 600: one victim, the LRU.
    assert budgets.shortfall("cuda:0", 100 * MB, [cuda, cuda_unmeasured]) == 50 * MB
    assert budgets.budget("cuda:1") == 600 * MB  # the budget is per GPU
