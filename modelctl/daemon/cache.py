"""ModelCache: the daemon's loaded models, keyed by (canonical name, canonical device).

Concurrency model: every mutation of ``entries`` happens on the event loop, so a
decision (what to evict, whether a load fits) and the state change that records it
happen with no ``await`` in between; loads, encodes and frees run in worker threads.

- Single-flight: the first load of a key creates the entry (state ``loading``) and every
  later request for that key awaits the same future; a failed load removes the entry
  and all waiters get the same error.
- Leases: each use holds a lease; eject and eviction mark the entry ``ejecting`` (no new
  lease is granted) and wait for the leases to drain before freeing.
- Budgets: a load that does not fit evicts idle, unpinned models in LRU order, only as
  many as needed, deciding before it evicts anything; otherwise 409 naming the holders.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psutil

from modelctl.daemon import loaders
from modelctl.daemon.batcher import Batcher
from modelctl.daemon.budget import Budgets
from modelctl.daemon.devices import check_device_present, display_device
from modelctl.daemon.loaders.base import LoadedModel
from modelctl.daemon.loaders.registry import ModelSpec
from modelctl.daemon.metrics import Metrics
from modelctl.errors import (
    ApiError,
    CacheManagementError,
    ModelNotInCache,
    ServiceUnavailable,
)
from modelctl.units import format_bytes, iso_from_timestamp

log = logging.getLogger("modelctl.cache")

DRAIN_TIMEOUT_S = 60.0


@dataclass(eq=False)
class Entry:
    name: str
    spec: ModelSpec
    device: str
    pinned: bool
    keep_alive: float | None
    state: str = "loading"
    model: LoadedModel | None = None
    batcher: Batcher | None = None
    estimate: int | None = None
    bytes: int | None = None
    device_bytes: int | None = None
    loaded_at: float | None = None
    last_used: float = field(default_factory=time.time)
    load_seconds: float | None = None
    requests: int = 0
    leases: int = 0
    ready: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop()
                                        .create_future())
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    gone: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def key(self) -> tuple[str, str]:
        return (self.spec.name, self.device)

    @property
    def held_bytes(self) -> int:
        """What this entry counts against its device's budget."""
        measured = self.device_bytes if self.device.startswith("cuda") else self.bytes
        return measured if measured is not None else (self.estimate or 0)

    @property
    def expires_at(self) -> float | None:
        if self.pinned or self.keep_alive is None or self.state != "ready":
            return None
        return self.last_used + self.keep_alive

    def describe(self) -> dict[str, Any]:
        model = self.model
        return {
            "name": self.name, "canonical_name": self.spec.name, "device": self.device,
            "family": self.spec.family,
            "dimensions": model.dimensions if model is not None else self.spec.dimensions,
            "modalities": list(self.spec.modalities), "state": self.state,
            "bytes": self.bytes, "device_bytes": self.device_bytes,
            "loaded_at": iso_from_timestamp(self.loaded_at),
            "last_used_at": iso_from_timestamp(self.last_used if self.loaded_at else None),
            "load_seconds": self.load_seconds, "requests": self.requests,
            "in_flight": self.leases, "pinned": self.pinned, "keep_alive": self.keep_alive,
            "expires_at": iso_from_timestamp(self.expires_at),
        }


