"""``ModelSpec`` and the one parse from Marqo's modelProperties to it.

Registry records and clients' custom ``properties`` go through the same ``parse``, so a
registry name and a custom model with the same record are the same model. Fields are
checked by Marqo's type: a field Marqo does not accept for that type, or one modelctl
cannot honour, is a 400 that names it. Stdlib only: the CLI imports this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from modelctl.errors import InvalidArgument

HF_HUB_PREFIX = "hf-hub:"
# Marqo's types. Refused ones need code from the model's repository, or a runtime
# modelctl does not ship; they are known (listed, with why) but never loaded.
FAMILIES = ("sbert", "hf", "clip", "open_clip", "fp16_clip", "test", "random", "no_model",
            "sbert_onnx", "clip_onnx", "multilingual_clip")
REFUSED_FAMILIES = ("languagebind", "hf_stella")
CLIP_FAMILIES = ("clip", "open_clip", "fp16_clip", "clip_onnx", "multilingual_clip")
PRECISIONS = ("fp32", "fp16")
IMAGE_PREPROCESSORS = ("OpenCLIP", "OpenAI", "SigLIP", "CLIPA")
POOLING_METHODS = ("mean", "cls")
NO_MODEL_DIMS = ("no_model needs properties.dimensions (the size of the vectors its index "
                 "is given), as in Marqo")
DEFAULT_HF_TOKENS = 128  # Marqo's hf default when tokens is absent

_COMMON = {"name", "type", "dimensions", "tokens", "model_size", "note", "notes",
           "text_query_prefix", "text_chunk_prefix", "trustRemoteCode", "url", "localpath",
           "modelLocation"}
_CLIP = {"jit", "precision", "tokenizer", "imagePreprocessor", "mean", "std", "size",
         "pretrained"}
FIELDS: dict[str, set[str]] = {
    "sbert": _COMMON, "test": _COMMON, "sbert_onnx": _COMMON,
    "hf": _COMMON | {"poolingMethod"},
    "clip": _COMMON | _CLIP, "fp16_clip": _COMMON | _CLIP, "open_clip": _COMMON | _CLIP,
    "clip_onnx": _COMMON | {"pretrained", "repo_id", "resolution", "textual_file",
                            "visual_file", "image_mean", "image_std", "token"},
    "multilingual_clip": _COMMON | {"textual_model", "visual_model"},
    "random": _COMMON, "no_model": _COMMON,
}


@dataclass(frozen=True)
class ModelSpec:
    """How to build one model. ``source`` is a hub id, a local path or an open_clip arch.

    ``family`` is Marqo's ``type``. ``pooling`` ``None`` means: read it from the model's
    ``1_Pooling/config.json`` at load (Marqo's rule for hf models without poolingMethod).
    ``engine`` is what runs the model here; ``marqo_engine`` what Marqo runs for the name
    when it differs (ONNX names run as the same weights in torch).
    """

    name: str
    family: str
    dimensions: int
    source: str
    pretrained: str | None = None  # open_clip's pretrained tag, or a checkpoint path
    tokens: int | None = None
    pooling: str | None = "mean"
    normalize: bool = True
    approx_bytes: int | None = None
    aliases: tuple[str, ...] = ()
    custom: bool = False
    precision: str = "fp32"
    engine: str = "torch"
    marqo_engine: str | None = None
    query_prefix: str | None = None
    chunk_prefix: str | None = None
    image_preprocessor: str | None = None  # set: Marqo's checkpoint preprocessing
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    size: int | None = None
    jit: bool = False
    tokenizer: str | None = None
    text_model: str | None = None  # multilingual_clip: the text tower's hub id
    truncate: int | None = None  # test: keep the first N dimensions
    refused: str | None = None  # why this name can never be loaded here
    properties: dict[str, Any] = field(default_factory=dict, compare=False)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def modalities(self) -> tuple[str, ...]:
        if self.family in CLIP_FAMILIES or self.family == "random":
            return ("text", "image")
        return ("text",)

    @property
    def needs_weights(self) -> bool:
        return self.family not in ("random", "no_model")


def clip_arch(name: str) -> str:
    """open_clip's architecture for an OpenAI CLIP name: ``ViT-L/14@336px`` -> ``ViT-L-14-336``."""
    return name.replace("@336px", "-336").replace("/", "-")


def refusal(name: str, props: dict[str, Any]) -> str | None:
    kind = props.get("type")
    if kind == "languagebind":
        return (f"{name} is a LanguageBind model: it needs the languagebind package and "
                "code from the model's repository, which modelctl does not run")
    if kind == "hf_stella" or props.get("trustRemoteCode") is True:
        return (f"{name} needs code from the model's repository (trustRemoteCode), and "
                "modelctl never runs remote code")
    return None


def parse(name: str, props: dict[str, Any], *, custom: bool) -> ModelSpec:
    """The spec for ``name`` from its modelProperties record (registry or client's)."""
    if not isinstance(props, dict):
        raise InvalidArgument("properties must be an object (Marqo's modelProperties)")
    kind = props.get("type", "sbert")  # Marqo's default
    reason = refusal(name, props)
    if reason is not None:
        if custom:
            raise InvalidArgument(reason)
        tokens = props.get("tokens")
        return ModelSpec(name, str(kind), _int(props, "dimensions", 0), str(props.get("name")),
                         tokens=tokens if isinstance(tokens, int) else None, refused=reason,
                         properties=dict(props))
    if kind not in FAMILIES:
        raise InvalidArgument(f"properties.type must be one of {', '.join(FAMILIES)} "
                              f"({', '.join(REFUSED_FAMILIES)} are refused), not {kind!r}")
    if custom:
        unknown = sorted(set(props) - FIELDS[kind])
        if unknown:
            raise InvalidArgument(f"properties.{unknown[0]} is not a modelProperties field of "
                                  f"a {kind} model (fields: {', '.join(sorted(FIELDS[kind]))})")
    source = props.get("name", name if kind != "no_model" else "no_model")
    if not isinstance(source, str) or not source or "\x00" in source:
        raise InvalidArgument("properties.name must be a non-empty string")
    dims = _int(props, "dimensions", 0)
    tokens = props.get("tokens")
    if tokens is not None:
        tokens = _int(props, "tokens", 0, low=1)
    common: dict[str, Any] = dict(
        tokens=tokens, custom=custom, properties=dict(props),
        query_prefix=_text(props, "text_query_prefix"),
        chunk_prefix=_text(props, "text_chunk_prefix"),
        approx_bytes=_approx_bytes(props))
    if kind in ("sbert", "test", "sbert_onnx"):
        return ModelSpec(name, kind, dims, source, truncate=dims if kind == "test" else None,
                         marqo_engine="onnx" if kind == "sbert_onnx" else None, **common)
    if kind == "hf":
        pooling = props.get("poolingMethod")
        if pooling is not None and pooling not in POOLING_METHODS:
            raise InvalidArgument(f"properties.poolingMethod must be mean or cls, not "
                                  f"{pooling!r}")
        common["tokens"] = tokens or DEFAULT_HF_TOKENS
        return ModelSpec(name, kind, dims, source, pooling=pooling, **common)
    if kind in ("random", "no_model"):
        if kind == "no_model" and dims <= 0 and custom:
            raise InvalidArgument(NO_MODEL_DIMS)
        return ModelSpec(name, kind, dims, source, **common)
    if kind == "multilingual_clip":
        text_model, visual = props.get("textual_model"), props.get("visual_model")
        if not isinstance(text_model, str) or not isinstance(visual, str):
            raise InvalidArgument("a multilingual_clip model needs properties.textual_model "
                                  "and properties.visual_model")
        common["tokens"] = tokens or 77
        return ModelSpec(name, kind, dims, visual, text_model=text_model, **common)
    return _clip_spec(name, kind, dims, source, props, common)


def _clip_spec(name: str, kind: str, dims: int, source: str, props: dict[str, Any],
               common: dict[str, Any]) -> ModelSpec:
    common["tokens"] = common["tokens"] or 77
    precision = props.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise InvalidArgument(f"properties.precision must be fp32 or fp16, not {precision!r}")
    if kind == "clip_onnx":  # onnx16/open_clip/ARCH/TAG or onnx32/openai/ViT-L/14
        parts = source.split("/")
        if len(parts) == 4 and parts[1] == "open_clip":
            arch, tag = parts[2], parts[3]
        else:
            arch, tag = clip_arch("/".join(parts[2:])), "openai"
        return ModelSpec(name, kind, dims, arch, pretrained=tag, marqo_engine="onnx", **common)
    if kind == "fp16_clip":
        return ModelSpec(name, kind, dims, clip_arch(source.removeprefix("fp16/")),
                         pretrained="openai", precision="fp16", **common)
    jit = props.get("jit", False)
    if not isinstance(jit, bool):
        raise InvalidArgument("properties.jit must be true or false")
    preprocessor = props.get("imagePreprocessor")
    if preprocessor is not None and preprocessor not in IMAGE_PREPROCESSORS:
        raise InvalidArgument(f"properties.imagePreprocessor must be one of "
                              f"{', '.join(IMAGE_PREPROCESSORS)}, not {preprocessor!r}")
    size = props.get("size")
    if size is not None:
        size = _int(props, "size", 0, low=1, high=4096)
    tokenizer = props.get("tokenizer")
    if tokenizer is not None and (not isinstance(tokenizer, str) or not tokenizer):
        raise InvalidArgument("properties.tokenizer must be a Hugging Face tokenizer id")
    pretrained = props.get("pretrained")
    if kind == "clip" and not common["custom"]:
        source, pretrained = clip_arch(source), "openai"
    elif kind == "open_clip" and source.startswith("open_clip/") and source.count("/") == 2:
        _, source, pretrained = source.split("/")
    elif kind == "clip":
        source = clip_arch(source)
    return ModelSpec(name, kind, dims, source, pretrained=pretrained, precision=precision,
                     jit=jit, image_preprocessor=preprocessor,
                     mean=_triple(props, "mean"), std=_triple(props, "std"), size=size,
                     tokenizer=tokenizer, **common)


def _int(props: dict[str, Any], key: str, default: int, *, low: int = 0,
         high: int = 65536) -> int:
    value = props.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidArgument(f"properties.{key} must be an integer from {low} to {high}")
    return value


def _text(props: dict[str, Any], key: str) -> str | None:
    value = props.get(key)
    if value is not None and (not isinstance(value, str) or len(value) > 1000):
        raise InvalidArgument(f"properties.{key} must be a string of at most 1000 characters")
    return value or None


def _triple(props: dict[str, Any], key: str) -> tuple[float, ...] | None:
    value = props.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) not in (1, 3) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in value):
        raise InvalidArgument(f"properties.{key} must be a list of 3 numbers (one per channel)")
    if key == "std" and any(v == 0 for v in value):
        raise InvalidArgument("properties.std must not hold 0")
    return tuple(float(v) for v in value)


def _approx_bytes(props: dict[str, Any]) -> int | None:
    size_gb = props.get("model_size")
    # A range check, not just a sign check: NaN or 1e300 GB would fail int() below.
    if size_gb is not None and (not isinstance(size_gb, (int, float)) or isinstance(size_gb, bool)
                                or not 0 <= size_gb <= 1_000_000):
        raise InvalidArgument("properties.model_size must be a number of GB")
    return int(size_gb * 10**9) if size_gb else None
