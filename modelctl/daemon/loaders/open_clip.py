"""open_clip models: Marqo's ``clip``, ``fp16_clip``, ``open_clip`` and ``clip_onnx`` types.

Weights are located first (weights.py) and handed to open_clip as a local file or a
``local-dir:``, so open_clip itself never reaches for the network. Checkpoints load
with ``weights_only=True``. ``clip_onnx`` names run as the same open_clip weights in
torch. ``precision`` fp16 (``fp16/*`` names, or the property) applies on cuda only, as
Marqo's ``fp16_clip`` does; on cpu the model stays fp32. The daemon's cache loads fp32
here and leaves fp16 to the variant layer (variants.py), which measures it against fp32.

A custom model loaded from a checkpoint (``localpath``, ``url``, ``modelLocation``)
gets Marqo's preprocessing for checkpoints: the ``imagePreprocessor``'s base config
(OpenCLIP/OpenAI, SigLIP or CLIPA) with ``mean``, ``std`` and ``size`` laid over it;
names and hub repositories use open_clip's own preprocessing for the model, as Marqo.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import open_clip
import torch

from modelctl.daemon.images import as_rgb
from modelctl.daemon.loaders.base import LoadedModel
from modelctl.daemon.loaders.references import names_filesystem
from modelctl.daemon.loaders.weights import (
    require_weights,
    resolve_hub_dir,
    resolve_hub_file,
)
from modelctl.errors import InvalidArgument, WeightsNotFound
from modelctl.registry import hub_id

if TYPE_CHECKING:
    from PIL.Image import Image

    from modelctl.registry import ModelSpec

_CHUNK = 32
_HF_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


class OpenClipModel(LoadedModel):
    def __init__(self, spec: ModelSpec, device: str, offline: bool) -> None:
        super().__init__(spec, device)
        model_name, pretrained = _locate(spec, offline)
        precision = spec.precision if device.startswith("cuda") else "fp32"
        try:
            if _from_checkpoint(spec) and pretrained is not None:
                model = open_clip.create_model(model_name, pretrained=pretrained,
                                               precision=precision, jit=spec.jit,
                                               device=device, weights_only=True)
                preprocess = marqo_checkpoint_preprocess(spec, _image_size(model))
            else:
                model, _, preprocess = open_clip.create_model_and_transforms(
                    model_name, pretrained=pretrained, precision=precision, device=device,
                    weights_only=True, pretrained_text=False)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:
            if pretrained is not None and Path(pretrained).is_file():
                raise _checkpoint_error(Path(pretrained), model_name, exc) from exc
            raise
        self.model = model.eval()
        self.preprocess = preprocess
        self._dtype = next(iter(model.parameters())).dtype
        self.tokenizer = (open_clip.tokenizer.HFTokenizer(spec.tokenizer) if spec.tokenizer
                          else open_clip.get_tokenizer(model_name))
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
        out: list[np.ndarray] = []
        counts: list[int] = []
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
                # Decoded one at a time, here (images.py): a pass holds one decoded image.
                pixels = torch.stack([self.preprocess(as_rgb(img))
                                      for img in images[start:start + _CHUNK]])
                features = self.model.encode_image(pixels.to(self.device, self._dtype),
                                                   normalize=normalize)
                out.append(features.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)


def _checkpoint_error(path: Path, arch: str, exc: Exception) -> InvalidArgument:
    """Say whether the file itself is bad or only does not fit ``arch``.

    Runs only after a load failed, so reading the file once more costs nothing on the
    good path (and ``mmap`` makes it cheap for torch's zip format anyway).
    """
    reason = _reason(exc)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            load_file(str(path), device="cpu")
        else:
            torch.load(path, map_location="cpu", weights_only=True,
                       mmap=zipfile.is_zipfile(path))
    except Exception as again:
        return InvalidArgument(f"the checkpoint {path} is corrupt, truncated or not a plain "
                               f"weights file: {_reason(again)}")
    return InvalidArgument(f"the checkpoint {path} does not fit the architecture {arch}: "
                           f"{reason}")


def _reason(exc: Exception) -> str:
    """One line of why, without torch's advice to retry with ``weights_only=False``."""
    paragraphs = [p.strip() for p in str(exc).split("\n\n") if p.strip()]
    if paragraphs and paragraphs[0].startswith("Weights only load failed") and \
            len(paragraphs) > 1:
        return f"the weights-only unpickler refused it ({paragraphs[1][:300]})"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__ if not isinstance(exc, EOFError) else "the file is empty"
    text = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]
    return f"{type(exc).__name__}: {text[:300]}"


def _output_dim(model: torch.nn.Module) -> int:
    projection = getattr(model, "text_projection", None)
    if isinstance(projection, torch.Tensor):
        return int(projection.shape[-1])
    if isinstance(projection, torch.nn.Linear):
        return int(projection.out_features)
    embed_dim = getattr(getattr(model, "visual", None), "output_dim", None)
    if embed_dim:
        return int(embed_dim)
    clip: Any = model  # a CLIP module; torch's stubs type its attributes as tensors
    with torch.inference_mode():
        return int(clip.encode_text(torch.zeros(1, 77, dtype=torch.long)).shape[-1])


def _locate(spec: ModelSpec, offline: bool) -> tuple[str, str | None]:
    """(model name for open_clip, local checkpoint path or None)."""
    source = spec.source
    hub = hub_id(source)
    if hub is not None:
        return f"local-dir:{resolve_hub_dir(hub, offline)}", None
    if source.startswith("local-dir:"):
        require_weights(Path(source[len("local-dir:"):]))
        return source, None
    hf_file = spec.extra.get("hf_file")
    if hf_file is not None:  # Marqo's modelLocation: {hf: {repoId, filename}}
        repo_id, filename = hf_file
        if not filename:
            return f"local-dir:{resolve_hub_dir(repo_id, offline)}", None
        return source, str(resolve_hub_file(repo_id, [filename], offline))
    if spec.custom and (spec.pretrained is None or names_filesystem(spec.pretrained)):
        return _locate_custom(spec)  # a checkpoint; else an arch and open_clip's tag
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
        return f"local-dir:{require_weights(checkpoint)}", None
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


def _from_checkpoint(spec: ModelSpec) -> bool:
    """A custom model whose weights are one checkpoint file (``localpath``, ``url``,
    ``modelLocation``): Marqo builds its preprocessing from the properties."""
    return spec.custom and bool(spec.extra.get("hf_file") or (
        spec.pretrained and names_filesystem(spec.pretrained)))


def _image_size(model: torch.nn.Module) -> int | None:
    size = getattr(getattr(model, "visual", None), "image_size", None)
    if isinstance(size, (tuple, list)):
        size = size[0]
    return int(size) if isinstance(size, int) else None


def marqo_checkpoint_preprocess(spec: ModelSpec, model_size: int | None) -> Any:
    """Marqo's image transform for a checkpoint: base config by preprocessor, then overrides.

    Without ``size`` Marqo resizes to 224 whatever the model takes, which fails on any
    other input size; modelctl uses the model's own size there instead.
    """
    from open_clip import pretrained
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    bases = {"OpenCLIP": pretrained._pcfg, "OpenAI": pretrained._pcfg,
             "SigLIP": pretrained._slpcfg, "CLIPA": pretrained._apcfg}
    base = bases[spec.image_preprocessor or "OpenCLIP"]()
    overlay = {"mean": spec.mean, "std": spec.std, "size": spec.size or model_size}
    config = PreprocessCfg(**merge_preprocess_dict(base, overlay))
    return image_transform_v2(config, is_train=False)
