"""``POST /v1/embeddings`` and ``modelctl embed``: batching that keeps every request's
vectors its own, a bounded queue, both encodings, normalisation, truncation and limits.

Vectors are compared with an in-process ``SentenceTransformer.encode`` of the same texts.
"""

from __future__ import annotations

import base64
import json
import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelctl.client import Client
from modelctl.config import Limits, Settings
from modelctl.errors import InvalidArgument
from modelctl.testing import MINILM, Daemon, minilm_path

_WORDS = ("cache daemon model vector memory sentence river night coffee window garden "
          "music quick brown fox jumps lazy dog client server batch token").split()


def texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 40)))
            for _ in range(count)]


@pytest.fixture
def minilm(daemon: Daemon) -> Daemon:
    """The shared daemon with MiniLM loaded on cpu (a no-op when it already is)."""
    daemon.client.load_model(MINILM, "cpu")
    return daemon


def assert_same_vectors(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    cos = np.sum(got * want, axis=1) / (np.linalg.norm(got, axis=1)
                                        * np.linalg.norm(want, axis=1))
    assert float(cos.min()) > 0.9999, cos


def vectors(reply: dict[str, Any]) -> np.ndarray:
    """The matrix of an embeddings reply, in either encoding; checks index order."""
    assert reply["object"] == "list"
    assert [item["index"] for item in reply["data"]] == list(range(len(reply["data"])))
    rows = []
    for item in reply["data"]:
        assert item["object"] == "embedding"
        value = item["embedding"]
        rows.append(np.frombuffer(base64.b64decode(value), "<f4") if isinstance(value, str)
                    else np.asarray(value, np.float32))
    return np.stack(rows)


def model_calls(client: Client) -> float:
    for line in client.metrics().splitlines():
        if line.startswith("modelctl_model_calls_total{") and f'model="{MINILM}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_concurrent_requests_of_mixed_sizes_each_get_their_own_vectors(
        minilm: Daemon, minilm_reference: Any) -> None:
    rng = random.Random(7)
    requests = [texts(rng.choice([1, 1, 2, 3, 8, 17, 33]), seed) for seed in range(40)]
    clients = [minilm.client, minilm.http_client()]

    def send(i: int) -> np.ndarray:
        # Both encodings, over the socket and over TCP, all interleaved in the batches.
        client = clients[1 if i % 3 == 0 else 0]
        reply = client.embeddings(MINILM, requests[i],
                                  encoding_format="base64" if i % 2 else "float")
        assert reply["model"] == MINILM
        return vectors(reply)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(send, range(len(requests))))
    everything = [t for request in requests for t in request]
    want = minilm_reference.encode(everything, batch_size=32)
    start = 0
    for request, got in zip(requests, results, strict=True):
        assert_same_vectors(got, want[start:start + len(request)])
        start += len(request)


def test_concurrent_single_text_requests_share_model_calls(minilm: Daemon,
                                                           minilm_reference: Any) -> None:
    sentences = texts(32, seed=100)
    before = model_calls(minilm.client)
    barrier = threading.Barrier(32)

    def send(text: str) -> np.ndarray:
        barrier.wait()
        return vectors(minilm.client.embeddings(MINILM, text))

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(send, sentences))
    calls = model_calls(minilm.client) - before
    assert 1 <= calls < 32, f"{calls} model calls for 32 requests: nothing was batched"
    assert_same_vectors(np.concatenate(results), minilm_reference.encode(sentences))


def test_float_and_base64_carry_the_same_float32s(minilm: Daemon) -> None:
    sentences = texts(5, seed=3)
    floats = minilm.client.embeddings(MINILM, sentences)
    packed = minilm.client.embeddings(MINILM, sentences, encoding_format="base64")
    assert all(isinstance(item["embedding"], list) for item in floats["data"])
    assert all(isinstance(item["embedding"], str) for item in packed["data"])
    # Float text is written with 9 significant digits: exactly the float32 values again.
    assert np.array_equal(vectors(floats), vectors(packed))
    assert floats["usage"] == packed["usage"]


def test_normalize_follows_the_model_unless_asked(minilm: Daemon, minilm_reference: Any) -> None:
    sentence = ["The daemon keeps one copy of each model in memory."]

    def norm(**kwargs: Any) -> float:
        return float(np.linalg.norm(vectors(minilm.client.embeddings(MINILM, sentence,
                                                                      **kwargs))[0]))

    # all-MiniLM-L6-v2 ends in a Normalize module: unit vectors unless told otherwise.
    assert norm() == pytest.approx(1.0, abs=1e-5)
    assert norm(normalize=True) == pytest.approx(1.0, abs=1e-5)
    raw = norm(normalize=False)
    assert abs(raw - 1.0) > 0.1  # the pooled vector, before the model's Normalize
    unit = vectors(minilm.client.embeddings(MINILM, sentence, normalize=False))[0] / raw
    assert_same_vectors(unit[None], minilm_reference.encode(sentence))


def test_long_texts_are_truncated_as_the_library_does_and_usage_counts_tokens(
        minilm: Daemon, minilm_reference: Any) -> None:
    long_text = " ".join(texts(60, seed=5))  # ~1200 words, far past 256 tokens
    short = ["hello world", "a cat"]
    reply = minilm.client.embeddings(MINILM, [long_text, *short])
    assert_same_vectors(vectors(reply), minilm_reference.encode([long_text, *short]))
    # Tokens used, special ones included: 256 of the long text (MiniLM's max_seq_length),
    # then [CLS] hello world [SEP] and [CLS] a cat [SEP].
    assert minilm_reference.max_seq_length == 256
    want = 256 + 4 + 4
    assert reply["usage"] == {"prompt_tokens": want, "total_tokens": want}


