"""How many cores a cpu forward pass uses: the cores other processes leave free.

A per-host daemon shares its machine with the programs that call it. torch's intra-op
threads assume every core is theirs; when another process holds one, a pass split
over all cores waits at each layer for the thread that got no core, and throughput
falls far below what one thread alone would do (MiniLM, 2 cores, one core busy
elsewhere: 2 threads 133 sentences/s, 1 thread 268/s). So before each batch the cpu
encode thread sets torch's threads to the cores free of *other* processes' work;
``--threads``/``MODELCTL_THREADS`` pins the number instead.

Other work is read two ways, and the smaller wins. The machine's busy time less this
daemon's, over the last half second or more, says what others used *recently*; the
kernel's count of runnable tasks, read as the pass starts, says who wants a core *now*.
History alone takes a client that computed until it sent its request for a rival (it
is blocked on the answer while the pass runs, and a pass on one thread then runs at
half speed); the instant count alone flickers with every short-lived task. A process
that keeps a core busy shows in both. The daemon also starts
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
SETTLE_LOOKS, SETTLE_EVERY_S = 5, 0.002
T = TypeVar("T")


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cores_taken(others: float) -> int:
    # A core another process keeps more than a third busy is not ours to split a
    # pass over; rounding the other way costs little (one thread per free core).
    return int(others + 0.67)


def runnable_elsewhere(proc: str = "/proc") -> int | None:
    """Tasks of other processes runnable on the machine now (None: the platform won't say).

    ``/proc/loadavg``'s fourth field counts every runnable task, this daemon's own
    threads among them (the one asking, an event loop finishing a request); those are
    read from ``/proc/self/task`` and taken off.
    """
    try:
        with open(f"{proc}/loadavg", "rb") as f:
            running = int(f.read().split()[3].split(b"/")[0])
        ours = 0
        for tid in os.listdir(f"{proc}/self/task"):
            try:
                with open(f"{proc}/self/task/{tid}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue  # the thread ended meanwhile
            ours += stat[stat.rindex(b")") + 2:][:1] == b"R"
    except (OSError, IndexError, ValueError):
        return None
    return max(0, running - ours)


class ThreadGovernor:
    """Chooses intra-op threads from the cores free of other processes' load."""

    def __init__(self, pinned: int | None = None, cores: int | None = None, *,
                 busy_seconds: Callable[[], tuple[float, float]] | None = None,
                 others_now: Callable[[], int | None] = runnable_elsewhere,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        """``busy_seconds``: (the machine's busy cpu seconds, this process's), cumulative.

        ``others_now``: other processes' tasks runnable at this instant (None where
        the platform does not say).
        """
        self.pinned = pinned
        self.cores = cores or usable_cores()
        self._busy_seconds = busy_seconds or _busy_seconds(psutil.Process())
        self._others_now = others_now
        self._clock = clock
        self._lock = threading.Lock()
        self._sampled_at = 0.0
        self._system_busy, self._own_busy = self._busy_seconds()
        self._others_recently = 0.0
        self._confirmed = False  # others' tasks were still runnable after settling
        self._sleep = sleep
        self.applied: int | None = None

    def threads(self, *, settle: bool = False) -> int:
        """Threads for the next pass: pinned, or the cores others leave free.

        ``settle`` (the encode thread, never the event loop): when others look busy
        now, look again for a few milliseconds before giving a core up. A program's
        OpenMP workers spin for ~7 ms after its own pass ends (measured), and a client
        that encoded locally just before its request would otherwise cost the whole
        pass a core.
        """
        if self.pinned:
            return self.pinned
        now = self._clock()
        with self._lock:
            if now - self._sampled_at >= SAMPLE_EVERY_S:
                self._others_recently = self._sample(now)
                self._confirmed = False
            others = self._others_recently
        if _cores_taken(others):
            now_running = self._others_now()
            if now_running and settle and not self._confirmed:
                for _ in range(SETTLE_LOOKS):
                    self._sleep(SETTLE_EVERY_S)
                    now_running = min(now_running, self._others_now() or 0)
                    if not now_running:
                        break
                self._confirmed = bool(now_running)  # until the next sample
            if now_running is not None:
                others = min(others, now_running)
        return max(1, min(self.cores, self.cores - _cores_taken(others)))

    def _sample(self, now: float) -> float:
        """Cores' worth of other processes' work since the last sample."""
        elapsed = now - self._sampled_at if self._sampled_at else 0.0
        system, own = self._busy_seconds()
        busy = system - self._system_busy
        own_delta = own - self._own_busy
        self._sampled_at, self._system_busy, self._own_busy = now, system, own
        if elapsed <= 0:
            return self._others_recently
        return max(0.0, (busy - own_delta) / elapsed)

    def apply(self) -> None:
        """Set torch's threads for the passes about to run (call in the encode thread)."""
        chosen = self.threads(settle=True)
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
