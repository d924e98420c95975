"""Registry parity with Marqo 2.13: every name resolves through the resolver with Marqo's
type, dimensions, tokens, pooling and prefixes; the CLI lists every name offline.

The shipped data is checked to be Marqo's own file (by hash); each name is then read
back through ``lookup`` (the code path the daemon uses) and compared with the raw
record, read here with ``json``, under Marqo's documented defaults; a table of
hand-written facts pins names whose values matter most.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

import modelctl.registry
from modelctl.errors import InvalidArgument
from modelctl.registry import lookup, resolve
from modelctl.testing import Daemon

DATA = Path(modelctl.registry.__file__).with_name("marqo-2.13.json")
# sha256 of Marqo 2.13.0's registry (model_registry.py's tables merged, as Marqo does).
MARQO_2_13_SHA256 = "12ea78009b30ebfca8229fe7e3529a930e04a30775563e2a3f5935e75e5837a4"
CLIP_TYPES = {"clip", "open_clip", "fp16_clip", "clip_onnx", "multilingual_clip"}

# name: (type, dimensions, tokens, pooling, query prefix, document prefix), from Marqo's
# model_registry.py by hand.
FACTS: dict[str, tuple[str, int, int | None, str | None, str | None, str | None]] = {
    "hf/bge-small-en-v1.5": ("hf", 384, 512, "mean",
                             "Represent this sentence for searching relevant passages: ", None),
    "hf/bge-large-en-v1.5": ("hf", 1024, 512, "mean",
                             "Represent this sentence for searching relevant passages: ", None),
    "hf/e5-small": ("hf", 384, 192, None, "query: ", "passage: "),
    "hf/e5-base": ("hf", 768, 192, None, "query: ", "passage: "),
    "hf/e5-large-v2": ("hf", 1024, 512, None, "query: ", "passage: "),
    "hf/e5-base-unsupervised": ("hf", 768, 128, None, "query: ", "passage: "),
    "hf/multilingual-e5-large-instruct": (
        "hf", 1024, 512, None,
        "Instruct: Given a web search query, retrieve relevant passages that answer the "
        "query\nQuery: ", None),
    "hf/snowflake-arctic-embed-m-v1.5": (
        "hf", 768, 512, None, "Represent this sentence for searching relevant passages: ", None),
    "hf/all-MiniLM-L6-v2": ("hf", 384, 256, None, None, None),
    "hf/GIST-large-Embedding-v0": ("hf", 1024, 512, None, None, None),
    "all-mpnet-base-v2": ("sbert", 768, 128, "mean", None, None),
    "sentence-transformers/all-MiniLM-L6-v2": ("sbert", 384, 256, "mean", None, None),
    "test": ("test", 16, 128, "mean", None, None),
    "test_prefix": ("test", 16, 128, "mean", "test query: ", "test passage: "),
    "onnx/all-mpnet-base-v2": ("sbert_onnx", 768, 128, "mean", None, None),
    "random/large": ("random", 768, 128, "mean", None, None),
    "random/small": ("random", 32, 128, "mean", None, None),
    "ViT-L/14@336px": ("clip", 768, 77, "mean", None, None),
    "fp16/ViT-B/32": ("fp16_clip", 512, 77, "mean", None, None),
    "open_clip/ViT-H-14/laion2b_s32b_b79k": ("open_clip", 1024, 77, "mean", None, None),
    "visheratin/nllb-clip-large-siglip": ("open_clip", 1152, 77, "mean", None, None),
    "onnx16/open_clip/ViT-B-16-plus-240/laion400m_e32": ("clip_onnx", 640, 77, "mean",
                                                          None, None),
    "multilingual-clip/XLM-R Large Vit-B/16+": ("multilingual_clip", 640, 77, "mean",
                                                None, None),
}


def marqo_records() -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = json.loads(DATA.read_text(encoding="utf-8"))
    return data


def test_shipped_data_is_marqo_2_13_registry() -> None:
    assert hashlib.sha256(DATA.read_bytes()).hexdigest() == MARQO_2_13_SHA256
    assert len(marqo_records()) == 240


def test_every_marqo_name_resolves_with_marqo_properties() -> None:
    for name, record in marqo_records().items():
        spec = lookup(name)
        assert spec is not None, name
        assert spec.family == record["type"], name
        assert spec.properties == record, name
        assert spec.dimensions == record.get("dimensions", 0), name
        assert spec.query_prefix == record.get("text_query_prefix"), name
        assert spec.chunk_prefix == record.get("text_chunk_prefix"), name
        kind = record["type"]
        if kind == "hf":
            assert spec.tokens == record.get("tokens", 128), name
            assert spec.pooling == record.get("poolingMethod"), name  # None: the model says
        elif kind in CLIP_TYPES:
            assert spec.tokens == record.get("tokens", 77) and "image" in spec.modalities
        else:
            assert spec.tokens == record.get("tokens"), name
        if kind in ("languagebind", "hf_stella"):
            with pytest.raises(InvalidArgument, match="LanguageBind|trustRemoteCode"):
                resolve(name)
        elif kind == "no_model":
            with pytest.raises(InvalidArgument, match="dimensions"):
                resolve(name)
        else:
            assert resolve(name) is spec


def test_hand_checked_facts() -> None:
    for name, (kind, dims, tokens, pooling, query, document) in FACTS.items():
        spec = resolve(name)
        assert (spec.family, spec.dimensions, spec.tokens, spec.pooling, spec.query_prefix,
                spec.chunk_prefix) == (kind, dims, tokens, pooling, query, document), name


def test_sources_architectures_and_engines() -> None:
    assert (resolve("ViT-L/14@336px").source, resolve("ViT-L/14@336px").pretrained) == (
        "ViT-L-14-336", "openai")
    fp16 = resolve("fp16/ViT-L/14")
    assert (fp16.source, fp16.pretrained, fp16.precision) == ("ViT-L-14", "openai", "fp16")
    onnx = resolve("onnx16/open_clip/ViT-L-14/laion2b_s32b_b82k")
    assert (onnx.source, onnx.pretrained, onnx.engine, onnx.marqo_engine) == (
        "ViT-L-14", "laion2b_s32b_b82k", "torch", "onnx")
    assert resolve("onnx32/openai/ViT-L/14").source == "ViT-L-14"
    assert resolve("onnx/all-MiniLM-L6-v2").source == "sentence-transformers/all-MiniLM-L6-v2"
    assert resolve("Marqo/marqo-fashionSigLIP").source == "hf-hub:Marqo/marqo-fashionSigLIP"
    mclip = resolve("multilingual-clip/XLM-Roberta-Large-Vit-B-32")
    assert (mclip.text_model, mclip.source) == ("M-CLIP/XLM-Roberta-Large-Vit-B-32",
                                                "openai/ViT-B/32")
    # Marqo's short sbert spellings are the same model as the long ones: one cache entry.
    assert resolve("all-MiniLM-L6-v2") is resolve("sentence-transformers/all-MiniLM-L6-v2")
    # ...but an hf/ spelling is Marqo's hf type, another model.
    assert resolve("hf/all-MiniLM-L6-v2").family == "hf"


def test_models_lists_every_name_with_dimensions_without_a_daemon(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    proc = d.cli("models", "--json", check=True)
    rows = json.loads(proc.stdout)
    names = {row["name"] for row in rows} | {a for row in rows for a in row["aliases"]}
    assert set(marqo_records()) <= names
    by_name = {row["name"]: row for row in rows}
    for name, record in marqo_records().items():
        row = by_name.get(name)
        if row is not None and record.get("dimensions"):
            assert row["dimensions"] == record["dimensions"], name
            assert row["properties"] == record, name
    assert by_name["LanguageBind/Video_V1.5_FT"]["refused"]
    table = d.cli("models", check=True, env={"COLUMNS": "200"}).stdout
    assert "onnx16/open_clip/RN50/openai" in table and "refused" in table