def test_request_limits_answer_with_the_contract_body(minilm: Daemon) -> None:
    limits = Limits()
    cases = [
        ({"model": MINILM, "input": ["a"] * (limits.max_batch_items + 1)}, 413,
         "payload_too_large"),
        ({"model": MINILM, "input": ["x" * (limits.max_text_chars + 1)]}, 413,
         "payload_too_large"),
        ({"model": MINILM, "input": []}, 400, "invalid_argument"),
        ({"model": MINILM, "input": ["data:image/png;base64,iVBORw0KGgo="]}, 400,
         "invalid_argument"),  # an image for a text-only model
        ({"model": MINILM, "input": ["a"], "encoding_format": "float16"}, 422,
         "unprocessable_entity"),
    ]
    for body, status, code in cases:
        got, headers, data = minilm.client.request_raw("POST", "/v1/embeddings", body=body)
        assert (got, headers["content-type"]) == (status, "application/json"), data[:200]
        reply = json.loads(data)
        assert reply["code"] == code and reply["type"] == "invalid_request"
        assert "message" in reply or "detail" in reply


def test_image_over_the_byte_limit_is_413_before_decoding(daemon: Daemon,
                                                          tiny_clip: dict[str, Any]) -> None:
    daemon.client.load_model(tiny_clip["name"], "cpu", properties=tiny_clip)
    try:
        too_big = base64.b64encode(b"\0" * (Limits().max_image_bytes + 3)).decode()
        status, _, data = daemon.client.request_raw("POST", "/v1/embeddings", body={
            "model": tiny_clip["name"], "input": [f"data:image/png;base64,{too_big}"]})
        reply = json.loads(data)
        assert (status, reply["code"]) == (413, "payload_too_large")
        assert "input 0" in reply["message"]
    finally:
        daemon.client.eject(tiny_clip["name"])


@pytest.fixture(scope="module")
def small_queue() -> Iterator[Daemon]:
    """A daemon whose batcher lets one input wait: the second waiting request is refused."""
    with Daemon(env={"MODELCTL_MAX_QUEUE": "1"}) as d:
        d.client.load_model(MINILM, "cpu")
        yield d


def test_full_queue_answers_429_and_the_daemon_recovers(small_queue: Daemon,
                                                        minilm_reference: Any) -> None:
    batch = texts(64, seed=11)  # each request keeps the model busy for a while
    barrier = threading.Barrier(12)

    def send(_: int) -> tuple[int, bytes]:
        barrier.wait()
        status, _, data = small_queue.client.request_raw(
            "POST", "/v1/embeddings", body={"model": MINILM, "input": batch,
                                            "encoding_format": "base64"})
        return status, data

    with ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(send, range(12)))
    statuses = sorted(status for status, _ in replies)
    assert 429 in statuses and 200 in statuses and set(statuses) == {200, 429}, statuses
    want = minilm_reference.encode(batch)
    for status, data in replies:
        body = json.loads(data)
        if status == 429:
            assert body["code"] == "too_many_requests" and body["type"] == "invalid_request"
            assert body["link"] is None and "queued" in body["message"]
        else:
            assert_same_vectors(vectors(body), want)
    # Recovered: the queue drained, and the next requests are served.
    for _ in range(3):
        assert_same_vectors(vectors(small_queue.client.embeddings(MINILM, batch[:3])),
                            want[:3])
    assert "modelctl_queue_rejections_total" in small_queue.client.metrics()


def test_max_queue_comes_from_the_environment() -> None:
    assert Settings.from_env({"MODELCTL_MAX_QUEUE": "3"}).limits.max_queue_items == 3
    assert Settings.from_env({}).limits.max_queue_items == Limits().max_queue_items
    for bad in ("many", "0"):
        with pytest.raises(InvalidArgument, match="MODELCTL_MAX_QUEUE"):
            Settings.from_env({"MODELCTL_MAX_QUEUE": bad})


def test_cli_embed_stdin_to_npy_matches_in_process_encode(minilm: Daemon, minilm_reference: Any,
                                                          tmp_path: Path) -> None:
    lines = texts(150, seed=21) + ["Ünïcödé text, with — punctuation!"]
    stdin = "\n".join(lines[:75]) + "\n\n   \n" + "\n".join(lines[75:]) + "\n"  # blanks skipped
    out = tmp_path / "vectors.npy"
    proc = minilm.cli("embed", MINILM, "-", "--output", str(out), "--batch-size", "64",
                      input=stdin, check=True)
    assert proc.stdout == ""  # the matrix goes to the file; the summary to stderr
    matrix = np.load(out)
    assert matrix.dtype == np.float32 and matrix.shape == (len(lines), 384)
    assert_same_vectors(matrix, minilm_reference.encode(lines))


def test_hf_family_pools_and_normalizes_like_the_library(daemon: Daemon,
                                                         minilm_reference: Any) -> None:
    # MiniLM's weights as a plain transformers model plus mean pooling (Marqo's "hf"
    # family, like e5): unit vectors by default, the same ones its sbert modules make.
    name = "minilm-as-hf"
    daemon.client.load_model(name, "cpu", properties={
        "type": "hf", "localpath": minilm_path(), "dimensions": 384})
    try:
        sentences = texts(40, seed=31)
        reply = daemon.client.embeddings(name, sentences)
        got = vectors(reply)
        assert_same_vectors(got, minilm_reference.encode(sentences))
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        want = sum(len(ids) for ids in minilm_reference.tokenizer(sentences)["input_ids"])
        assert reply["usage"]["prompt_tokens"] == want
        raw = vectors(daemon.client.embeddings(name, sentences[:3], normalize=False))
        assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-2)
        assert_same_vectors(raw, got[:3])
    finally:
        daemon.client.eject(name)
