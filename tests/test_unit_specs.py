"""What a model name, or Marqo's ``modelProperties``, means: ``loaders.spec_for`` alone.

No daemon and no weights: these check the parsing and the refusals (bad names, bad
properties, local paths over TCP) that every load goes through first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelctl.daemon.loaders import spec_for
from modelctl.errors import BadRequest, InvalidArgument


def test_registry_names_and_aliases() -> None:
    spec = spec_for("sentence-transformers/all-MiniLM-L6-v2", None, local_paths=False)
    assert (spec.family, spec.dimensions, spec.custom) == ("sbert", 384, False)
    alias = spec_for("all-MiniLM-L6-v2", None, local_paths=False)
    assert alias.name == spec.name  # an alias resolves to the registry's name
    clip = spec_for("ViT-L/14", None, local_paths=False)
    assert (clip.family, clip.source, clip.pretrained) == ("clip", "ViT-L-14", "openai")
    assert clip.modalities == ("text", "image") and spec.modalities == ("text",)


def test_open_clip_pairs_and_hub_names_outside_the_registry() -> None:
    spec = spec_for("open_clip/ViT-B-32/some_tag", None, local_paths=False)
    assert (spec.family, spec.source, spec.pretrained, spec.dimensions) == (
        "open_clip", "ViT-B-32", "some_tag", 0)  # dimensions known once loaded
    hub = spec_for("hf-hub:someone/some-clip", None, local_paths=False)
    assert (hub.family, hub.source) == ("open_clip", "hf-hub:someone/some-clip")


@pytest.mark.parametrize("name", ["", "   ", "a\x00b", "x" * 513, 42, None])
def test_bad_names(name: Any) -> None:
    with pytest.raises(InvalidArgument, match="non-empty string"):
        spec_for(name, None, local_paths=True)


def test_unknown_name_says_what_to_do() -> None:
    with pytest.raises(InvalidArgument, match="modelctl models") as info:
        spec_for("no-such/model", None, local_paths=True)
    assert info.value.status == 400 and "properties" in info.value.message


def test_local_directories_only_over_the_socket(tmp_path: Path) -> None:
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "modules.json").write_text("[]")
    (tmp_path / "plain").mkdir()
    assert spec_for(str(tmp_path / "st"), None, local_paths=True).family == "sbert"
    plain = spec_for(f"file://{tmp_path / 'plain'}", None, local_paths=True)
    assert (plain.family, plain.source, plain.custom) == ("hf", str(tmp_path / "plain"), True)
    with pytest.raises(InvalidArgument, match="no model directory"):
        spec_for(str(tmp_path / "missing"), None, local_paths=True)
    for name in (str(tmp_path / "st"), "./model", "~/model", "hf-hub:/tmp/x"):
        with pytest.raises(InvalidArgument, match="only over the Unix socket"):
            spec_for(name, None, local_paths=False)


def test_custom_properties_become_a_custom_spec() -> None:
    spec = spec_for("my-model", {"name": "org/repo", "type": "hf", "dimensions": 768,
                                 "tokens": 128, "model_size": 0.5}, local_paths=False)
    assert (spec.name, spec.family, spec.source, spec.dimensions, spec.tokens) == (
        "my-model", "hf", "org/repo", 768, 128)
    assert spec.custom and spec.approx_bytes == 500_000_000
    # Without properties.name the model's own name is the source.
    assert spec_for("org/repo", {"type": "sbert"}, local_paths=False).source == "org/repo"
    hub = spec_for("c", {"type": "open_clip", "name": "hf-hub:org/clip"}, local_paths=False)
    assert (hub.source, hub.pretrained) == ("hf-hub:org/clip", None)


def test_missing_type_is_sbert_as_in_marqo() -> None:
    spec = spec_for("org/repo", {}, local_paths=False)
    assert (spec.family, spec.source, spec.custom) == ("sbert", "org/repo", True)


def test_custom_checkpoints(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt.pt"
    clip = spec_for("c", {"type": "open_clip", "name": "ViT-B-32", "localpath": str(ckpt)},
                    local_paths=True)
    assert (clip.source, clip.pretrained) == ("ViT-B-32", str(ckpt))
    by_url = spec_for("c", {"type": "clip", "name": "ViT-B-32", "url": f"file://{ckpt}"},
                      local_paths=True)
    assert by_url.pretrained == str(ckpt)
    # For sbert and hf, a local path is the model's directory.
    sbert = spec_for("s", {"type": "sbert", "localpath": str(tmp_path)}, local_paths=True)
    assert (sbert.source, sbert.pretrained) == (str(tmp_path), None)
    with pytest.raises(InvalidArgument, match="only over the Unix socket"):
        spec_for("c", {"type": "open_clip", "name": "ViT-B-32", "localpath": str(ckpt)},
                 local_paths=False)


@pytest.mark.parametrize(("props", "field"), [
    ({"type": "onnx"}, "properties.type"),
    ({"type": "hf", "name": 7}, "properties.name"),
    ({"type": "hf", "name": "a\x00b"}, "properties.name"),
    ({"type": "hf", "dimensions": -1}, "properties.dimensions"),
    ({"type": "hf", "dimensions": True}, "properties.dimensions"),
    ({"type": "hf", "dimensions": 10**6}, "properties.dimensions"),
    ({"type": "hf", "tokens": 0}, "properties.tokens"),
    ({"type": "hf", "tokens": "512"}, "properties.tokens"),
    ({"type": "hf", "model_size": float("nan")}, "properties.model_size"),
    ({"type": "hf", "model_size": 1e300}, "properties.model_size"),
    ({"type": "hf", "model_size": "1GB"}, "properties.model_size"),
    ({"type": "hf", "url": "ftp://example.com/m.bin"}, "properties.url"),
    ({"type": "hf", "url": "https://user:pw@example.com/m.bin"}, "properties.url"),
    ({"type": "hf", "localpath": 5}, "properties.localpath"),
    ({"type": "open_clip", "name": "ViT-B-32-noslash"}, "properties.localpath"),
])
def test_bad_properties(props: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument, match=field.replace(".", r"\.")) as info:
        spec_for("custom", props, local_paths=True)
    assert info.value.status == 400


def test_properties_must_be_an_object() -> None:
    with pytest.raises(BadRequest, match="modelProperties"):
        spec_for("custom", ["type", "hf"], local_paths=True)  # type: ignore[arg-type]
