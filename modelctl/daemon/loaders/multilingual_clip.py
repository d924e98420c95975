"""Marqo's ``multilingual_clip``: an M-CLIP text tower beside a CLIP image tower.

The text tower is M-CLIP's: a transformers encoder (``modelBase`` in the repository's
config), mean pooling over the attention mask, then a linear projection
(``LinearTransformation``, ``transformerDimensions`` -> ``numDims``) into the CLIP space.
It is built here from the repository's config and weights, without the
``multilingual-clip`` package and its code. Images go through the visual tower of
``visual_model`` (``openai/<CLIP name>`` or ``open_clip/<arch>/<tag>``, as Marqo; an
``hf-hub:`` open_clip repository too) with that model's own preprocessing.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

from modelctl.daemon.loaders.base import LoadedModel
from modelctl.daemon.loaders.open_clip import OpenClipModel
from modelctl.daemon.loaders.weights import resolve_hub_dir
from modelctl.errors import InvalidArgument
from modelctl.registry import hub_id
from modelctl.registry.spec import clip_arch

if TYPE_CHECKING:
    from PIL.Image import Image

    from modelctl.registry import ModelSpec

_CHUNK = 32


def visual_spec(spec: ModelSpec) -> ModelSpec:
    """The open_clip spec of ``visual_model`` (Marqo's two spellings, or ``hf-hub:``)."""
    visual = spec.source
    if visual.startswith("openai/"):
        arch, tag = clip_arch(visual.removeprefix("openai/")), "openai"
    elif visual.startswith("open_clip/") and visual.count("/") == 2:
        _, arch, tag = visual.split("/")
    elif hub_id(visual) is not None:
        arch, tag = visual, None
    else:
        raise InvalidArgument(f"{spec.name}: visual_model must be openai/<CLIP name>, "
                              f"open_clip/<arch>/<pretrained> or hf-hub:<repo>, not {visual!r}")
    return replace(spec, family="open_clip", source=arch, pretrained=tag, custom=False,
                   text_model=None, dimensions=0)


class MultilingualClipModel(LoadedModel):
    def __init__(self, spec: ModelSpec, device: str, offline: bool) -> None:
        super().__init__(spec, device)
        assert spec.text_model is not None
        text_dir = resolve_hub_dir(spec.text_model, offline)
        config = json.loads((text_dir / "config.json").read_text())
        try:
            base, width, dims = (config["modelBase"], int(config["transformerDimensions"]),
                                 int(config["numDims"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgument(f"{spec.text_model} is not an M-CLIP text model (its "
                                  "config needs modelBase, transformerDimensions and "
                                  "numDims)") from exc
        base_dir = resolve_hub_dir(base, offline)
        self.text = AutoModel.from_config(AutoConfig.from_pretrained(str(base_dir),
                                                                     local_files_only=True))
        self.projection = torch.nn.Linear(width, dims)
        _load_towers(text_dir, self.text, self.projection)
        self.text.to(device).eval()
        self.projection.to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(text_dir), local_files_only=True)
        self.visual = OpenClipModel(visual_spec(spec), device, offline)
        if self.visual.dimensions != dims:
            raise InvalidArgument(f"{spec.name}: the text tower makes {dims} dimensions and "
                                  f"the visual model {self.visual.dimensions}")
        self._dims = dims

    @property
    def dimensions(self) -> int:
        return self._dims

    @property
    def max_tokens(self) -> int | None:
        limit = getattr(self.tokenizer, "model_max_length", None) or 512
        return int(min(limit, 8192))

    def modules(self) -> list[torch.nn.Module]:
        return [self.text, self.projection, *self.visual.modules()]

    def encode_texts(self, texts: list[str], normalize: bool | None
                     ) -> tuple[np.ndarray, list[int]]:
        normalize = self.spec.normalize if normalize is None else normalize
        out: list[np.ndarray] = []
        counts: list[int] = []
        with torch.inference_mode():
            for start in range(0, len(texts), _CHUNK):
                # M-CLIP pads and does not truncate; past the model's positions it would
                # fail, so texts that long are cut at the model's limit.
                batch = self.tokenizer(texts[start:start + _CHUNK], padding=True,
                                       truncation=True, max_length=self.max_tokens,
                                       return_tensors="pt").to(self.device)
                hidden = self.text(**batch)[0]
                mask = batch["attention_mask"]
                pooled = (hidden * mask.unsqueeze(2)).sum(dim=1) / mask.sum(dim=1)[:, None]
                vectors = self.projection(pooled)
                if normalize:
                    vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
                out.append(vectors.float().cpu().numpy())
                counts.extend(int(n) for n in mask.sum(1).tolist())
        return np.concatenate(out).astype(np.float32), counts

    def encode_images(self, images: list[Image], normalize: bool | None) -> np.ndarray:
        return self.visual.encode_images(images, normalize)

    def release(self) -> None:
        if getattr(self, "visual", None) is not None:
            self.visual.release()
        super().release()


def _load_towers(text_dir: Path, text: torch.nn.Module, projection: torch.nn.Linear) -> None:
    """M-CLIP's weights: ``transformer.*`` for the encoder, ``LinearTransformation.*``."""
    safetensors = text_dir / "model.safetensors"
    if safetensors.is_file():
        from safetensors.torch import load_file

        state = load_file(str(safetensors))
    else:
        state = torch.load(text_dir / "pytorch_model.bin", map_location="cpu",
                           weights_only=True)
    encoder = {k.removeprefix("transformer."): v for k, v in state.items()
               if k.startswith("transformer.")}
    head = {k.removeprefix("LinearTransformation."): v for k, v in state.items()
            if k.startswith("LinearTransformation.")}
    missing, unexpected = text.load_state_dict(encoder, strict=False)
    # position_ids are a buffer some exports save and others do not
    missing = [k for k in missing if not k.endswith("position_ids")]
    unexpected = [k for k in unexpected if not k.endswith("position_ids")]
    if missing or unexpected or set(head) != {"weight", "bias"}:
        raise InvalidArgument(f"{text_dir} does not hold M-CLIP weights for its modelBase "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    projection.load_state_dict(head)
