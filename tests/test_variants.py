"""Model variants through the real daemon on cpu: (engine, precision) per load.

The shared daemon, its ONNX cache in its temp runtime dir. Vectors are
compared with sentence-transformers' own fp32 ``encode`` in this process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelctl.daemon.loaders.texts import CALIBRATION_TEXTS, PROBE_TEXTS
from modelctl.errors import HardwareCompatibilityError, InvalidArgument, ModelNotInCache
from modelctl.testing import Daemon

MINILM = "all-MiniLM-L6-v2"
TEXTS = [
    "The weather is lovely today.",
    "A man is eating a piece of bread.",
    "Quarterly revenue rose by eight percent on strong demand.",
    "How do I change the battery in my smoke detector?",
    "Two dogs play fetch in a sunny park near the river.",
    "The central bank held interest rates steady this month.",
    "best noise cancelling headphones for travel",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
    # Short and odd ones, where int8 loses most; none is a probe or calibration text.
    "yes",
    "Danke schön!",
    "HTTP 404 page not found",
    "for x in xs: total += x",
]
# Worst cosine to fp32 each variant must keep (int8 trades the most).
BOUNDS = {("torch", "bf16"): 0.999, ("onnx", "fp32"): 0.9999, ("onnx", "int8"): 0.99}


@pytest.fixture(scope="module")
def reference(minilm_reference: Any) -> np.ndarray:
    return np.asarray(minilm_reference.encode(TEXTS, convert_to_numpy=True), dtype=np.float64)


@pytest.fixture
def v(clean_daemon: Daemon) -> Daemon:
    """The shared daemon, with an empty cache; its ONNX exports go to its runtime dir."""
    return clean_daemon


def _worst(reference: np.ndarray, vectors: list[list[float]]) -> float:
    got = np.asarray(vectors, dtype=np.float64)
    cos = (got * reference).sum(1) / (np.linalg.norm(got, axis=1)
                                      * np.linalg.norm(reference, axis=1))
    return float(cos.min())


def _variants(entries: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(e["engine"], e["precision"]) for e in entries}


@pytest.mark.parametrize(("engine", "precision"), sorted(BOUNDS))
def test_variant_loads_embeds_within_bounds_and_ejects(
        v: Daemon, reference: np.ndarray, engine: str, precision: str) -> None:
    entry = v.client.load_model(MINILM, "cpu", precision=precision, engine=engine)
    assert (entry["engine"], entry["precision"], entry["state"]) == (engine, precision, "ready")
    bound = BOUNDS[(engine, precision)]
    assert entry["accuracy"]["min_cosine"] >= bound - 0.005  # the probe set, at load
    assert entry["accuracy"]["mean_cosine"] >= entry["accuracy"]["min_cosine"]
    vectors = v.client.embed(MINILM, TEXTS, device="cpu", precision=precision, engine=engine)
    assert len(vectors) == len(TEXTS) and len(vectors[0]) == 384
    assert _worst(reference, vectors) >= bound
    # Named by model alone, the one variant loaded answers (no second load).
    assert _worst(reference[:2], v.client.embed(MINILM, TEXTS[:2])) >= bound
    assert len(v.client.list_models()) == 1
    ejected = v.client.eject(MINILM, "cpu", precision=precision, engine=engine)["ejected"]
    assert [(e["engine"], e["precision"]) for e in ejected] == [(engine, precision)]
    assert v.client.list_models() == []


def test_int8_keeps_close_to_in_process_fp32(v: Daemon, reference: np.ndarray) -> None:
    """int8 on the probe set at load, and on texts it was neither probed nor calibrated
    on, alone and batched: worst cosine to sentence-transformers' fp32 >= 0.99."""
    assert not set(TEXTS) & (set(PROBE_TEXTS) | set(CALIBRATION_TEXTS))
    entry = v.client.load_model(MINILM, "cpu", precision="int8")
    assert entry["accuracy"]["min_cosine"] >= 0.99
    assert entry["accuracy"]["mean_cosine"] >= 0.995
    batched = v.client.embed(MINILM, TEXTS, precision="int8")
    assert _worst(reference, batched) >= 0.99
    alone = [v.client.embed(MINILM, [text], precision="int8")[0] for text in TEXTS[-4:]]
    assert _worst(reference[-4:], alone) >= 0.99


