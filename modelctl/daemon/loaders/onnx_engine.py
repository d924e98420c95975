"""Engine ``onnx``: a text model's transformer run by ONNX Runtime.

The transformer inside a loaded sbert or hf model (its ``transformers`` model) is
exported once with ``torch.onnx.export`` from the weights just loaded, and the graph
is kept on disk under ``<cache dir>/onnx/<digest>/``, the digest taken over the
weights, the torch and onnx versions and the export recipe: the same weights load
from the cached graph without exporting again, and different weights never share
one. A ``manifest.json`` written last records each file's SHA-256; a graph whose
checksum does not match (a crash mid-write, a disk fault, an edit) is rebuilt, not
trusted.

Everything else (tokenizer, length-cut passes, pooling, normalisation) stays the
loader's own: the exported module replaces the transformer in place, takes the same
inputs and returns what it returned (``last_hidden_state``).

int8 is that graph with 8-bit matrix products (``int8``: the recipe), calibrated on
shipped texts run through the loader's own pipeline. The manifest records
the int8 recipe's identity beside the checksums: a graph built by another recipe, from
other calibration texts or by another ONNX Runtime is rebuilt, the fp32 export kept.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelctl.daemon.loaders import int8
from modelctl.daemon.loaders.texts import CALIBRATION_TEXTS
from modelctl.errors import InvalidArgument

log = logging.getLogger("modelctl.onnx")

RECIPE = 1  # bump when the export changes: old graphs are not reused (int8: int8.identity)
OPSET = 17
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_MANIFEST = "manifest.json"
_GRAPH = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
_export_lock = threading.Lock()  # two loads of one model must not write one directory


@dataclass
class Graph:
    path: Path
    exported: bool  # False: reused from the cache
    digest: str


class OnnxTransformer(torch.nn.Module):
    """Stands where the transformers model stood; runs its exported graph."""

    def __init__(self, graph: Path, config: Any, threads: int) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # A worker spinning for work steals a core that another process (or the other
        # encode thread) needs; on a shared host that stalls every pass.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(graph), options,
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.config = config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, **_: Any) -> Any:
        from transformers.modeling_outputs import BaseModelOutput

        hidden = self.run(self.feed(input_ids, attention_mask, token_type_ids))
        return BaseModelOutput(last_hidden_state=torch.from_numpy(hidden))

    def feed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
             token_type_ids: torch.Tensor | None) -> dict[str, np.ndarray]:
        given = {"input_ids": input_ids, "attention_mask": attention_mask,
                 "token_type_ids": token_type_ids}
        feed = {}
        for name in self.input_names:
            value = given.get(name)
            if value is None:  # the tokenizer gives no token types: all segment 0
                value = torch.ones_like(input_ids) if name == "attention_mask" \
                    else torch.zeros_like(input_ids)
            feed[name] = value.cpu().numpy().astype(np.int64, copy=False)
        return feed

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, feed)[0]


class _Recorder(OnnxTransformer):
    """A calibration graph in the transformer's place: answers as the fp32 graph does,
    and keeps each extra output's per-channel ``max|x|`` over real (unpadded) tokens."""

    def __init__(self, graph: Path, config: Any, threads: int, names: list[str]) -> None:
        super().__init__(graph, config, threads)
        self.names = names
        self.maxima: dict[str, np.ndarray] = {}

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        hidden, *extra = self.session.run([self.session.get_outputs()[0].name, *self.names],
                                          feed)
        real = feed.get("attention_mask", np.ones_like(feed["input_ids"])).astype(bool)
        for name, value in zip(self.names, extra, strict=True):
            top = np.abs(value[real]).max(axis=0)
            self.maxima[name] = np.maximum(self.maxima.get(name, top), top)
        return hidden


def transformer_slot(root: Any) -> tuple[Any, str, torch.nn.Module]:
    """(owner, attribute, module): where the transformers model sits in a loaded model."""
    from transformers import PreTrainedModel

    for attr, value in vars(root).items():
        if isinstance(value, PreTrainedModel):
            return root, attr, value
    for module in root.modules():
        for parent in module.modules():
            for attr, child in parent.named_children():
                if isinstance(child, PreTrainedModel):
                    return parent, attr, child
    raise InvalidArgument("engine onnx needs a transformers model inside; this model has "
                          "none")


