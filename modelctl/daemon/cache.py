"""ModelCache: the daemon's loaded models, keyed by (canonical name, canonical device,
engine, precision): two variants of one model are two entries (loaders/variants.py).

Concurrency model: every mutation of ``entries`` happens on the event loop, so a
decision (what to evict, whether a load fits) and the state change that records it
happen with no ``await`` in between; loads, encodes and frees run in worker threads.

- Single-flight: the first load of a key creates the entry (state ``loading``) and every
  later request for that key awaits the same future; a failed load removes the entry
  and all waiters get the same error.
- Leases: each use holds a lease; eject, eviction and expiry mark the entry ``ejecting``
  synchronously, at the moment they decide (no new lease is granted from then on), and
  wait for the leases already out to drain before freeing.
- Budgets: a load that does not fit evicts idle, unpinned models in LRU order, only as
  many as needed, deciding before it evicts anything; otherwise 409 naming the holders.
  Loads on one device run one at a time, so each decision sees every earlier load
  measured.
- Keep-alive: a background task ejects models idle past their keep-alive; a model with
  a lease out is never expired.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelctl.daemon import loaders
from modelctl.daemon.batcher import Batcher
from modelctl.daemon.budget import Budgets
from modelctl.daemon.devices import check_device_present, display_device, native_precisions
from modelctl.daemon.entry import Entry, EntryState, Key
from modelctl.daemon.loaders import precision
from modelctl.daemon.memory import Reclaimer
from modelctl.daemon.metrics import Metrics
from modelctl.daemon.threads import GovernedExecutor, ThreadGovernor
from modelctl.errors import (
    ApiError,
    CacheManagementError,
    ModelNotInCache,
    ServiceUnavailable,
)
from modelctl.registry import ModelSpec
from modelctl.units import format_bytes, iso_from_timestamp
from modelctl.wire import EjectedModel

if TYPE_CHECKING:
    from modelctl.daemon.loaders.base import LoadedModel

log = logging.getLogger("modelctl.cache")

# How long an eject waits for requests in flight (queued ones included) before it frees
# the model anyway and fails them: long enough for a big batch on a busy cpu, short
# enough that a stuck request cannot pin a model forever; --force skips the wait.
DRAIN_TIMEOUT_S = 300.0
Ejected = EjectedModel
# Aliases: inside ModelCache, ``list`` names its method.
_Entries = list[Entry]
_Results = list[Ejected]


_NOTES = ("note", "notes")
# The variant's fields: the cache key holds them, so entries that differ there are
# different entries, never the same name with other properties.
_VARIANT_FIELDS = ("precision", "engine")


def property_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The modelProperties fields whose values differ (notes and the variant aside)."""
    keys = sorted((set(old) | set(new)) - set(_NOTES) - set(_VARIANT_FIELDS))
    return [key for key in keys if old.get(key) != new.get(key)]


def _check_same_model(entry: Entry, spec: ModelSpec) -> None:
    """One name is one model: other properties for a loaded name are a 409, never the
    first copy served in their place (Marqo keys its cache on name and properties)."""
    differing = property_differences(entry.spec.properties, spec.properties)
    if not differing and (entry.spec.source, entry.spec.pretrained, entry.spec.extra) != \
            (spec.source, spec.pretrained, spec.extra):
        differing = ["source"]
    if differing:
        shown = ", ".join(f"{key} ({entry.spec.properties.get(key)!r} loaded, "
                          f"{spec.properties.get(key)!r} asked)" if key != "source"
                          else f"source ({entry.spec.source!r} loaded, {spec.source!r} asked)"
                          for key in differing[:5])
        raise CacheManagementError(
            f"{spec.name} is loaded on {entry.device} with other properties: {shown}; "
            "eject it first, or load these properties under another name")


@dataclass
class _Loaded:
    model: LoadedModel
    bytes: int
    device_bytes: int | None
    seconds: float


