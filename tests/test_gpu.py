"""The cache on a GPU: one entry for cuda and cuda:0, memory that really comes back after
an eject (torch allocator and NVML), and budget eviction per GPU.

Marked ``gpu``: skipped without CUDA, run on a GPU machine by ``scripts/gpu-check``.
One daemon for the module, with ``MODELCTL_MAX_CUDA_MEMORY=1GB``; the open_clip model
here is about 380 MB, so two copies fit and a third evicts one.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelctl.errors import CacheManagementError
from modelctl.testing import MINILM, Daemon, cosine, make_tiny_clip, png_bytes, wide_clip_config

pytestmark = pytest.mark.gpu

BUDGET = 10**9


@pytest.fixture(scope="module")
def gpu_daemon() -> Iterator[Daemon]:
    with Daemon(env={"MODELCTL_MAX_CUDA_MEMORY": "1GB"}) as d:
        yield d


@pytest.fixture
def d(gpu_daemon: Daemon) -> Iterator[Daemon]:
    gpu_daemon.client.eject(all=True, force=True)
    yield gpu_daemon


@pytest.fixture(scope="module")
def wide_clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_tiny_clip(tmp_path_factory.mktemp("gpu-wide"), arch="gpu-test-wide",
                          config=wide_clip_config(768, 4))


def cuda0(d: Daemon) -> dict[str, Any]:
    """cuda:0 as the daemon reports it: torch_allocated (this daemon's allocator) and
    memory_used (NVML, the whole GPU)."""
    return next(g for g in d.client.devices()["cuda"] if g["index"] == 0)


def test_cuda_and_cuda0_are_one_entry(d: Daemon) -> None:
    first = d.client.load_model(MINILM, "cuda")
    again = d.client.load_model(MINILM, "CUDA:0")
    assert again["loaded_at"] == first["loaded_at"]
    [entry] = d.client.list_models()
    assert entry["device"] == "cuda:0" and entry["device_bytes"] > 20_000_000
    assert d.client.get_loaded_models() == {
        "models": [{"model_name": MINILM, "model_device": "cuda"}]}
    assert len(d.client.embed(MINILM, ["on the gpu"], device="cuda")[0]) == 384
    ejected = d.client.eject(MINILM, "cuda:0")["ejected"]
    assert [(e["name"], e["device"]) for e in ejected] == [(MINILM, "cuda:0")]
    assert d.client.list_models() == []


def test_eject_on_cuda_gives_the_memory_back(d: Daemon, wide_clip: dict[str, Any]) -> None:
    # Warm up first: the CUDA context and cuBLAS's workspace stay for the daemon's life
    # and are not the model's memory.
    d.client.load_model(MINILM, "cuda")
    d.client.embed(MINILM, ["warm up"], device="cuda")
    d.client.eject(MINILM)

    before = cuda0(d)
    entry = d.client.load_model("gpu-wide", "cuda", properties=wide_clip)
    loaded = cuda0(d)
    device_bytes = entry["device_bytes"]
    assert device_bytes == pytest.approx(entry["bytes"], rel=0.05)  # fp32 on the GPU
    assert loaded["torch_allocated"] - before["torch_allocated"] == device_bytes

    reply = d.client.eject("gpu-wide", "cuda")
    after = cuda0(d)
    [row] = reply["ejected"]
    assert row["device_bytes_freed"] == device_bytes
    assert reply["bytes_freed"] == row["device_bytes_freed"]
    assert after["torch_allocated"] == before["torch_allocated"], (before, loaded, after)
    dropped = loaded["memory_used"] - after["memory_used"]
    assert dropped >= 0.9 * device_bytes, (before, loaded, after, device_bytes)


def test_budget_eviction_on_cuda(d: Daemon, wide_clip: dict[str, Any]) -> None:
    c = d.client
    assert cuda0(d)["budget"] == BUDGET
    families = {m.name: m for m in text_string_to_metric_families(c.metrics())}
    budgets = {s.labels["device"]: s.value for s in families["modelctl_budget_bytes"].samples}
    assert budgets["cuda:0"] == BUDGET

    c.load_model("gpu-a", "cuda", properties=wide_clip)
    c.load_model("gpu-b", "cuda", properties=wide_clip)
    c.load_model("gpu-c", "cuda:0", properties=wide_clip)  # gpu-a is the LRU: it goes
    models = c.list_models()
    assert sorted(m["name"] for m in models) == ["gpu-b", "gpu-c"]
    assert sum(m["device_bytes"] for m in models) <= BUDGET

    c.update_model("gpu-b", pin=True)
    c.update_model("gpu-c", pin=True)
    with pytest.raises(CacheManagementError) as info:
        c.load_model("gpu-a", "cuda", properties=wide_clip)
    assert "gpu-b" in info.value.message and "pinned" in info.value.message
    assert sorted(m["name"] for m in c.list_models()) == ["gpu-b", "gpu-c"]


def test_fp16_on_cuda_for_sbert_and_open_clip(d: Daemon, wide_clip: dict[str, Any]) -> None:
    """Marqo's ``fp16/*``: half the device memory, vectors within 0.999 of fp32."""
    texts = ["a photo of a red square", "the weather is nice today"]
    fp32 = d.client.load_model(MINILM, "cuda")
    reference = d.client.embed(MINILM, texts, device="cuda", precision="fp32")
    half = d.client.load_model(MINILM, "cuda", precision="fp16")
    assert (half["engine"], half["precision"]) == ("torch", "fp16")
    assert half["bytes"] < 0.6 * fp32["bytes"]
    assert half["accuracy"]["min_cosine"] >= 0.999
    vectors = d.client.embed(MINILM, texts, device="cuda", precision="fp16")
    assert min(cosine(a, b) for a, b in zip(vectors, reference, strict=True)) >= 0.999
    d.client.eject(MINILM)
    clip = d.client.load_model("gpu-half-clip", "cuda", properties=wide_clip,
                               precision="fp16")
    assert clip["precision"] == "fp16" and clip["accuracy"]["min_cosine"] >= 0.99
    image = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    rows = d.client.embed("gpu-half-clip", [texts[0], image], device="cuda")
    assert [len(r) for r in rows] == [clip["dimensions"]] * 2
    assert all(math.isfinite(x) for r in rows for x in r)
