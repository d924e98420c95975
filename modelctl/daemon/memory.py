"""Handing a model's memory back, and measuring what came back.

Frees run one at a time (a lock): two models freed side by side would each see the
other's RSS drop and both report it.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import threading
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from modelctl.daemon.budget import Budgets
    from modelctl.daemon.loaders.base import LoadedModel


class Reclaimer:
    def __init__(self, budgets: Budgets) -> None:
        self.budgets = budgets
        self._lock = threading.Lock()
        self._process = psutil.Process()

    def free(self, holder: list[LoadedModel], device: str) -> tuple[int, int | None]:
        """Drop the models in ``holder`` and hand their memory back to the OS or driver;
        return (RSS freed, allocator bytes freed on cuda, else ``None``).

        Blocking (cuda synchronises, the collector runs): call it from a worker thread.
        """
        with self._lock:
            rss_before = self._process.memory_info().rss
            allocated_before = self.budgets.allocated(device)
            while holder:
                model = holder.pop()
                model.release()  # drops the tensors even if something still holds the object
                del model
            # Modules hold reference cycles (hooks, parent links): collect them now, not
            # at some later allocation.
            gc.collect()
            self.budgets.release_cached(device)
            # glibc keeps freed heap pages (and whole arenas of worker threads) mapped;
            # malloc_trim hands them back, on cuda too (a model passes through host memory).
            malloc_trim()
            rss_after = self._process.memory_info().rss
            allocated_after = self.budgets.allocated(device)
        freed_device = (allocated_before - allocated_after
                        if allocated_before is not None and allocated_after is not None
                        else None)
        return max(0, rss_before - rss_after), freed_device


def malloc_trim() -> None:
    """Give freed heap pages back to the OS (glibc keeps them otherwise)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
