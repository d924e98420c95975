"""Dynamic micro-batching for one loaded model.

Concurrent requests put their items on one queue; a single worker takes as many as a
batch allows (by items and by characters), sorts them by length, runs them in the
device's encode thread (never on the event loop), and hands each request back exactly
its own rows. While a batch runs, the next one gathers, so under load batches fill by
themselves; when other clients were seen in the last batch the worker also waits a few
milliseconds for company. A lone client is never made to wait. The loaders then cut
each batch into forward passes by token length (``loaders/padding.py``).

The queue is bounded (``Limits.max_queue_items``, ``MODELCTL_MAX_QUEUE``): a request
that would overfill it is refused with 429 at once rather than left to wait.

Fair sharing: each request keeps its own queue, and a batch takes one input from each
waiting request in turn, so a one-sentence request is in the next batch even behind
thousands of another client's inputs. A request that is cancelled (its client went
away) leaves the queue at once: abandoned work holds up no one. A text counts towards
a batch's character bound only as far as the model reads it (its token limit, in
characters), so a long text that is truncated anyway does not take a batch of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from modelctl.errors import ServiceUnavailable, TooManyRequests

if TYPE_CHECKING:
    import numpy as np

    from modelctl.daemon.loaders.base import LoadedModel

MAX_BATCH_ITEMS = 128
MAX_BATCH_CHARS = 128 * 1024
MAX_WAIT_S = 0.003
MAX_QUEUE_ITEMS = 8192
# Characters a token takes at most, for the character bound of a truncated text: more
# than any tokenizer's average (~4), so only texts that are truncated anyway are capped.
CHARS_PER_TOKEN_BOUND = 16


class BatchMetrics(Protocol):
    """What a batcher reports (``metrics.Metrics`` is one); ``label`` is (model, device)."""

    def batch(self, label: tuple[str, str], items: int, jobs: int, seconds: float) -> None: ...

    def rejected(self, label: tuple[str, str]) -> None: ...


@dataclass(eq=False)
class _Job:
    kind: str  # "text" or "image"
    normalize: bool | None
    size: int
    future: asyncio.Future[tuple[np.ndarray, list[int]]]
    rows: list[np.ndarray | None] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    remaining: int = 0
    waiting: deque[_Item] = field(default_factory=deque)


@dataclass(eq=False)
class _Item:
    job: _Job
    index: int
    payload: Any
    length: int


class Batcher:
    def __init__(self, model: LoadedModel, executor: Executor, metrics: BatchMetrics, *,
                 label: tuple[str, str], max_items: int = MAX_BATCH_ITEMS,
                 max_chars: int = MAX_BATCH_CHARS, max_queue: int = MAX_QUEUE_ITEMS) -> None:
        self.model = model
        self.executor = executor
        self.metrics = metrics
        self.label = label
        self.max_items = max_items
        self.max_chars = max_chars
        self.max_queue = max_queue
        # Requests with inputs still waiting, in the order they arrived; the inputs wait
        # on their request's own deque (``_Job.waiting``).
        self._jobs: deque[_Job] = deque()
        self._queued = 0
        self._wakeup = asyncio.Event()
        self._closed = False
        self._last_batch_jobs = 0
        self._worker = asyncio.get_running_loop().create_task(self._run())

    @property
    def queued(self) -> int:
        return self._queued

    async def embed(self, kind: str, payloads: list[Any], normalize: bool | None, *,
                    max_queue: int | None = None) -> tuple[np.ndarray, list[int]]:
        """Vectors for ``payloads`` (texts, or RGB PIL images) in order, and token counts.

        ``max_queue`` (default: the batcher's) bounds the inputs waiting for a batch; a
        request that would pass it gets 429, unless nothing waits (a request bigger than
        the bound alone must still be served: it would never fit otherwise).
        """
        if self._closed:
            raise ServiceUnavailable(f"{self.label[0]} is being ejected; try again")
        limit = self.max_queue if max_queue is None else max_queue
        if self._queued and self._queued + len(payloads) > limit:
            self.metrics.rejected(self.label)
            raise TooManyRequests(
                f"{self.label[0]} on {self.label[1]} has {self._queued} inputs queued "
                f"(at most {limit}); retry shortly or send smaller batches")
        loop = asyncio.get_running_loop()
        job = _Job(kind, normalize, len(payloads), loop.create_future(),
                   rows=[None] * len(payloads), tokens=[0] * len(payloads),
                   remaining=len(payloads))
        cap = (self.model.max_tokens or 512) * CHARS_PER_TOKEN_BOUND
        for i, payload in enumerate(payloads):
            length = min(len(payload), cap) if kind == "text" else 1
            job.waiting.append(_Item(job, i, payload, length))
        self._jobs.append(job)
        self._queued += len(payloads)
        self._wakeup.set()
        try:
            return await asyncio.shield(job.future)
        except asyncio.CancelledError:
            self._withdraw(job)
            raise

    def _withdraw(self, job: _Job) -> None:
        """Drop what is left of a cancelled request (its inputs in a batch already run)."""
        if not job.future.done():
            job.future.cancel()
        self._queued -= len(job.waiting)
        job.waiting.clear()
        with contextlib.suppress(ValueError):
            self._jobs.remove(job)

    def close(self) -> None:
        self._closed = True
        self._worker.cancel()
        while self._jobs:
            job = self._jobs.popleft()
            job.waiting.clear()
            if not job.future.done():
                job.future.set_exception(
                    ServiceUnavailable(f"{self.label[0]} was ejected while queued"))
        self._queued = 0

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._jobs:
                if self._last_batch_jobs > 1 and self._queued < self.max_items:
                    # Others were here a moment ago: give their next requests a few
                    # milliseconds to arrive, and run them in one batch.
                    await asyncio.sleep(MAX_WAIT_S)
                batch = self._take()
                if batch:
                    await self._execute(batch)

    def _take(self) -> list[_Item]:
        """The next batch: one kind and normalize setting (the first waiting request's),
        one input from each waiting request in turn, within both bounds."""
        if not self._jobs:
            return []
        first = self._jobs[0]
        kind, normalize = first.kind, first.normalize
        sharing = [job for job in self._jobs
                   if job.kind == kind and job.normalize == normalize]
        batch: list[_Item] = []
        chars = 0
        full = False
        while not full and len(batch) < self.max_items:
            took = False
            for job in sharing:
                if not job.waiting:
                    continue
                item = job.waiting[0]
                if batch and chars + item.length > self.max_chars:
                    full = True
                    break
                batch.append(job.waiting.popleft())
                chars += item.length
                took = True
                if len(batch) >= self.max_items:
                    break
            if not took:
                break
        self._queued -= len(batch)
        for job in sharing:
            if not job.waiting:
                self._jobs.remove(job)
        if self._jobs and self._jobs[0] is first:
            self._jobs.rotate(-1)  # the next batch starts with the next request
        return batch

    async def _execute(self, batch: list[_Item]) -> None:
        jobs = {id(item.job): item.job for item in batch}
        self._last_batch_jobs = len(jobs)
        # Similar lengths side by side: less padding inside the model's own passes.
        ordered = sorted(batch, key=lambda it: it.length)
        kind, normalize = batch[0].job.kind, batch[0].job.normalize
        started = time.perf_counter()
        try:
            vectors, tokens = await asyncio.get_running_loop().run_in_executor(
                self.executor, self._encode, kind, [it.payload for it in ordered], normalize)
        except BaseException as exc:
            # Every request in the batch gets the error; on cancellation (close) too,
            # so none waits for a batch that will never be answered.
            error = exc if isinstance(exc, Exception) else ServiceUnavailable(
                f"{self.label[0]} was ejected while embedding")
            for job in jobs.values():
                if not job.future.done():
                    job.future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        self.metrics.batch(self.label, len(batch), len(jobs), time.perf_counter() - started)
        # Imported here: the daemon serves before it imports numpy (torch has by now).
        import numpy as np

        for item, row, count in zip(ordered, vectors, tokens, strict=True):
            job = item.job
            job.rows[item.index] = row
            job.tokens[item.index] = count
            job.remaining -= 1
            if job.remaining == 0 and not job.future.done():
                job.future.set_result((np.stack(job.rows), job.tokens))  # type: ignore[arg-type]

    def _encode(self, kind: str, payloads: list[Any], normalize: bool | None,
                ) -> tuple[np.ndarray, list[int]]:
        if kind == "text":
            return self.model.encode_texts(payloads, normalize)
        return self.model.encode_images(payloads, normalize), [0] * len(payloads)
