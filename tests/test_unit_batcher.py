"""The batcher on a stub model, in one process: no daemon, no torch.

``Recorder`` is a real ``LoadedModel`` whose encode writes each input's identity into its
vector and records every batch it is given, so the tests can check that concurrent
requests each get exactly their own rows, in order, that batches respect their bounds,
and that a full queue is refused with 429.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from modelctl.daemon.batcher import Batcher
from modelctl.daemon.loaders import ModelSpec
from modelctl.daemon.loaders.base import LoadedModel
from modelctl.daemon.metrics import Metrics
from modelctl.errors import InvalidArgument, ServiceUnavailable, TooManyRequests

LABEL = ("stub", "cpu")


class Recorder(LoadedModel):
    """Vectors ``[job, index, len(text), normalize]`` for texts ``"job:index:padding"``.

    ``gate``, when given, holds every encode until it is set, so a test can fill the
    queue behind a batch in progress.
    """

    def __init__(self, gate: threading.Event | None = None) -> None:
        super().__init__(ModelSpec("stub", "sbert", 4, "stub"), "cpu")
        self.gate = gate
        self.started = threading.Event()
        self.batches: list[tuple[list[str], bool | None]] = []

    @property
    def dimensions(self) -> int:
        return 4

    def modules(self) -> list[Any]:
        return []

    def encode_texts(self, texts: list[str], normalize: bool | None,
                     ) -> tuple[np.ndarray, list[int]]:
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(30), "the test never opened the gate"
        self.batches.append((list(texts), normalize))
        if any(t.startswith("fail") for t in texts):
            raise InvalidArgument("this batch cannot be embedded")
        rows = [[float(t.split(":")[0]), float(t.split(":")[1]), float(len(t)),
                 float(bool(normalize))] for t in texts]
        return np.asarray(rows, dtype=np.float32), [len(t) for t in texts]


def texts(job: int, n: int, pad: int = 0) -> list[str]:
    return [f"{job}:{i}:" + "x" * (pad or i) for i in range(n)]


def run(body: Callable[[ThreadPoolExecutor, Metrics], Awaitable[None]]) -> None:
    with ThreadPoolExecutor(1) as pool:
        asyncio.run(asyncio.wait_for(body(pool, Metrics()), 60))


async def until(flag: threading.Event) -> None:
    deadline = time.monotonic() + 30
    while not flag.is_set():
        assert time.monotonic() < deadline, "the batch never started"
        await asyncio.sleep(0.001)


def check_rows(job: int, payloads: list[str], got: tuple[np.ndarray, list[int]],
               normalize: bool | None = None) -> None:
    vectors, tokens = got
    assert vectors.shape == (len(payloads), 4)
    assert vectors[:, 0].tolist() == [float(job)] * len(payloads)
    assert vectors[:, 1].tolist() == [float(i) for i in range(len(payloads))]
    assert vectors[:, 2].tolist() == [float(len(p)) for p in payloads]
    assert vectors[:, 3].tolist() == [float(bool(normalize))] * len(payloads)
    assert tokens == [len(p) for p in payloads]


def test_concurrent_requests_each_get_exactly_their_own_rows() -> None:
    model = Recorder()

    async def body(pool: ThreadPoolExecutor, metrics: Metrics) -> None:
        batcher = Batcher(model, pool, metrics, label=LABEL, max_items=16)
        jobs = {job: texts(job, 1 + job % 5) for job in range(12)}
        results = await asyncio.gather(*(batcher.embed("text", jobs[j], None) for j in jobs))
        for job, got in zip(jobs, results, strict=True):
            check_rows(job, jobs[job], got)
        batcher.close()

    run(body)
    # Lengths vary inside a batch; the model sees each batch sorted by length.
    for batch, _ in model.batches:
        assert [len(t) for t in batch] == sorted(len(t) for t in batch)


def test_a_big_request_is_split_by_items_and_by_characters() -> None:
    model = Recorder()

    async def body(pool: ThreadPoolExecutor, metrics: Metrics) -> None:
        by_items = Batcher(model, pool, metrics, label=LABEL, max_items=4)
        payloads = texts(1, 10)
        check_rows(1, payloads, await by_items.embed("text", payloads, None))
        assert [len(b) for b, _ in model.batches] == [4, 4, 2]
        by_items.close()

        model.batches.clear()
        by_chars = Batcher(model, pool, metrics, label=LABEL, max_chars=250)
        long = texts(2, 5, pad=100)  # ~104 characters each: two per batch
        check_rows(2, long, await by_chars.embed("text", long, None))
        assert [len(b) for b, _ in model.batches] == [2, 2, 1]
        # One input longer than the bound alone still goes through, in a batch of its own.
        model.batches.clear()
        huge = texts(3, 1, pad=1000)
        check_rows(3, huge, await by_chars.embed("text", huge, None))
        assert [len(b) for b, _ in model.batches] == [1]
        by_chars.close()

    run(body)


def test_requests_with_different_settings_never_share_a_batch() -> None:
    gate = threading.Event()
    model = Recorder(gate)

    async def body(pool: ThreadPoolExecutor, metrics: Metrics) -> None:
        batcher = Batcher(model, pool, metrics, label=LABEL)
        first = asyncio.ensure_future(batcher.embed("text", texts(0, 1), None))
        await until(model.started)
        # Queued behind the running batch, interleaved: True, False, True, None.
        waiting = [asyncio.ensure_future(batcher.embed("text", texts(job, 3), normalize))
                   for job, normalize in ((1, True), (2, False), (3, True), (4, None))]
        await asyncio.sleep(0.01)
        gate.set()
        check_rows(0, texts(0, 1), await first)
        for (job, normalize), fut in zip(((1, True), (2, False), (3, True), (4, None)),
                                         waiting, strict=True):
            check_rows(job, texts(job, 3), await fut, normalize)
        batcher.close()

    run(body)
    for batch, normalize in model.batches:
        jobs = {int(t.split(":")[0]) for t in batch}
        expected = {1: True, 2: False, 3: True, 4: None, 0: None}
        assert {expected[j] for j in jobs} == {normalize}, (batch, normalize)
    # The two normalize=True requests were free to share one batch, and did.
    assert any({1, 3} <= {int(t.split(":")[0]) for t in b} for b, _ in model.batches)


def test_a_full_queue_refuses_with_429_and_a_lone_big_request_is_served() -> None:
    gate = threading.Event()
    model = Recorder(gate)

    async def body(pool: ThreadPoolExecutor, metrics: Metrics) -> None:
        batcher = Batcher(model, pool, metrics, label=LABEL, max_queue=5)
        running = asyncio.ensure_future(batcher.embed("text", texts(0, 1), None))
        await until(model.started)
        queued = asyncio.ensure_future(batcher.embed("text", texts(1, 3), None))
        await asyncio.sleep(0)
        with pytest.raises(TooManyRequests) as info:
            await batcher.embed("text", texts(2, 3), None)  # 3 queued + 3 > 5
        assert info.value.status == 429 and "3 inputs queued" in info.value.message
        assert metrics.registry.get_sample_value(
            "modelctl_queue_rejections_total", {"model": "stub", "device": "cpu"}) == 1
        # A per-call bound overrides the batcher's.
        with pytest.raises(TooManyRequests):
            await batcher.embed("text", texts(2, 1), None, max_queue=3)
        gate.set()
        check_rows(0, texts(0, 1), await running)
        check_rows(1, texts(1, 3), await queued)
        # Nothing waits now: a request bigger than the bound alone is still served.
        check_rows(4, texts(4, 9), await batcher.embed("text", texts(4, 9), None))
        batcher.close()

    run(body)


def test_an_encode_error_reaches_every_request_in_the_batch_and_only_those() -> None:
    gate = threading.Event()
    model = Recorder(gate)

    async def body(pool: ThreadPoolExecutor, metrics: Metrics) -> None:
        batcher = Batcher(model, pool, metrics, label=LABEL)
        first = asyncio.ensure_future(batcher.embed("text", texts(0, 1), True))
        await until(model.started)
        bad = asyncio.ensure_future(batcher.embed("text", ["fail:0:"], None))
        good = asyncio.ensure_future(batcher.embed("text", texts(5, 2), None))
        other = asyncio.ensure_future(batcher.embed("text", texts(6, 2), False))
        await asyncio.sleep(0.01)
        gate.set()
        await first
        with pytest.raises(InvalidArgument):
            await bad
        with pytest.raises(InvalidArgument):  # batched with the bad input
            await good
        check_rows(6, texts(6, 2), await other, False)  # another batch: unaffected
        # Images on a text-only model: the model's own error, as the loaders raise it.
        with pytest.raises(InvalidArgument, match="text only"):
            await batcher.embed("image", [object()], None)
        batcher.close()

    run(body)


def test_close_fails_queued_requests_and_refuses_new_ones() -> None:
    gate = threading.Event()
    model = Recorder(gate)

    async def body(pool: ThreadPoolExecutor, metrics: Metrics) -> None:
        batcher = Batcher(model, pool, metrics, label=LABEL)
        running = asyncio.ensure_future(batcher.embed("text", texts(0, 1), None))
        await until(model.started)
        queued = asyncio.ensure_future(batcher.embed("text", texts(1, 2), None))
        await asyncio.sleep(0)
        batcher.close()
        for fut in (running, queued):
            with pytest.raises(ServiceUnavailable):
                await fut
        with pytest.raises(ServiceUnavailable, match="being ejected"):
            await batcher.embed("text", texts(2, 1), None)
        gate.set()

    run(body)
