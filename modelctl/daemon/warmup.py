"""What the daemon imports once it is serving, in order: its web app, then torch.

A daemon thread, not the loop's executor: a daemon stopped while torch is still
importing exits at once instead of waiting seconds for the import. Importing holds the
GIL for long stretches; at the default 5 ms switch interval every step of a request the
loop serves meanwhile waits that long for it (the first `ls` after `daemon start` took
0.6 s instead of 0.15 s), so the thread lowers the interval while it works.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

IMPORT_SWITCH_INTERVAL_S = 0.0002


class ImportThread:
    """Slow imports, run one after another in a daemon thread once started; each job's
    result comes back as a future of the loop that submitted it.

    The thread runs while jobs wait and ends when none is left; ``start`` starts
    another for jobs submitted since.
    """

    def __init__(self, name: str = "imports") -> None:
        self.name = name
        self._jobs: deque[tuple[Callable[[], Any], asyncio.AbstractEventLoop,
                                asyncio.Future[Any]]] = deque()
        self._lock = threading.Lock()
        self._running = False

    def submit(self, work: Callable[[], T]) -> asyncio.Future[T]:
        """Queue ``work()``, to run after every job submitted before it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            self._jobs.append((work, loop, future))
        return future

    def start(self) -> None:
        """Run the queued jobs (a no-op while the thread already runs them)."""
        with self._lock:
            if self._jobs and not self._running:
                self._running = True
                threading.Thread(target=self._work, name=self.name, daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    self._running = False
                    return
                work, loop, future = self._jobs.popleft()
            result: Any = None
            error: BaseException | None = None
            interval = sys.getswitchinterval()
            sys.setswitchinterval(IMPORT_SWITCH_INTERVAL_S)
            try:
                result = work()
            except BaseException as exc:  # reported through the future
                error = exc
            finally:
                sys.setswitchinterval(interval)
            with contextlib.suppress(RuntimeError):  # the loop closed first: we are exiting
                loop.call_soon_threadsafe(_settle, future, result, error)
            del result  # the loop holds it now, through the future


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if not future.done():
        future.set_result(result) if error is None else future.set_exception(error)