def install(loaded: Any, precision: str, cache_dir: Path, threads: int) -> Graph:
    """Swap ``loaded``'s transformer for its ONNX graph (exported or reused)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise InvalidArgument("engine onnx needs ONNX Runtime, which is not installed: "
                              "pip install 'modelctl[onnx]'") from exc
    owner, attr, module = transformer_slot(loaded)

    def calibrate(graph: Path, names: list[str]) -> dict[str, np.ndarray]:
        # The loader's own pipeline (tokenizer, passes) around a recording graph; the
        # model is not serving yet, so borrowing its slot races with nothing.
        recorder = _Recorder(graph, module.config, threads, names)
        setattr(owner, attr, recorder)
        try:
            loaded.encode_texts(list(CALIBRATION_TEXTS), None)
        finally:
            setattr(owner, attr, module)
        return recorder.maxima

    try:
        graph = cached_graph(module, precision, cache_dir, calibrate)
        session = OnnxTransformer(graph.path, module.config, threads)
    except (RuntimeError, ValueError, OSError) as exc:
        # Export of an architecture the exporter cannot trace, a full disk, a graph
        # ONNX Runtime rejects: this model has no onnx variant here.
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise InvalidArgument(f"engine onnx cannot run this model: {first}") from exc
    setattr(owner, attr, session)
    return graph


Calibrate = Callable[[Path, list[str]], dict[str, np.ndarray]]


def cached_graph(module: torch.nn.Module, precision: str, cache_dir: Path,
                 calibrate: Calibrate) -> Graph:
    """The graph of ``module`` in ``precision``, from the cache or built now.

    ``calibrate(graph, names)`` runs the calibration texts through ``graph`` and returns
    each named output's per-channel ``max|x|`` (int8 only).
    """
    digest = weights_digest(module)
    directory = cache_dir / "onnx" / digest
    with _export_lock:
        manifest = _read_manifest(directory)
        name = _GRAPH[precision]
        # Beyond the export: what else a graph depends on (int8's recipe), or None.
        recipe = int8.identity() if precision == "int8" else None
        recipes = dict(manifest.get("recipes") or {}) if manifest is not None else {}
        current = recipes.get(name) == recipe
        if current and _intact(directory, manifest, name):
            return Graph(directory / name, False, digest)
        if manifest is not None and name in manifest["files"]:
            if current:
                log.warning("cached ONNX export %s fails its checksum: rebuilding it",
                            directory)
            else:
                log.info("cached %s in %s was built by another recipe: rebuilding it",
                         name, directory)
        files = manifest["files"] if manifest is not None else {}
        if not _intact(directory, manifest, _GRAPH["fp32"]):
            files, recipes = {}, {}
            _export(module, directory)
            files[_GRAPH["fp32"]] = _sha256(directory / _GRAPH["fp32"])
        if precision == "int8":
            _quantize(directory / _GRAPH["fp32"], directory / name, calibrate)
            files[name] = _sha256(directory / name)
            recipes[name] = recipe
        _write_manifest(directory, {"recipe": RECIPE, "digest": digest, "files": files,
                                    "recipes": recipes})
        return Graph(directory / name, True, digest)


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 over every weight's name, shape, dtype and bytes, and the export recipe."""
    import onnx

    h = hashlib.sha256(f"recipe={RECIPE} opset={OPSET} torch={torch.__version__} "
                       f"onnx={onnx.__version__} {type(module).__name__}".encode())
    for name, tensor in module.state_dict().items():
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


def _export(module: torch.nn.Module, directory: Path) -> None:
    accepted = inspect.signature(module.forward).parameters
    names = [n for n in _INPUTS if n in accepted]
    # Two texts of different lengths: batch and sequence axes must stay dynamic.
    sample = {"input_ids": torch.tensor([[101, 2023, 2003, 102], [101, 7592, 102, 0]]),
              "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
              "token_type_ids": torch.zeros(2, 4, dtype=torch.long)}

    class _Positional(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(names, args, strict=True))).last_hidden_state

    directory.mkdir(parents=True, exist_ok=True)
    target = directory / _GRAPH["fp32"]
    axes = {n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]}
    log.info("exporting %s to ONNX in %s", type(module).__name__, directory)
    with tempfile.TemporaryDirectory(dir=directory) as scratch, torch.inference_mode(False), \
            torch.no_grad():
        partial = Path(scratch) / target.name
        # The TorchScript exporter: the dynamo one needs onnxscript, not a dependency.
        torch.onnx.export(_Positional().eval(), tuple(sample[n] for n in names), str(partial),
                          input_names=names, output_names=["last_hidden_state"],
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)
        for written in Path(scratch).iterdir():  # a graph over 2 GiB keeps weights beside it
            os.replace(written, directory / written.name)


def _quantize(source: Path, target: Path, calibrate: Calibrate) -> None:
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        probe = Path(scratch) / "calibration.onnx"
        maxima = calibrate(probe, int8.calibration_graph(source, probe))
        partial = Path(scratch) / target.name
        int8.build(source, partial, maxima)
        os.replace(partial, target)


def _read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((directory / _MANIFEST).read_text())
    except (OSError, ValueError):
        if directory.exists():
            shutil.rmtree(directory, ignore_errors=True)  # no manifest: an export cut short
        return None
    if not isinstance(manifest, dict) or manifest.get("recipe") != RECIPE \
            or not isinstance(manifest.get("files"), dict):
        shutil.rmtree(directory, ignore_errors=True)
        return None
    return manifest


def _intact(directory: Path, manifest: dict[str, Any] | None, name: str) -> bool:
    if manifest is None or name not in manifest["files"]:
        return False
    path = directory / name
    return path.is_file() and _sha256(path) == manifest["files"][name]


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    partial = directory / f".{_MANIFEST}.tmp"
    partial.write_text(json.dumps(manifest, indent=1))
    os.replace(partial, directory / _MANIFEST)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
