"""open_clip models: Marqo's ``clip`` (OpenAI names) and ``open_clip`` families.

Weights are located first (weights.py) and handed to open_clip as a local file or a
``local-dir:``, so open_clip itself never reaches for the network. Checkpoints load
with ``weights_only=True``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import open_clip
import torch

from modelctl.daemon.loaders.base import LoadedModel
from modelctl.daemon.loaders.weights import resolve_hub_dir, resolve_hub_file
from modelctl.errors import InvalidArgument, WeightsNotFound

if TYPE_CHECKING:
    from PIL.Image import Image

    from modelctl.daemon.loaders.registry import ModelSpec

_CHUNK = 32
_HF_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


class OpenClipModel(LoadedModel):
    def __init__(self, spec: ModelSpec, device: str, offline: bool) -> None:
        super().__init__(spec, device)
        model_name, pretrained = _locate(spec, offline)
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, device=device, weights_only=True,
            pretrained_text=False)
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self._dims = _output_dim(self.model)
        self._context = int(getattr(self.tokenizer, "context_length", 77) or 77)

    @property
    def dimensions(self) -> int:
        return self._dims

    @property
    def max_tokens(self) -> int | None:
        return self._context

    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def encode_texts(self, texts: list[str], normalize: bool | None
                     ) -> tuple[np.ndarray, list[int]]:
        normalize = self.spec.normalize if normalize is None else normalize
        out, counts = [], []
        with torch.inference_mode():
            for start in range(0, len(texts), _CHUNK):
                tokens = self.tokenizer(texts[start:start + _CHUNK])
                counts.extend(int(n) for n in (tokens != 0).sum(1).tolist())
                features = self.model.encode_text(tokens.to(self.device), normalize=normalize)
                out.append(features.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32), counts

    def encode_images(self, images: list[Image], normalize: bool | None) -> np.ndarray:
        normalize = self.spec.normalize if normalize is None else normalize
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), _CHUNK):
                pixels = torch.stack([self.preprocess(img) for img in images[start:start + _CHUNK]])
                features = self.model.encode_image(pixels.to(self.device), normalize=normalize)
                out.append(features.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)


def _output_dim(model: torch.nn.Module) -> int:
    projection = getattr(model, "text_projection", None)
    if isinstance(projection, torch.Tensor):
        return int(projection.shape[-1])
    if isinstance(projection, torch.nn.Linear):
        return int(projection.out_features)
    embed_dim = getattr(getattr(model, "visual", None), "output_dim", None)
    if embed_dim:
        return int(embed_dim)
    with torch.inference_mode():
        return int(model.encode_text(torch.zeros(1, 77, dtype=torch.long)).shape[-1])


def _locate(spec: ModelSpec, offline: bool) -> tuple[str, str | None]:
    """(model name for open_clip, local checkpoint path or None)."""
    source = spec.source
    if source.startswith("hf-hub:"):
        return f"local-dir:{resolve_hub_dir(source[len('hf-hub:'):], offline)}", None
    if source.startswith("local-dir:"):
        return source, None
    if spec.custom:
        return _locate_custom(spec)
    if spec.pretrained is None:
        return source, None
    cfg = open_clip.get_pretrained_cfg(source, spec.pretrained)
    if not cfg:
        raise InvalidArgument(
            f"open_clip has no pretrained {spec.pretrained!r} for {source}; "
            f"known tags: {', '.join(open_clip.list_pretrained_tags_by_model(source)) or 'none'}")
    hub = cfg.get("hf_hub") or ""
    if hub:
        repo_id, filename = hub.rstrip("/").rsplit("/", 1) if not hub.endswith("/") else (
            hub.rstrip("/"), "")
        names = [filename] if filename else list(_HF_WEIGHT_FILES)
        if filename.endswith(".bin"):
            names.insert(0, filename[:-4] + ".safetensors")
        return source, str(resolve_hub_file(repo_id, names, offline))
    raise WeightsNotFound(f"{spec.name}: weights are only published at {cfg.get('url')}, "
                          "which modelctl does not fetch; download the file and load it "
                          "with properties.localpath")


def _locate_custom(spec: ModelSpec) -> tuple[str, str | None]:
    """A custom model: ``source`` is the architecture, ``pretrained`` a local checkpoint.

    An architecture open_clip does not know may be defined by a JSON config beside the
    checkpoint, named ``<arch>.json`` (open_clip's model-config format), or the
    checkpoint may be a directory in open_clip's hub layout (``open_clip_config.json``).
    """
    checkpoint = Path(spec.pretrained) if spec.pretrained else None
    if checkpoint is not None and checkpoint.is_dir():
        return f"local-dir:{checkpoint}", None
    if spec.source not in open_clip.list_models():
        config = checkpoint.with_name(f"{spec.source}.json") if checkpoint else None
        if config is None or not config.is_file():
            raise InvalidArgument(
                f"open_clip has no architecture {spec.source!r} and no {spec.source}.json "
                "config lies beside the checkpoint; `open_clip.list_models()` lists the "
                "built-in ones")
        _register_config(config)
    return spec.source, str(checkpoint) if checkpoint else None


def _register_config(path: Path) -> None:
    try:
        data: Any = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"cannot read architecture config {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(k in data for k in ("embed_dim", "vision_cfg",
                                                                  "text_cfg")):
        raise InvalidArgument(f"{path} is not an open_clip model config (needs embed_dim, "
                              "vision_cfg and text_cfg)")
    open_clip.add_model_config(path)
