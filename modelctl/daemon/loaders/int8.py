"""int8 for engine onnx: a model's fp32 graph rewritten with 8-bit matrix products.

The recipe, chosen by measuring each option on all-MiniLM-L6-v2 on an AVX2 cpu (the
README has the table):

1. Smoothing (SmoothQuant, alpha 0.6). A LayerNorm's output has a few channels far
   larger than the rest, and one scale for the whole activation leaves the others a
   handful of levels. Each matrix product fed by a LayerNorm gets its input divided per
   channel by ``s = max|x| ** a / max|w| ** (1 - a)`` (a ``Mul`` before it) and its
   weight rows multiplied by ``s``: the same product in fp32, easier to quantise.
   ``max|x|`` is measured on ``CALIBRATION_TEXTS`` run through the model's own pipeline.
2. ONNX Runtime's dynamic quantisation of the matrix products with constant weights:
   weights uint8 per output channel, activations uint8 over the range each pass
   measures. uint8 rather than int8 weights: a cpu without VNNI multiplies uint8 by
   int8 in int16 pairs that saturate, and the errors show (worst cosine 0.94 with int8
   weights after smoothing, against 0.99 with uint8). Kept fp32: each feed-forward output
   projection (its input, after GELU, has a tail no one scale fits) and the value
   projections of the last half of the layers (the largest errors left, on short texts).
3. The word embeddings in 8-bit blocks of 32 values, each with its own scale
   (``GatherBlockQuantized``, ONNX Runtime 1.23 and later); older runtimes quantise the
   whole table with one scale, as their quantiser does.

``identity()`` names the recipe, its calibration texts and the runtime: a cached int8
graph built any other way is rebuilt, not reused.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from modelctl.daemon.loaders.texts import CALIBRATION_TEXTS

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto

ALPHA = 0.6
BLOCK = 32
_LAYER = re.compile(r"layer\.(\d+)/")


def identity(texts: tuple[str, ...] = CALIBRATION_TEXTS) -> str:
    """What the int8 graph depends on beyond the fp32 one; recorded in the manifest."""
    import onnxruntime

    # Describe every setting of the recipe here: a change to any of them rebuilds.
    recipe = {"smooth": ["LayerNormalization", ALPHA], "weights": "uint8 per channel",
              "fp32": ["feed-forward output", "value, last half"],
              "embeddings": BLOCK if _blockwise_gather() else "per tensor",
              "onnxruntime": onnxruntime.__version__, "calibration": list(texts)}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:32]


def calibration_graph(source: Path, target: Path) -> list[str]:
    """Write ``source`` with the smoothed products' inputs as extra outputs; their names.

    Running it over the calibration texts gives ``build`` its per-channel maxima.
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(source))
    names = sorted(_smoothed(model))
    model.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    onnx.save(model, str(target))
    return names


