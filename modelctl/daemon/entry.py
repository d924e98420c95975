"""One model in the cache on one device, in one variant, and the states it goes through.

An entry is data that the cache (cache.py) owns and changes, always on the event loop;
budgets, metrics and the routes read it. Its life::

    LOADING ──load done──► READY ──eject, eviction, expiry──► EJECTING ──freed──► (gone)
       └──load failed──► (gone)

A new lease is granted only while READY; an entry is listed (``ls``) until its memory
is back, EJECTING included.
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from modelctl.units import iso_from_timestamp

if TYPE_CHECKING:
    from modelctl.daemon.batcher import Batcher
    from modelctl.daemon.loaders.base import LoadedModel
    from modelctl.registry import ModelSpec
    from modelctl.wire import CacheEntry, EjectedModel

Key = tuple[str, str, str, str]  # (canonical name, device, engine, precision)


class EntryState(enum.StrEnum):
    """An entry's state; its value is what ``/v1/models`` and ``/metrics`` show."""

    LOADING = "loading"
    READY = "ready"
    EJECTING = "ejecting"


@dataclass(eq=False)
class Entry:
    name: str
    spec: ModelSpec
    device: str
    pinned: bool
    keep_alive: float | None
    state: EntryState = EntryState.LOADING
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
    ejection: asyncio.Task[EjectedModel] | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def key(self) -> Key:
        return (self.spec.name, self.device, self.spec.engine, self.spec.precision)

    @property
    def held_bytes(self) -> int:
        """What this entry counts against its device's budget: measured once loaded
        (the allocator's delta on cuda), estimated before."""
        for measured in ((self.device_bytes, self.bytes) if self.device.startswith("cuda")
                         else (self.bytes,)):
            if measured is not None:
                return measured
        return self.estimate or 0

    @property
    def expires_at(self) -> float | None:
        """When keep-alive ejects this model; ``None`` while pinned, in use, or kept
        forever (the clock starts again when the last request returns)."""
        if self.pinned or self.keep_alive is None or self.state != EntryState.READY \
                or self.leases:
            return None
        return self.last_used + self.keep_alive

    def describe(self) -> CacheEntry:
        model = self.model
        spec = self.spec
        return {
            "name": self.name, "canonical_name": spec.name, "device": self.device,
            "family": spec.family, "source": spec.source, "engine": spec.engine,
            "marqo_engine": spec.marqo_engine,
            # What runs here: Marqo's fp16 on cpu was made fp32 before the load (a warning).
            "precision": spec.precision,
            "accuracy": getattr(model, "accuracy", None), "warnings": self.warnings,
            "onnx": getattr(model, "onnx", None),
            "custom": spec.custom, "properties": spec.properties,
            "dimensions": model.dimensions if model is not None else self.spec.dimensions,
            "modalities": list(self.spec.modalities), "state": self.state.value,
            "bytes": self.bytes, "device_bytes": self.device_bytes,
            "loaded_at": iso_from_timestamp(self.loaded_at),
            "last_used_at": iso_from_timestamp(self.last_used if self.loaded_at else None),
            "load_seconds": self.load_seconds, "requests": self.requests,
            "in_flight": self.leases, "pinned": self.pinned, "keep_alive": self.keep_alive,
            "expires_at": iso_from_timestamp(self.expires_at),
        }