class ModelCache:
    def __init__(self, budgets: Budgets, metrics: Metrics, *, offline: bool,
                 default_keep_alive: float | None, torch_ready: Callable[[], Any]) -> None:
        self.entries: dict[tuple[str, str], Entry] = {}
        self.budgets = budgets
        self.metrics = metrics
        self.offline = offline
        self.default_keep_alive = default_keep_alive
        self._torch_ready = torch_ready
        self._load_locks: dict[str, asyncio.Lock] = {}
        self._loader_pool = ThreadPoolExecutor(2, thread_name_prefix="load")
        self._encode_pools: dict[str, ThreadPoolExecutor] = {}
        self._closing = False
        self._reaper: asyncio.Task[None] | None = None
        self._wake_reaper = asyncio.Event()

    # -- queries -----------------------------------------------------------------------
    def list(self) -> list[Entry]:
        return list(self.entries.values())

    def find(self, spec_name: str, device: str | None = None) -> list[Entry]:
        return [e for e in self.entries.values()
                if e.spec.name == spec_name and (device is None or e.device == device)]

    # -- load --------------------------------------------------------------------------
    async def load(self, spec: ModelSpec, device: str, *, name: str | None = None,
                   pin: bool | None = None, keep_alive: float | None | str = "default",
                   ) -> Entry:
        """The ready entry for (spec, device), loading it once however many ask."""
        while True:
            if self._closing:
                raise ServiceUnavailable("the daemon is shutting down")
            entry = self.entries.get((spec.name, device))
            if entry is None:
                entry = self._start_load(spec, device, name or spec.name, bool(pin),
                                         self.default_keep_alive if keep_alive == "default"
                                         else keep_alive)  # type: ignore[arg-type]
            if entry.state == "ejecting":
                await entry.gone.wait()  # never hand out a copy that is being freed
                continue
            await asyncio.shield(entry.ready)
            if pin is not None:
                entry.pinned = pin
            if keep_alive != "default":
                entry.keep_alive = keep_alive  # type: ignore[assignment]
            return entry

    def _start_load(self, spec: ModelSpec, device: str, name: str, pin: bool,
                    keep_alive: float | None) -> Entry:
        entry = Entry(name=name, spec=spec, device=device, pinned=pin, keep_alive=keep_alive)
        entry.drained.set()
        entry.ready.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
        self.entries[entry.key] = entry
        asyncio.get_running_loop().create_task(self._run_load(entry))
        return entry

    async def _run_load(self, entry: Entry) -> None:
        lock = self._load_locks.setdefault(entry.device, asyncio.Lock())
        loop = asyncio.get_running_loop()
        try:
            await self._torch_ready()
            check_device_present(entry.device)
            # One load at a time per device: the room a load needs is decided with every
            # earlier load already measured, and the allocator delta is this load's alone.
            async with lock:
                entry.estimate = await loop.run_in_executor(
                    self._loader_pool, loaders.estimate_bytes, entry.spec, self.offline)
                await self._make_room(entry)
                started = time.perf_counter()
                before = self.budgets.allocated(entry.device)
                model = await loop.run_in_executor(
                    self._loader_pool, loaders.load, entry.spec, entry.device, self.offline)
                entry.load_seconds = round(time.perf_counter() - started, 3)
                entry.bytes = await loop.run_in_executor(self._loader_pool, model.measure_bytes)
                after = self.budgets.allocated(entry.device)
                if before is not None and after is not None:
                    entry.device_bytes = after - before
            entry.model = model
            entry.batcher = Batcher(model, self._encode_pool(entry.device), self.metrics,
                                    label=(entry.name, entry.device))
            entry.loaded_at = entry.last_used = time.time()
            entry.state = "ready"
            self.metrics.loaded(entry)
            log.info("loaded %s on %s: %s in %.2fs", entry.name, entry.device,
                     format_bytes(entry.held_bytes), entry.load_seconds)
            entry.ready.set_result(None)
            self._wake_reaper.set()
        except BaseException as exc:
            self.entries.pop(entry.key, None)
            entry.gone.set()
            self.metrics.load_failed(entry)
            if not isinstance(exc, ApiError):
                log.exception("loading %s on %s failed", entry.name, entry.device)
            else:
                log.warning("loading %s on %s failed: %s", entry.name, entry.device, exc)
            entry.ready.set_exception(exc if isinstance(exc, Exception) else
                                      ServiceUnavailable("load cancelled"))
            gc.collect()
            self.budgets.release_cached(entry.device)

    def _encode_pool(self, device: str) -> ThreadPoolExecutor:
        # One encoding thread per device: models on one device share its cores (or its
        # stream) and would only slow each other down if run side by side.
        pool = self._encode_pools.get(device)
        if pool is None:
            pool = self._encode_pools[device] = ThreadPoolExecutor(
                1, thread_name_prefix=f"encode-{device}")
        return pool

    async def _make_room(self, entry: Entry) -> None:
        needed = entry.estimate or 0
        others = [e for e in self.entries.values()
                  if e.device == entry.device and e is not entry and e.state != "ejecting"]
        victims = self.budgets.choose_victims(entry.device, needed, others, entry.spec.name)
        for victim in victims:
            log.info("evicting %s from %s to make room for %s", victim.name, victim.device,
                     entry.name)
            self.metrics.evicted(victim)
        await asyncio.gather(*(self._eject(v, force=False, reason="evict") for v in victims))

    # -- leases ------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lease(self, entry: Entry) -> AsyncIterator[Entry]:
        """Hold ``entry`` for one use; eject waits until every lease is returned."""
        if entry.state != "ready":
            raise CacheManagementError(f"{entry.name} on {display_device(entry.device)} is "
                                       f"{entry.state}; try again")
        entry.leases += 1
        entry.requests += 1
        entry.drained.clear()
        try:
            yield entry
        finally:
            entry.leases -= 1
            entry.last_used = time.time()
            if entry.leases == 0:
                entry.drained.set()
                if entry.keep_alive is not None:
                    self._wake_reaper.set()

    # -- eject -------------------------------------------------------------------------
    async def eject(self, spec_name: str, device: str | None, *, force: bool = False,
                    ) -> list[dict[str, Any]]:
        """Eject ``spec_name`` from ``device`` (or from every device); report bytes freed."""
        targets = [e for e in self.find(spec_name, device) if e.state != "ejecting"]
        if not targets:
            where = f" device `{display_device(device)}`" if device else ""
            raise ModelNotInCache(f"The model_name `{spec_name}`{where} is not cached or found")
        return list(await asyncio.gather(*(self._eject(e, force) for e in targets)))

    async def eject_all(self, device: str | None, *, force: bool = False,
                        ) -> list[dict[str, Any]]:
        targets = [e for e in self.entries.values()
                   if (device is None or e.device == device) and e.state != "ejecting"]
        return list(await asyncio.gather(*(self._eject(e, force) for e in targets)))

    async def _eject(self, entry: Entry, force: bool, reason: str = "eject") -> dict[str, Any]:
        if entry.state == "loading":
            with contextlib.suppress(Exception):
                await asyncio.shield(entry.ready)
            if entry.state != "ready":  # the load failed: nothing to free
                return self._ejected(entry, 0, None)
        entry.state = "ejecting"
        if not force:
            try:
                await asyncio.wait_for(entry.drained.wait(), DRAIN_TIMEOUT_S)
            except TimeoutError:
                log.warning("%s on %s still had %d request(s) after %.0fs; ejecting anyway",
                            entry.name, entry.device, entry.leases, DRAIN_TIMEOUT_S)
        self.entries.pop(entry.key, None)
        model, entry.model = entry.model, None
        if entry.batcher is not None:
            entry.batcher.close()
            entry.batcher = None
        loop = asyncio.get_running_loop()
        freed_rss, freed_device = await loop.run_in_executor(
            self._loader_pool, self._free, model, entry.device)
        entry.gone.set()
        if reason == "eject":
            self.metrics.ejected(entry)
        elif reason == "expire":
            self.metrics.expired(entry)
        self.metrics.unloaded(entry)
        log.info("%s %s from %s: freed %s", reason, entry.name, entry.device,
                 format_bytes(freed_device if freed_device is not None else freed_rss))
        return self._ejected(entry, freed_rss, freed_device)

    @staticmethod
    def _ejected(entry: Entry, freed_rss: int, freed_device: int | None) -> dict[str, Any]:
        return {"name": entry.name, "canonical_name": entry.spec.name,
                "device": entry.device, "bytes": entry.bytes,
                "device_bytes": entry.device_bytes,
                "bytes_freed": freed_device if freed_device is not None else freed_rss,
                "rss_freed": freed_rss, "device_bytes_freed": freed_device}

    def _free(self, model: LoadedModel | None, device: str) -> tuple[int, int | None]:
        """Drop the model and hand its memory back; return (RSS freed, allocator freed)."""
        process = psutil.Process()
        rss_before = process.memory_info().rss
        allocated_before = self.budgets.allocated(device)
        if model is not None:
            model.release()
        del model
        gc.collect()
        self.budgets.release_cached(device)
        if device == "cpu":
            _malloc_trim()
        rss_after = process.memory_info().rss
        allocated_after = self.budgets.allocated(device)
        freed_device = (allocated_before - allocated_after
                        if allocated_before is not None and allocated_after is not None else None)
        return max(0, rss_before - rss_after), freed_device

    # -- keep-alive --------------------------------------------------------------------
    def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def _reap_forever(self) -> None:
        while True:
            now = time.time()
            next_due = None
            for entry in list(self.entries.values()):
                due = entry.expires_at
                if due is None or entry.leases:
                    continue
                if due <= now:
                    log.info("%s on %s idle past its keep-alive", entry.name, entry.device)
                    asyncio.get_running_loop().create_task(
                        self._eject(entry, force=False, reason="expire"))
                else:
                    next_due = due if next_due is None else min(next_due, due)
            self._wake_reaper.clear()
            timeout = 3600.0 if next_due is None else max(0.01, next_due - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_reaper.wait(), timeout)

    def wake(self) -> None:
        self._wake_reaper.set()

    async def close(self) -> None:
        """Refuse new loads; let in-flight work finish (uvicorn bounds the wait)."""
        self._closing = True
        if self._reaper is not None:
            self._reaper.cancel()
        for entry in self.entries.values():
            if entry.batcher is not None:
                entry.batcher.close()
        for pool in self._encode_pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        self._loader_pool.shutdown(wait=False, cancel_futures=True)


def _malloc_trim() -> None:
    """Give freed heap pages back to the OS (glibc keeps them otherwise)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