def build(source: Path, target: Path, maxima: dict[str, np.ndarray]) -> None:
    """The int8 graph of fp32 ``source``, given each smoothed input's ``max|x|``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(source))
    _smooth(model, maxima)
    blockwise = _blockwise_gather()
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        smoothed = Path(scratch) / "smoothed.onnx"
        onnx.save(model, str(smoothed))
        quantize_dynamic(smoothed, target, per_channel=True, weight_type=QuantType.QUInt8,
                         op_types_to_quantize=["MatMul"] if blockwise else ["MatMul", "Gather"],
                         nodes_to_exclude=_kept_fp32(model),
                         extra_options={"MatMulConstBOnly": True})
    if blockwise:
        quantized = onnx.load(str(target))
        if _blockwise_embeddings(quantized):
            onnx.save(quantized, str(target))


def _products(model: ModelProto) -> list[NodeProto]:
    """The MatMul nodes whose weight is a 2-D initializer used by that node alone."""
    graph = model.graph
    shapes = {i.name: len(i.dims) for i in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    return [n for n in graph.node if n.op_type == "MatMul" and shapes.get(n.input[1]) == 2
            and uses[n.input[1]] == 1]


def _smoothed(model: ModelProto) -> dict[str, list[NodeProto]]:
    """Products fed by a LayerNormalization, grouped by that input."""
    producer = {out: n.op_type for n in model.graph.node for out in n.output}
    groups: dict[str, list[NodeProto]] = {}
    for node in _products(model):
        if producer.get(node.input[0]) == "LayerNormalization":
            groups.setdefault(node.input[0], []).append(node)
    return groups


def _smooth(model: ModelProto, maxima: dict[str, np.ndarray]) -> None:
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    nodes = list(graph.node)
    for source, group in _smoothed(model).items():
        if source not in maxima:
            continue
        arrays = [numpy_helper.to_array(weights[n.input[1]]) for n in group]
        w_max = np.max([np.abs(w).max(axis=1) for w in arrays], axis=0)
        scale = (np.maximum(maxima[source], 1e-5) ** ALPHA
                 / np.maximum(w_max, 1e-5) ** (1 - ALPHA)).astype(np.float32)
        for node, w in zip(group, arrays, strict=True):
            name = node.input[1]
            weights[name].CopyFrom(numpy_helper.from_array(w * scale[:, None], name))
        smoothed = f"{source}/smoothed"
        graph.initializer.append(numpy_helper.from_array(1 / scale, f"{smoothed}/scale"))
        # Before the group's first product: the LayerNorm that feeds it comes earlier.
        first = min(nodes.index(n) for n in group)
        nodes.insert(first, helper.make_node("Mul", [source, f"{smoothed}/scale"], [smoothed],
                                             name=f"{smoothed}/Mul"))
        for node in group:
            node.input[0] = smoothed
    del graph.node[:]
    graph.node.extend(nodes)


def _kept_fp32(model: ModelProto) -> list[str]:
    products = [n.name for n in _products(model)]
    layers = [int(m.group(1)) for n in products if (m := _LAYER.search(n))]
    half = (max(layers) + 1) // 2 if layers else 0

    def late(name: str) -> bool:
        match = _LAYER.search(name)
        return match is not None and int(match.group(1)) >= half

    return [n for n in products
            if ("/output/dense" in n and "attention" not in n)
            or ("attention/self/value" in n and late(n))]


def _blockwise_embeddings(model: ModelProto) -> bool:
    """The word-embedding Gather as a GatherBlockQuantized; False where there is none."""
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    users = [name for node in graph.node for name in node.input]
    for index, node in enumerate(graph.node):
        table = weights.get(node.input[0]) if node.op_type == "Gather" else None
        if table is None or len(table.dims) != 2 or table.dims[1] % BLOCK \
                or node.input[1] != "input_ids" or users.count(table.name) != 1:
            continue
        w = numpy_helper.to_array(table)
        blocks = w.reshape(w.shape[0], -1, BLOCK)
        scale = np.abs(blocks).max(axis=2) / 127
        scale[scale == 0] = 1
        # uint8 with the implied zero point 128: symmetric, as MatMulNBits stores it.
        q = (np.clip(np.rint(blocks / scale[..., None]), -127, 127) + 128).astype(np.uint8)
        name = table.name
        blockwise = helper.make_node(
            "GatherBlockQuantized", [f"{name}/q8", node.input[1], f"{name}/scale"],
            list(node.output), name=f"{node.name}/blockwise", domain="com.microsoft",
            gather_axis=0, quantize_axis=1, block_size=BLOCK, bits=8)
        graph.initializer.remove(table)
        graph.initializer.extend([numpy_helper.from_array(q.reshape(w.shape), f"{name}/q8"),
                                  numpy_helper.from_array(scale.astype(np.float32),
                                                          f"{name}/scale")])
        graph.node.remove(node)
        graph.node.insert(index, blockwise)
        if not any(o.domain == "com.microsoft" for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
        return True
    return False


def _blockwise_gather() -> bool:
    """ONNX Runtime 1.23 added 8-bit data to GatherBlockQuantized."""
    import onnxruntime

    parts = re.findall(r"\d+", onnxruntime.__version__)[:2]
    return tuple(int(p) for p in parts) >= (1, 23)
