"""Marqo's vectors per type, on the packaged MiniLM weights, against references computed
here from Marqo's documented algorithm (transformers ``AutoModel`` + pooling + L2;
sentence-transformers with ``max_seq_length``); Marqo's ``random``, ``test``,
``no_model``, ONNX names, refused types, dimension checks, cache identity and prefixes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelctl.errors import CacheManagementError, InvalidArgument
from modelctl.testing import Daemon, minilm_path

LONG = " ".join(["the daemon keeps one copy of every model it loads in memory"] * 40)
TEXTS = ["hello world", "A cat sat on the mat.", LONG, "query planning for vector search"]


@pytest.fixture(scope="module")
def hf_reference() -> Any:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    model = AutoModel.from_pretrained(minilm_path()).eval()

    def encode(texts: list[str], tokens: int, pooling: str) -> np.ndarray:
        batch = tokenizer(texts, padding=True, truncation=True, max_length=tokens,
                          return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        if pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()

    return encode


@pytest.fixture(scope="module")
def sbert_reference() -> Any:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(minilm_path(), device="cpu")

    def encode(texts: list[str], tokens: int) -> np.ndarray:
        model.max_seq_length = tokens
        raw = model.encode(texts, normalize_embeddings=False)
        return raw / np.linalg.norm(raw, axis=1, keepdims=True)

    return encode


def embed(d: Daemon, name: str, texts: list[str] | str, **kwargs: Any) -> np.ndarray:
    reply = d.client.embeddings(name, texts, **kwargs)
    return np.array([item["embedding"] for item in reply["data"]], dtype=np.float32)


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    cos = np.sum(got * want, axis=1) / (np.linalg.norm(got, axis=1)
                                        * np.linalg.norm(want, axis=1))
    assert float(cos.min()) >= 0.9999, cos
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)


@pytest.fixture
def loaded(daemon: Daemon) -> Iterator[list[str]]:
    """Names the test loads; ejected afterwards so the shared daemon stays clean."""
    names: list[str] = []
    yield names
    for name in names:
        try:
            daemon.client.eject(name)
        except Exception:
            pass


def test_hf_registry_spelling_is_marqos_hf_type(daemon: Daemon, loaded: list[str],
                                                 hf_reference: Any) -> None:
    loaded.append("hf/all-MiniLM-L6-v2")  # Marqo: tokens 256, pooling from 1_Pooling (mean)
    assert_close(embed(daemon, "hf/all-MiniLM-L6-v2", TEXTS), hf_reference(TEXTS, 256, "mean"))


def test_sbert_spellings_use_marqos_token_limit(daemon: Daemon, loaded: list[str],
                                                 sbert_reference: Any) -> None:
    loaded.extend(["all-MiniLM-L6-v2", "onnx/all-MiniLM-L6-v2"])
    want = sbert_reference(TEXTS, 256)
    assert_close(embed(daemon, "all-MiniLM-L6-v2", TEXTS), want)
    # An ONNX name runs as the same weights in torch, and says so.
    assert_close(embed(daemon, "onnx/all-MiniLM-L6-v2", TEXTS), want)
    entry = next(e for e in daemon.client.list_models() if e["name"] == "onnx/all-MiniLM-L6-v2")
    assert (entry["family"], entry["engine"], entry["marqo_engine"]) == (
        "sbert_onnx", "torch", "onnx")


@pytest.mark.parametrize(("pooling", "tokens"), [("cls", 16), ("mean", 40), ("cls", 200)])
def test_custom_hf_pooling_and_tokens(daemon: Daemon, loaded: list[str], hf_reference: Any,
                                      pooling: str, tokens: int) -> None:
    name = f"mine-hf-{pooling}-{tokens}"
    loaded.append(name)
    daemon.client.load_model(name, "cpu", properties={
        "type": "hf", "name": minilm_path(), "poolingMethod": pooling, "tokens": tokens,
        "dimensions": 384})
    assert_close(embed(daemon, name, TEXTS), hf_reference(TEXTS, tokens, pooling))


def test_custom_hf_defaults_128_tokens_and_reads_pooling_from_the_model(
        daemon: Daemon, loaded: list[str], hf_reference: Any, tmp_path: Path) -> None:
    loaded.extend(["mine-hf-default", "mine-hf-cls-config"])
    daemon.client.load_model("mine-hf-default", "cpu",
                             properties={"type": "hf", "name": minilm_path()})
    assert_close(embed(daemon, "mine-hf-default", TEXTS), hf_reference(TEXTS, 128, "mean"))
    # A model whose 1_Pooling/config.json says cls is pooled by cls.
    copy = tmp_path / "minilm-cls"
    shutil.copytree(minilm_path(), copy)
    config = copy / "1_Pooling" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()),
                                  "pooling_mode_cls_token": True,
                                  "pooling_mode_mean_tokens": False}))
    daemon.client.load_model("mine-hf-cls-config", "cpu",
                             properties={"type": "hf", "name": str(copy)})
    assert_close(embed(daemon, "mine-hf-cls-config", TEXTS), hf_reference(TEXTS, 128, "cls"))


@pytest.mark.parametrize("tokens", [64, 300])  # 300: above the model's own 256, as Marqo
def test_missing_type_is_sbert_with_tokens(daemon: Daemon, loaded: list[str],
                                           sbert_reference: Any, tokens: int) -> None:
    name = f"mine-untyped-{tokens}"
    loaded.append(name)
    daemon.client.load_model(name, "cpu", properties={"name": minilm_path(), "tokens": tokens})
    entry = next(e for e in daemon.client.list_models() if e["name"] == name)
    assert entry["family"] == "sbert" and entry["source"] == minilm_path()
    assert entry["properties"] == {"name": minilm_path(), "tokens": tokens}
    assert_close(embed(daemon, name, TEXTS), sbert_reference(TEXTS, tokens))


def test_test_type_cuts_to_its_dimensions(daemon: Daemon, loaded: list[str],
                                          sbert_reference: Any) -> None:
    loaded.append("mine-test")
    daemon.client.load_model("mine-test", "cpu", properties={
        "type": "test", "name": minilm_path(), "dimensions": 16, "tokens": 128})
    full = sbert_reference(TEXTS, 128)[:, :16]
    assert_close(embed(daemon, "mine-test", TEXTS),
                 full / np.linalg.norm(full, axis=1, keepdims=True))


def marqo_random(items: list[str], dims: int, single: bool) -> np.ndarray:
    hashes = [int(hashlib.sha256(t.encode()).hexdigest(), 16) % 10**8 for t in items]
    np.random.seed(hashes[0] if single else sum(hashes) // len(hashes))
    return np.random.rand(len(items), dims)


def test_random_is_marqos_seeded_vectors(daemon: Daemon, loaded: list[str]) -> None:
    loaded.append("random/small")
    single = embed(daemon, "random/small", "one text")
    assert np.allclose(single, marqo_random(["one text"], 32, True), atol=1e-7)
    many = embed(daemon, "random/small", TEXTS)
    assert many.shape == (4, 32)
    assert np.allclose(many, marqo_random(TEXTS, 32, False), atol=1e-7)
    assert not np.allclose(np.linalg.norm(many, axis=1), 1.0)  # Marqo does not normalise


def test_no_model_loads_and_refuses_to_embed(daemon: Daemon, loaded: list[str]) -> None:
    with pytest.raises(InvalidArgument, match="dimensions"):
        daemon.client.load_model("no_model", "cpu")
    loaded.append("vectors-brought")
    entry = daemon.client.load_model("vectors-brought", "cpu",
                                     properties={"type": "no_model", "dimensions": 8})
    assert entry["dimensions"] == 8
    with pytest.raises(InvalidArgument, match="no_model.*cannot embed"):
        daemon.client.embeddings("vectors-brought", ["x"])
    assert daemon.client.health()["status"] == "ok"


@pytest.mark.parametrize(("name", "properties", "why"), [
    ("LanguageBind/Video_V1.5_FT", None, "LanguageBind"),
    ("Marqo/dunzhang-stella_en_400M_v5", None, "trustRemoteCode"),
    ("remote", {"type": "hf", "name": "some/repo", "trustRemoteCode": True}, "trustRemoteCode"),
    ("vid", {"type": "languagebind", "name": "LanguageBind/Video"}, "LanguageBind"),
    ("odd", {"type": "hf", "name": "some/repo", "pooling": "max"}, "properties.pooling"),
    ("s3", {"type": "open_clip", "name": "ViT-B-32",
            "modelLocation": {"s3": {"Bucket": "b", "Key": "k"}}}, "S3"),
    ("bad-pool", {"type": "hf", "name": "some/repo", "poolingMethod": "max"}, "poolingMethod"),
])
def test_refused_types_and_fields_say_why(daemon: Daemon, name: str,
                                          properties: dict[str, Any] | None, why: str) -> None:
    with pytest.raises(InvalidArgument, match=why) as caught:
        daemon.client.load_model(name, "cpu", properties=properties)
    assert "unknown model" not in caught.value.message
    assert name not in {e["name"] for e in daemon.client.list_models()}


def test_declared_dimensions_are_checked(daemon: Daemon) -> None:
    with pytest.raises(InvalidArgument, match="dimensions is 512.*384"):
        daemon.client.load_model("wrong-dims", "cpu", properties={
            "type": "hf", "name": minilm_path(), "dimensions": 512})
    assert "wrong-dims" not in {e["name"] for e in daemon.client.list_models()}


def test_same_name_other_properties_is_a_409(daemon: Daemon, loaded: list[str]) -> None:
    loaded.append("mine-identity")
    first = {"type": "hf", "name": minilm_path(), "tokens": 32}
    daemon.client.load_model("mine-identity", "cpu", properties=first)
    again = daemon.client.load_model("mine-identity", "cpu", properties=dict(first))
    assert again["properties"] == first
    with pytest.raises(CacheManagementError, match="tokens") as caught:
        daemon.client.load_model("mine-identity", "cpu", properties={**first, "tokens": 64})
    assert caught.value.status == 409
    entries = [e for e in daemon.client.list_models() if e["name"] == "mine-identity"]
    assert len(entries) == 1 and entries[0]["properties"]["tokens"] == 32


def test_input_type_applies_the_models_prefixes(daemon: Daemon, loaded: list[str]) -> None:
    loaded.append("mine-prefixed")
    daemon.client.load_model("mine-prefixed", "cpu", properties={
        "type": "hf", "name": minilm_path(), "text_query_prefix": "query: ",
        "text_chunk_prefix": "passage: "})
    plain = embed(daemon, "mine-prefixed", ["green tea"])
    query = embed(daemon, "mine-prefixed", ["green tea"], input_type="query")
    document = embed(daemon, "mine-prefixed", ["green tea"], input_type="document")
    assert np.allclose(query, embed(daemon, "mine-prefixed", ["query: green tea"]), atol=1e-6)
    assert np.allclose(document, embed(daemon, "mine-prefixed", ["passage: green tea"]),
                       atol=1e-6)
    assert not np.allclose(plain, query, atol=1e-3)
    via_client = daemon.client.embed("mine-prefixed", ["green tea"], input_type="query")
    assert np.allclose(np.array(via_client), query, atol=1e-6)
    out = daemon.cli("embed", "mine-prefixed", "green tea", "--document", check=True).stdout
    assert np.allclose(np.array(json.loads(out)["embedding"]), document[0], atol=1e-6)
    both = daemon.cli("embed", "mine-prefixed", "x", "--query", "--document")
    assert both.returncode != 0


def test_url_to_a_local_archive_of_a_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           sbert_reference: Any) -> None:
    import tarfile

    from modelctl.daemon import loaders

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    archive = tmp_path / "minilm.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(minilm_path(), arcname="minilm")
    spec = loaders.spec_for("archived", {"type": "sbert", "url": f"file://{archive}",
                                         "dimensions": 384}, local_paths=True)
    model = loaders.load(spec, "cpu", offline=True)
    try:
        got, _ = model.encode_texts(TEXTS[:2], None)
        assert_close(got, sbert_reference(TEXTS[:2], 256))
    finally:
        model.release()
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not an archive")
    with pytest.raises(InvalidArgument, match="cannot extract"):
        loaders.load(loaders.spec_for("broken", {"type": "sbert", "url": f"file://{broken}"},
                                      local_paths=True), "cpu", offline=True)
