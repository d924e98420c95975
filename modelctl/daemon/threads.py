"""How many cores a cpu forward pass uses: the cores other processes leave free.

A per-host daemon shares its machine with the programs that call it. torch's intra-op
threads assume every core is theirs; when another process holds one, a pass split
over all cores waits at each layer for the thread that got no core, and throughput
falls far below what one thread alone would do (MiniLM, 2 cores, one core busy
elsewhere: 2 threads 133 sentences/s, 1 thread 268/s). So before each batch the cpu
encode thread sets torch's threads to the cores free of *other* processes' work
(the machine's busy time less this daemon's), sampled at most every half second;
``--threads``/``MODELCTL_THREADS`` pins the number instead. The daemon also starts
OpenMP with ``OMP_WAIT_POLICY=PASSIVE`` (``config.set_compute_environment``): an idle
worker sleeps instead of spinning on a core someone else needs.

``torch.set_num_threads`` is process-wide; one encode thread per device runs the
passes, so setting it there, between batches, never changes a pass under way.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import psutil

log = logging.getLogger("modelctl.threads")

SAMPLE_EVERY_S = 0.5
T = TypeVar("T")


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class ThreadGovernor:
    """Chooses intra-op threads from the cores free of other processes' load."""

    def __init__(self, pinned: int | None = None, cores: int | None = None, *,
                 busy_seconds: Callable[[], tuple[float, float]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``busy_seconds``: (the machine's busy cpu seconds, this process's), cumulative."""
        self.pinned = pinned
        self.cores = cores or usable_cores()
        self._busy_seconds = busy_seconds or _busy_seconds(psutil.Process())
        self._clock = clock
        self._lock = threading.Lock()
        self._sampled_at = 0.0
        self._system_busy, self._own_busy = self._busy_seconds()
        self._choice = pinned or self.cores
        self.applied: int | None = None

    def threads(self) -> int:
        """Threads for the next pass (pinned, or sampled at most every half second)."""
        if self.pinned:
            return self.pinned
        now = self._clock()
        with self._lock:
            if now - self._sampled_at >= SAMPLE_EVERY_S:
                self._choice = self._sample(now)
            return self._choice

    def _sample(self, now: float) -> int:
        elapsed = now - self._sampled_at if self._sampled_at else 0.0
        system, own = self._busy_seconds()
        busy = system - self._system_busy
        own_delta = own - self._own_busy
        self._sampled_at, self._system_busy, self._own_busy = now, system, own
        if elapsed <= 0:
            return self._choice
        others = max(0.0, (busy - own_delta) / elapsed)  # cores' worth of other work
        # A core another process keeps more than a third busy is not ours to split a
        # pass over; rounding the other way costs little (one thread per free core).
        free = self.cores - int(others + 0.67)
        return max(1, min(self.cores, free))

    def apply(self) -> None:
        """Set torch's threads for the passes about to run (call in the encode thread)."""
        chosen = self.threads()
        if chosen != self.applied:
            import torch

            torch.set_num_threads(chosen)
            if self.applied is not None:
                log.info("cpu passes now use %d thread(s)", chosen)
            self.applied = chosen


def _busy_seconds(process: psutil.Process) -> Callable[[], tuple[float, float]]:
    def read() -> tuple[float, float]:
        machine, own = psutil.cpu_times(), process.cpu_times()
        busy = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        return float(busy), float(own.user + own.system)

    return read


class GovernedExecutor(ThreadPoolExecutor):
    """One encode thread that sets torch's threads before each job."""

    def __init__(self, governor: ThreadGovernor, name: str) -> None:
        super().__init__(1, thread_name_prefix=name)
        self.governor = governor

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        def governed() -> T:
            self.governor.apply()
            return fn(*args, **kwargs)

        return super().submit(governed)