def test_variant_bytes_reflect_precision(v: Daemon) -> None:
    fp32 = v.client.load_model(MINILM, "cpu")
    bf16 = v.client.load_model(MINILM, "cpu", precision="bf16")
    int8 = v.client.load_model(MINILM, "cpu", precision="int8")
    assert fp32["accuracy"] is None  # the reference itself: nothing was traded
    assert bf16["bytes"] < 0.6 * fp32["bytes"]
    assert int8["engine"] == "onnx"  # int8 alone means ONNX Runtime's int8
    assert int8["bytes"] < 0.6 * fp32["bytes"]
    metrics = v.client.metrics()
    assert 'engine="onnx"' in metrics and 'precision="int8"' in metrics
    assert "modelctl_model_min_cosine" in metrics


def test_two_variants_side_by_side_and_eject_narrowing(v: Daemon, reference: np.ndarray,
                                                       ) -> None:
    v.cli("load", MINILM, "--device", "cpu", check=True)
    v.cli("load", MINILM, "--device", "cpu", "--engine", "onnx", check=True)
    entries = json.loads(v.cli("ls", "--json", check=True).stdout)
    assert _variants(entries) == {("torch", "fp32"), ("onnx", "fp32")}
    table = v.cli("ls", check=True).stdout
    assert "torch/fp32" in table and "onnx/fp32" in table
    # Each variant answers for itself when named.
    for engine in ("torch", "onnx"):
        assert _worst(reference, v.client.embed(MINILM, TEXTS, engine=engine)) >= 0.9999
    v.client.load_model(MINILM, "cpu", precision="bf16")
    out = json.loads(v.cli("eject", MINILM, "--engine", "onnx", "--json", check=True).stdout)
    assert [(e["engine"], e["precision"]) for e in out["ejected"]] == [("onnx", "fp32")]
    assert _variants(v.client.list_models()) == {("torch", "fp32"), ("torch", "bf16")}
    with pytest.raises(ModelNotInCache):
        v.client.eject(MINILM, precision="int8")
    out = v.client.eject(MINILM)  # by name alone: every variant
    assert _variants(out["ejected"]) == {("torch", "fp32"), ("torch", "bf16")}
    assert v.client.list_models() == []


def test_unsupported_variants_are_refused(v: Daemon, tiny_clip: dict[str, Any]) -> None:
    with pytest.raises(HardwareCompatibilityError) as refused:
        v.client.load_model(MINILM, "cpu", precision="fp16")
    assert refused.value.status == 400 and "cuda only" in refused.value.message
    with pytest.raises(InvalidArgument, match="engine onnx"):
        v.client.load_model(MINILM, "cpu", precision="int8", engine="torch")
    with pytest.raises(InvalidArgument, match="precision must be one of"):
        v.client.load_model(MINILM, "cpu", precision="fp8")
    with pytest.raises(InvalidArgument, match="text models"):
        v.client.load_model("onnx-clip", "cpu", properties=tiny_clip, engine="onnx")
    proc = v.cli("load", MINILM, "--device", "cpu", "--precision", "fp16")
    assert proc.returncode != 0 and "fp16 runs on cuda only" in proc.stderr
    assert v.alive() and v.client.list_models() == []
    v.client.load_model(MINILM, "cpu")  # the daemon and its cache carry on
    assert [e["state"] for e in v.client.list_models()] == ["ready"]


def test_marqos_fp16_runs_as_fp32_on_cpu(v: Daemon, tiny_clip: dict[str, Any]) -> None:
    """Marqo's spelling of fp16 (properties.precision) keeps Marqo's behaviour on cpu:
    fp32 weights, said in the entry; asking for fp16 by name is still a 400."""
    entry = v.client.load_model("half-clip", "cpu", properties={**tiny_clip, "precision": "fp16"})
    assert (entry["engine"], entry["precision"]) == ("torch", "fp32")
    assert any("fp16" in w and "fp32" in w for w in entry["warnings"])
    # The same name without Marqo's precision is the same cpu entry, not a 409.
    again = v.client.load_model("half-clip", "cpu", properties=tiny_clip)
    assert again["loaded_at"] == entry["loaded_at"]
    with pytest.raises(HardwareCompatibilityError, match="cuda only"):
        v.client.load_model("half-clip", "cpu", properties=tiny_clip, precision="fp16")
    assert _variants(v.client.list_models()) == {("torch", "fp32")}


