"""A loaded model run in another (engine, precision): the layer around ``LoadedModel``.

The family loaders build every model in fp32 torch, as Marqo does; ``apply`` turns it
into the variant a load asked for, whatever its family:

- torch bf16 / fp16: weights cast (the cache's measured bytes halve), every pass under
  ``torch.autocast``, so the ops autocast keeps in fp32 (softmax, layer norm) stay
  there and vectors stay close to fp32's.
- onnx fp32 / int8: the transformer swapped for its ONNX graph (``onnx_engine``).

Before it changes anything, ``apply`` embeds a fixed probe set (``texts.PROBE_TEXTS``:
32 varied texts, none of them int8's calibration texts) in fp32, and after, in the
variant; the cosines between the two are the entry's ``accuracy``: what a user
trades for the speed, measured on this model, not promised.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from modelctl.daemon.loaders import onnx_engine
from modelctl.daemon.loaders.base import LoadedModel
from modelctl.daemon.loaders.texts import PROBE_TEXTS

if TYPE_CHECKING:
    from PIL.Image import Image

    from modelctl.registry import ModelSpec


class VariantModel(LoadedModel):
    """``inner`` run under ``context`` (autocast, or nothing for an ONNX graph)."""

    def __init__(self, inner: LoadedModel, spec: ModelSpec,
                 context: Callable[[], AbstractContextManager[Any]], *,
                 extra_bytes: int = 0) -> None:
        super().__init__(spec, inner.device)
        self.inner = inner
        self._context = context
        self._extra_bytes = extra_bytes
        self.accuracy: dict[str, float] | None = None
        self.warning: str | None = None
        self.onnx: dict[str, Any] | None = None

    @property
    def dimensions(self) -> int:
        return self.inner.dimensions

    @property
    def max_tokens(self) -> int | None:
        return self.inner.max_tokens

    def modules(self) -> list[torch.nn.Module]:
        return self.inner.modules()

    def encode_texts(self, texts: list[str], normalize: bool | None
                     ) -> tuple[np.ndarray, list[int]]:
        with self._context():
            return self.inner.encode_texts(texts, normalize)

    def encode_images(self, images: list[Image], normalize: bool | None) -> np.ndarray:
        with self._context():
            return self.inner.encode_images(images, normalize)

    def measure_bytes(self) -> int:
        return self.inner.measure_bytes() + self._extra_bytes

    def release(self) -> None:
        if self.inner is not None:
            self.inner.release()
        super().release()


def apply(model: LoadedModel, spec: ModelSpec, *, cache_dir: Path, threads: int,
          warning: str | None = None) -> LoadedModel:
    """``model`` (fp32 torch, just loaded) as the variant ``spec`` names."""
    if (spec.engine, spec.precision) == ("torch", "fp32"):
        return model
    reference = model.encode_texts(list(PROBE_TEXTS), None)[0]
    onnx: dict[str, Any] | None = None
    if spec.engine == "onnx":
        graph = onnx_engine.install(model, spec.precision, cache_dir, threads)
        size = sum(p.stat().st_size for p in graph.path.parent.glob(graph.path.name + "*"))
        variant = VariantModel(model, spec, contextlib.nullcontext, extra_bytes=size)
        onnx = {"graph": str(graph.path), "digest": graph.digest, "exported": graph.exported}
    else:
        dtype = torch.bfloat16 if spec.precision == "bf16" else torch.float16
        device_type = "cuda" if model.device.startswith("cuda") else "cpu"
        for module in model.modules():
            module.to(dtype)
        variant = VariantModel(model, spec, lambda: torch.autocast(device_type, dtype))
    model.spec = replace(model.spec, engine=spec.engine, precision=spec.precision)
    variant.onnx = onnx
    variant.warning = warning
    variant.accuracy = compare(reference, variant.encode_texts(list(PROBE_TEXTS), None)[0])
    return variant


def compare(reference: np.ndarray, vectors: np.ndarray) -> dict[str, float]:
    """Worst and mean cosine between matching rows."""
    a = reference.astype(np.float64)
    b = vectors.astype(np.float64)
    cosines = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"min_cosine": round(float(cosines.min()), 6),
            "mean_cosine": round(float(cosines.mean()), 6)}