class ModelCache:
    def __init__(self, budgets: Budgets, metrics: Metrics, *, offline: bool,
                 default_keep_alive: float | None, torch_ready: Callable[[], Any],
                 cache_dir: Path, threads: ThreadGovernor | None = None) -> None:
        self.entries: dict[Key, Entry] = {}
        self.cache_dir = cache_dir
        self.threads = threads or ThreadGovernor()
        self.budgets = budgets
        self._reclaimer = Reclaimer(budgets)
        self.metrics = metrics
        self.offline = offline
        self.default_keep_alive = default_keep_alive
        self._torch_ready = torch_ready
        self._load_locks: dict[str, asyncio.Lock] = {}
        # What each (model, device) measured when last loaded: the best estimate for a
        # model that is loaded again after an eviction.
        self._measured: dict[Key, int] = {}
        self._loader_pool = ThreadPoolExecutor(2, thread_name_prefix="load")
        self._encode_pools: dict[str, ThreadPoolExecutor] = {}
        self._closing = False
        self._reaper: asyncio.Task[None] | None = None
        self._wake_reaper = asyncio.Event()

    # -- queries -----------------------------------------------------------------------
    def list(self) -> _Entries:
        return list(self.entries.values())

    def find(self, spec_name: str, device: str | None = None, *, engine: str | None = None,
             precision: str | None = None) -> _Entries:
        """Entries of ``spec_name``: every device and variant unless narrowed."""
        return [e for e in self.entries.values()
                if e.spec.name == spec_name and (device is None or e.device == device)
                and (engine is None or e.spec.engine == engine)
                and (precision is None or e.spec.precision == precision)]

    async def use_loaded(self, spec_name: str, device: str | None, *, engine: str | None,
                         precision: str | None, prefer: tuple[str, str]) -> Entry | None:
        """The ready entry of a copy of ``spec_name`` already in the cache (waiting for
        its load if under way), or ``None`` when none is there to use.

        Narrowed to ``device``, ``engine`` and ``precision`` where given; of several
        variants, the ``prefer`` one (engine, precision) if it is there, else the first.
        """
        loaded = [e for e in self.find(spec_name, device, engine=engine, precision=precision)
                  if e.state != EntryState.EJECTING]
        if not loaded:
            return None
        entry = next((e for e in loaded if (e.spec.engine, e.spec.precision) == prefer),
                     loaded[0])
        return await self.load(entry.spec, entry.device)

    # -- load --------------------------------------------------------------------------
    async def load(self, spec: ModelSpec, device: str, *, name: str | None = None,
                   pin: bool | None = None, keep_alive: float | None | str = "default",
                   ) -> Entry:
        """The ready entry for (spec, device), loading it once however many ask.

        The entry is returned with no ``await`` after its last check, so a caller that
        takes a lease at once always gets a ready model.
        """
        spec, note = precision.on_device(spec, device)
        while True:
            if self._closing:
                raise ServiceUnavailable("the daemon is shutting down")
            entry = self.entries.get((spec.name, device, spec.engine, spec.precision))
            if entry is not None and entry.spec is not spec:
                _check_same_model(entry, spec)
            if entry is None:
                entry = self._start_load(spec, device, name or spec.name, bool(pin),
                                         self.default_keep_alive if keep_alive == "default"
                                         else keep_alive)  # type: ignore[arg-type]
                if note:
                    entry.warnings.append(note)
                    log.warning("%s on %s: %s", entry.name, device, note)
            if entry.state == EntryState.EJECTING:
                await entry.gone.wait()  # never hand out a copy that is being freed
                continue
            if entry.state == EntryState.LOADING:
                await asyncio.shield(entry.ready)  # raises the load's error
                continue  # look again: it may have been evicted before we woke up
            if pin is not None:
                entry.pinned = pin
            if keep_alive != "default":
                entry.keep_alive = keep_alive  # type: ignore[assignment]
            entry.last_used = time.time()  # asking for a model is using it (LRU, expiry)
            self._wake_reaper.set()
            return entry

    def _start_load(self, spec: ModelSpec, device: str, name: str, pin: bool,
                    keep_alive: float | None) -> Entry:
        entry = Entry(name=name, spec=spec, device=device, pinned=pin, keep_alive=keep_alive)
        entry.drained.set()
        entry.ready.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
        self.entries[entry.key] = entry
        self._spawn(self._run_load(entry))
        return entry

    async def _run_load(self, entry: Entry) -> None:
        lock = self._load_locks.setdefault(entry.device, asyncio.Lock())
        loop = asyncio.get_running_loop()
        try:
            await self._torch_ready()
            check_device_present(entry.device)
            spec = entry.spec
            warning = precision.check(spec.family, entry.device, spec.engine, spec.precision,
                                      native_precisions(entry.device))
            if warning:
                entry.warnings.append(warning)
                log.warning("%s on %s: %s", entry.name, entry.device, warning)
            # One load at a time per device: the room a load needs is decided with every
            # earlier load already measured, and the allocator delta is this load's alone.
            async with lock:
                entry.estimate = self._measured.get(entry.key) or await loop.run_in_executor(
                    self._loader_pool, loaders.estimate_bytes, entry.spec, self.offline)
                await self._make_room(entry)
                loaded = await loop.run_in_executor(
                    self._loader_pool, self._load_blocking, entry.spec, entry.device, warning)
                entry.model = loaded.model
                entry.bytes, entry.device_bytes = loaded.bytes, loaded.device_bytes
                entry.load_seconds = round(loaded.seconds, 3)
                self._measured[entry.key] = entry.held_bytes
                entry.batcher = Batcher(loaded.model, self._encode_pool(entry.device),
                                        self.metrics, label=(entry.name, entry.device))
                del loaded
                # The estimate was a guess (fp16 weights load as fp32, say): if the
                # measured size broke the budget, evict idle models until it holds again.
                await self._evict(self.budgets.choose_victims(
                    entry.device, 0, self._staying(entry.device), entry.name, strict=False),
                    for_name=entry.name)
                over = self.budgets.shortfall(entry.device, 0, self._staying(entry.device))
                if over > 0:
                    # The guard for an estimate that was short (or missing): the model
                    # is freed again rather than kept over the budget.
                    raise CacheManagementError(
                        f"{entry.name} measured {format_bytes(entry.held_bytes)} once loaded "
                        f"(estimated {format_bytes(entry.estimate or 0)}), which puts "
                        f"{display_device(entry.device)} {format_bytes(over)} over its budget "
                        f"of {format_bytes(self.budgets.budget(entry.device))}; what holds "
                        "the rest is pinned or in use. Eject or unpin a model, or raise the "
                        "budget; the load was undone")
                entry.loaded_at = entry.last_used = time.time()
                entry.state = EntryState.READY
            self.metrics.loaded(entry)
            log.info("loaded %s on %s: %s in %.2fs", entry.name, entry.device,
                     format_bytes(entry.held_bytes), entry.load_seconds)
            entry.ready.set_result(None)
            self._wake_reaper.set()
        except BaseException as exc:
            if self.entries.get(entry.key) is entry:
                del self.entries[entry.key]
            holder = [entry.model] if entry.model is not None else []
            entry.model = None
            if entry.batcher is not None:
                entry.batcher.close()
                entry.batcher = None
            entry.gone.set()
            self.metrics.load_failed(entry)
            if not isinstance(exc, ApiError):
                log.exception("loading %s on %s failed", entry.name, entry.device)
            else:
                log.warning("loading %s on %s failed: %s", entry.name, entry.device, exc)
            entry.ready.set_exception(exc if isinstance(exc, Exception) else
                                      ServiceUnavailable("load cancelled"))
            with contextlib.suppress(RuntimeError):  # the pool is gone at shutdown
                await loop.run_in_executor(self._loader_pool, self._reclaimer.free, holder,
                                           entry.device)

    def _load_blocking(self, spec: ModelSpec, device: str, warning: str | None) -> _Loaded:
        """Load and measure in a worker thread (cuda synchronisation blocks)."""
        from modelctl.daemon.loaders import variants

        before = self.budgets.allocated(device)
        started = time.perf_counter()
        # The family loader builds fp32 (open_clip would build Marqo's fp16 itself); the
        # variant layer casts it, having measured fp32's vectors for ``accuracy``.
        model = variants.apply(loaders.load(replace(spec, precision="fp32"), device,
                                            self.offline), spec,
                               cache_dir=self.cache_dir, threads=self.threads.threads(),
                               warning=warning)
        seconds = time.perf_counter() - started
        size = model.measure_bytes()
        after = self.budgets.allocated(device)
        # Give back what the load used only on the way (a checkpoint's state dict, a cpu
        # copy before the move to cuda), so the daemon's RSS and NVML's used memory show
        # what the model holds, and an eject's freed bytes are the model's alone.
        self._reclaimer.free([], device)
        device_bytes = after - before if before is not None and after is not None else None
        return _Loaded(model, size, device_bytes, seconds)

    def _encode_pool(self, device: str) -> ThreadPoolExecutor:
        # One encoding thread per device: models on one device share its cores (or its
        # stream) and would only slow each other down if run side by side.
        pool = self._encode_pools.get(device)
        if pool is None:
            pool = self._encode_pools[device] = (
                GovernedExecutor(self.threads, f"encode-{device}") if device == "cpu"
                else ThreadPoolExecutor(1, thread_name_prefix=f"encode-{device}"))
        return pool

    def _staying(self, device: str, but: Entry | None = None) -> _Entries:
        return [e for e in self.entries.values()
                if e.device == device and e is not but and e.state != EntryState.EJECTING]

    async def _make_room(self, entry: Entry) -> None:
        """Evict what ``entry``'s load needs, or raise 409 having evicted nothing."""
        needed = entry.estimate or 0
        staying = self._staying(entry.device, but=entry)
        victims = self.budgets.choose_victims(entry.device, needed, staying, entry.name)
        eviction = self._evict(victims, for_name=entry.name)
        # Models already being ejected hold their memory until freed; when the room
        # counted on them, wait for them too.
        leaving = [e for e in self.entries.values()
                   if e.device == entry.device and e.state == EntryState.EJECTING
                   and e not in victims]
        remaining = [e for e in staying if e not in victims]
        if self.budgets.shortfall(entry.device, needed, remaining + leaving) <= 0:
            leaving = []
        await eviction
        for other in leaving:
            assert other.ejection is not None
            with contextlib.suppress(Exception):
                await asyncio.shield(other.ejection)

    def _evict(self, victims: _Entries, *, for_name: str) -> Awaitable[Any]:
        """Start evicting ``victims`` now (no await before their state flips); the
        returned awaitable finishes when their memory is freed."""
        ejections = []
        for victim in victims:
            log.info("evicting %s from %s (%s, idle since %s) to make room for %s",
                     victim.name, victim.device, format_bytes(victim.held_bytes),
                     iso_from_timestamp(victim.last_used), for_name)
            self.metrics.evicted(victim)
            ejections.append(asyncio.shield(
                self._begin_eject(victim, force=False, reason="evict")))
        return asyncio.gather(*ejections)

    # -- leases ------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lease(self, entry: Entry) -> AsyncIterator[Entry]:
        """Hold ``entry`` for one use; eject waits until every lease is returned."""
        if entry.state != EntryState.READY:
            raise CacheManagementError(f"{entry.name} on {display_device(entry.device)} is "
                                       f"{entry.state.value}; try again")
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
                    engine: str | None = None, precision: str | None = None) -> _Results:
        """Eject ``spec_name`` from ``device`` (or from every device), every variant unless
        ``engine``/``precision`` narrow it; report bytes freed."""
        targets = self.find(spec_name, device, engine=engine, precision=precision)
        results = [r for r in await self._eject_all(targets, force) if r is not None]
        if not results:
            where = f" device `{display_device(device)}`" if device else ""
            if engine or precision:
                where += f" variant `{engine or '*'}/{precision or '*'}`"
            raise ModelNotInCache(f"The model_name `{spec_name}`{where} is not cached or found")
        return results

    async def eject_all(self, device: str | None, *, force: bool = False) -> _Results:
        targets = [e for e in self.entries.values() if device is None or e.device == device]
        return [r for r in await self._eject_all(targets, force) if r is not None]

    async def _eject_all(self, targets: _Entries, force: bool) -> builtins.list[Ejected | None]:
        # Every ready target is marked ejecting here, before the first await.
        waits = [asyncio.shield(self._begin_eject(e, force=force, reason="eject"))
                 if e.state != EntryState.LOADING else self._eject_when_loaded(e, force)
                 for e in targets]
        return list(await asyncio.gather(*waits))

    async def _eject_when_loaded(self, entry: Entry, force: bool) -> Ejected | None:
        """Eject a model that is loading once it is ready; ``None`` if its load failed."""
        with contextlib.suppress(Exception):
            await asyncio.shield(entry.ready)
        if entry.ejection is None and (entry.state != EntryState.READY
                                       or self.entries.get(entry.key) is not entry):
            return None
        return await asyncio.shield(self._begin_eject(entry, force=force, reason="eject"))

    def _begin_eject(self, entry: Entry, *, force: bool, reason: str) -> asyncio.Task[Ejected]:
        """Mark ``entry`` ejecting and free it in a task; join an ejection under way.

        Synchronous on purpose: the caller decided with no await in between, and from
        here on ``lease`` refuses the entry, so a model chosen because it was idle stays
        idle until it is freed.
        """
        if entry.ejection is None:
            entry.state = EntryState.EJECTING
            entry.ejection = self._spawn(self._finish_eject(entry, force, reason))
        elif force:
            entry.drained.set()  # a forced eject stops waiting for requests in flight
        return entry.ejection

    async def _finish_eject(self, entry: Entry, force: bool, reason: str) -> Ejected:
        try:
            if not force:
                try:
                    await asyncio.wait_for(entry.drained.wait(), DRAIN_TIMEOUT_S)
                except TimeoutError:
                    log.warning("%s on %s still had %d request(s) after %.0fs; ejecting "
                                "anyway", entry.name, entry.device, entry.leases,
                                DRAIN_TIMEOUT_S)
            # The model leaves the entry and the batcher here, and the event loop holds
            # no other reference: ``Reclaimer.free`` drops the last one in its thread.
            holder = [entry.model] if entry.model is not None else []
            entry.model = None
            if entry.batcher is not None:
                entry.batcher.close()
                entry.batcher = None
            freed_rss, freed_device = await asyncio.get_running_loop().run_in_executor(
                self._loader_pool, self._reclaimer.free, holder, entry.device)
            if reason == "eject":
                self.metrics.ejected(entry)
            elif reason == "expire":
                self.metrics.expired(entry)
        finally:
            # Listed as ejecting until its memory is back: what ls shows is what is held.
            if self.entries.get(entry.key) is entry:
                del self.entries[entry.key]
            entry.gone.set()
        log.info("%s %s from %s: freed %s", reason, entry.name, entry.device,
                 format_bytes(freed_device if freed_device is not None else freed_rss))
        return {"name": entry.name, "canonical_name": entry.spec.name,
                "device": entry.device, "engine": entry.spec.engine,
                "precision": entry.spec.precision, "bytes": entry.bytes,
                "device_bytes": entry.device_bytes,
                "bytes_freed": freed_device if freed_device is not None else freed_rss,
                "rss_freed": freed_rss, "device_bytes_freed": freed_device,
                "reason": reason}

    # -- keep-alive --------------------------------------------------------------------
    def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def _reap_forever(self) -> None:
        while True:
            self._wake_reaper.clear()
            now = time.time()
            next_due = None
            for entry in list(self.entries.values()):
                due = entry.expires_at  # None while pinned, in use, loading, ejecting
                if due is None:
                    continue
                if due <= now:
                    log.info("%s on %s idle past its keep-alive (%ss)", entry.name,
                             entry.device, entry.keep_alive)
                    self._begin_eject(entry, force=False, reason="expire")
                else:
                    next_due = due if next_due is None else min(next_due, due)
            timeout = 3600.0 if next_due is None else max(0.01, next_due - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_reaper.wait(), timeout)

    def wake(self) -> None:
        self._wake_reaper.set()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        task.add_done_callback(_log_failure)
        return task

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


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        if not isinstance(exc, ApiError):
            log.error("background task failed: %r", exc, exc_info=exc)