def test_devices_say_which_precisions_run_natively(v: Daemon) -> None:
    cpu = v.client.devices()["cpu"]
    assert cpu["native_precisions"][0] == "fp32" and "fp16" not in cpu["native_precisions"]
    flags = Path("/proc/cpuinfo").read_text()
    assert ("bf16" in cpu["native_precisions"]) == any(
        f in flags.split() for f in ("avx512_bf16", "amx_bf16"))
    assert 1 <= cpu["threads"] <= (cpu["cores"] or 1)
    out = v.cli("devices", check=True).stdout
    assert "fp32" in out


def _graph(entry: dict[str, Any]) -> Path:
    return Path(entry["onnx"]["graph"])


def test_onnx_export_is_cached_and_reused(v: Daemon) -> None:
    first = v.client.load_model(MINILM, "cpu", engine="onnx")
    graph = _graph(first)
    assert graph.is_file() and graph.parent.parent.parent == v.runtime_dir / "cache"
    assert (graph.parent / "manifest.json").is_file()
    mtime = graph.stat().st_mtime_ns
    v.client.eject(MINILM)
    second = v.client.load_model(MINILM, "cpu", engine="onnx")
    assert _graph(second) == graph and second["onnx"]["exported"] is False
    assert graph.stat().st_mtime_ns == mtime


def test_corrupt_cached_export_is_rebuilt(v: Daemon, reference: np.ndarray) -> None:
    graph = _graph(v.client.load_model(MINILM, "cpu", engine="onnx"))
    v.client.eject(MINILM)
    data = bytearray(graph.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\x00" * 64  # a flipped block of weights
    graph.write_bytes(bytes(data))
    rebuilt = v.client.load_model(MINILM, "cpu", engine="onnx")
    assert rebuilt["onnx"]["exported"] is True
    assert rebuilt["accuracy"]["min_cosine"] >= 0.9999
    assert _worst(reference, v.client.embed(MINILM, TEXTS, engine="onnx")) >= 0.9999
    assert "fails its checksum" in v.log()


def test_int8_graph_of_another_recipe_is_rebuilt(v: Daemon, reference: np.ndarray) -> None:
    """A cached int8 graph whose manifest records no recipe (an older modelctl) is
    rebuilt; the fp32 export is kept. (Another recipe is the same comparison, and each
    rebuild costs a calibration and a quantization.)"""
    from modelctl.daemon.loaders import int8

    graph = _graph(v.client.load_model(MINILM, "cpu", precision="int8"))
    manifest_path = graph.parent / "manifest.json"
    fp32 = graph.parent / "model.onnx"
    exported = fp32.stat().st_mtime_ns
    assert json.loads(manifest_path.read_text())["recipes"] == {graph.name: int8.identity()}
    v.client.eject(MINILM)
    manifest = json.loads(manifest_path.read_text())
    del manifest["recipes"]  # as the int8 of an older modelctl left it
    manifest_path.write_text(json.dumps(manifest))  # checksums still match
    rebuilt = v.client.load_model(MINILM, "cpu", precision="int8")
    assert rebuilt["onnx"]["exported"] is True and _graph(rebuilt) == graph
    assert rebuilt["accuracy"]["min_cosine"] >= 0.99
    assert json.loads(manifest_path.read_text())["recipes"][graph.name] == int8.identity()
    assert fp32.stat().st_mtime_ns == exported
    assert _worst(reference, v.client.embed(MINILM, TEXTS, precision="int8")) >= 0.99
    v.client.eject(MINILM)
    assert v.client.load_model(MINILM, "cpu", precision="int8")["onnx"]["exported"] is False
