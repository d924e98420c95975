"""The int8 recipe's steps on a tiny graph built here: no model, no export, no daemon.

The graph has the shapes the recipe looks for in a BERT-like export: word embeddings
gathered from ``input_ids``, a LayerNorm feeding query and value products, and a
feed-forward output product, named as the TorchScript exporter names them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelctl.daemon.loaders import int8
from modelctl.daemon.loaders.texts import CALIBRATION_TEXTS, PROBE_TEXTS

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

VOCAB, WIDTH = 50, 64


def _graph(path: Path) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    table = rng.normal(size=(VOCAB, WIDTH)).astype(np.float32)
    table[:, 3] *= 40  # an outlier channel, as LayerNorm outputs have
    weights = {name: rng.normal(scale=0.1, size=(WIDTH, WIDTH)).astype(np.float32)
               for name in ("wq", "wv", "wo")}
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["embedded"],
                         name="/embeddings/word_embeddings/Gather"),
        helper.make_node("LayerNormalization", ["embedded", "gamma", "beta"], ["normed"],
                         name="/embeddings/LayerNorm", axis=-1),
        helper.make_node("MatMul", ["normed", "wq"], ["q"],
                         name="/encoder/layer.0/attention/self/query/MatMul"),
        helper.make_node("MatMul", ["normed", "wv"], ["v"],
                         name="/encoder/layer.1/attention/self/value/MatMul"),
        helper.make_node("Add", ["q", "v"], ["qv"], name="/add"),
        helper.make_node("MatMul", ["qv", "wo"], ["out"],
                         name="/encoder/layer.1/output/dense/MatMul"),
    ]
    gamma = np.ones(WIDTH, np.float32)
    gamma[3] = 30  # LayerNorm's learned scale keeps the outlier
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "t"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", "t", WIDTH]),
         helper.make_tensor_value_info("embedded", TensorProto.FLOAT, ["b", "t", WIDTH])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(gamma, "gamma"),
         numpy_helper.from_array(np.zeros(WIDTH, np.float32), "beta"),
         *(numpy_helper.from_array(w, n) for n, w in weights.items())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _run(path: Path, outputs: list[str] | None = None) -> list[Any]:
    ids = np.random.default_rng(1).integers(0, VOCAB, size=(4, 9))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(outputs, {"input_ids": ids})


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def _maxima(path: Path, tmp_path: Path) -> dict[str, np.ndarray]:
    probe = tmp_path / "calibration.onnx"
    names = int8.calibration_graph(path, probe)
    values = _run(probe, names)
    return {n: np.abs(v).reshape(-1, WIDTH).max(axis=0) for n, v in zip(names, values,
                                                                       strict=True)}


def test_calibration_graph_exposes_the_layernorm_fed_input(tmp_path: Path) -> None:
    source = _graph(tmp_path / "model.onnx")
    assert int8.calibration_graph(source, tmp_path / "calibration.onnx") == ["normed"]


def test_smoothing_leaves_the_fp32_graph_unchanged(tmp_path: Path) -> None:
    source = _graph(tmp_path / "model.onnx")
    model = onnx.load(str(source))
    int8._smooth(model, _maxima(source, tmp_path))
    muls = [n for n in model.graph.node if n.op_type == "Mul"]
    assert [n.input[0] for n in muls] == ["normed"]
    smoothed = tmp_path / "smoothed.onnx"
    onnx.save(model, str(smoothed))
    np.testing.assert_allclose(_run(smoothed)[0], _run(source)[0], rtol=1e-4, atol=1e-3)


def test_feed_forward_output_and_late_values_stay_fp32(tmp_path: Path) -> None:
    model = onnx.load(str(_graph(tmp_path / "model.onnx")))
    # Two layers (0, 1): the last half is layer 1.
    assert int8._kept_fp32(model) == ["/encoder/layer.1/attention/self/value/MatMul",
                                      "/encoder/layer.1/output/dense/MatMul"]


@pytest.mark.skipif(not int8._blockwise_gather(), reason="needs ONNX Runtime 1.23")
def test_word_embeddings_in_blocks_stay_close(tmp_path: Path) -> None:
    source = _graph(tmp_path / "model.onnx")
    model = onnx.load(str(source))
    assert int8._blockwise_embeddings(model)
    assert [n.op_type for n in model.graph.node][0] == "GatherBlockQuantized"
    assert "table" not in {i.name for i in model.graph.initializer}
    blocked = tmp_path / "blocked.onnx"
    onnx.save(model, str(blocked))
    got, want = _run(blocked, ["embedded"])[0], _run(source, ["embedded"])[0]
    # One scale per 32 values of a row: the outlier channel costs its block only.
    assert np.abs(got - want).max() <= np.abs(want).max() / 127


def test_build_quantizes_and_stays_close(tmp_path: Path) -> None:
    source = _graph(tmp_path / "model.onnx")
    target = tmp_path / "model.int8.onnx"
    int8.build(source, target, _maxima(source, tmp_path))
    ops = [n.op_type for n in onnx.load(str(target)).graph.node]
    assert ops.count("MatMul") == 2  # the kept ones; the query product is quantised
    assert any(op in ("MatMulInteger", "DynamicQuantizeMatMul") for op in ops)
    assert _cosine(_run(target)[0], _run(source)[0]) >= 0.99


def test_identity_covers_the_calibration_texts() -> None:
    assert int8.identity() == int8.identity(CALIBRATION_TEXTS)
    assert int8.identity() != int8.identity(CALIBRATION_TEXTS[:-1])
    assert len(int8.identity()) == 32


def test_probe_and_calibration_texts_are_disjoint_and_varied() -> None:
    assert not set(PROBE_TEXTS) & set(CALIBRATION_TEXTS)
    for texts in (PROBE_TEXTS, CALIBRATION_TEXTS):
        assert len(set(texts)) == len(texts) >= 32
        words = [len(t.split()) for t in texts]
        assert min(words) <= 2 and max(words) >= 20  # short and long, not one template
        assert len({t.split()[0].lower() for t in texts}) >= len(texts) * 3 // 4
