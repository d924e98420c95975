"""open_clip checkpoints with Marqo's preprocessing properties, and multilingual_clip, on
small random models built here (their real weights are not on this machine).

The image tensor the model is fed must equal what Marqo's checkpoint preprocessing
makes: the ``imagePreprocessor``'s base (OpenCLIP/OpenAI: OpenAI's mean/std, bicubic,
shortest-side resize; SigLIP: 0.5s, bicubic, squash; CLIPA: ImageNet's, bilinear,
squash), ``mean``/``std``/``size`` laid over it. Without ``size`` Marqo uses 224, which
fails on a model of another input size; modelctl uses the model's own (32 here).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelctl.daemon import loaders
from modelctl.errors import InvalidArgument
from modelctl.testing import TINY_CLIP_CONFIG, make_tiny_clip, minilm_path

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
BASES: dict[str, dict[str, Any]] = {
    "OpenCLIP": {"mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic",
                 "resize_mode": "shortest"},
    "OpenAI": {"mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic",
               "resize_mode": "shortest"},
    "SigLIP": {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic",
               "resize_mode": "squash"},
    "CLIPA": {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
              "interpolation": "bilinear", "resize_mode": "squash"},
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_tiny_clip(tmp_path_factory.mktemp("marqo-clip"), arch="marqo-tiny-clip")


@pytest.fixture(scope="module")
def picture() -> Any:
    from PIL import Image

    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 255, (61, 97, 3), dtype=np.uint8), "RGB")


def marqo_transform(preprocessor: str, overrides: dict[str, Any]) -> Any:
    from open_clip.transform import PreprocessCfg, image_transform_v2

    config = {"size": 224, **BASES[preprocessor], **overrides}
    return image_transform_v2(PreprocessCfg(**config), is_train=False)


@pytest.mark.parametrize(("extra", "preprocessor", "overrides"), [
    ({}, "OpenCLIP", {"size": 32}),
    ({"imagePreprocessor": "SigLIP", "size": 32}, "SigLIP", {"size": 32}),
    ({"imagePreprocessor": "CLIPA", "mean": [0.1, 0.2, 0.3], "std": [0.9, 0.8, 0.7],
      "size": 40}, "CLIPA", {"mean": (0.1, 0.2, 0.3), "std": (0.9, 0.8, 0.7), "size": 40}),
    ({"imagePreprocessor": "OpenAI", "precision": "fp16", "size": 32}, "OpenAI",
     {"size": 32}),
])
def test_checkpoint_preprocessing_is_marqos(checkpoint: dict[str, Any], picture: Any,
                                           extra: dict[str, Any], preprocessor: str,
                                           overrides: dict[str, Any]) -> None:
    import torch

    spec = loaders.spec_for("tiny", {**checkpoint, **extra}, local_paths=True)
    model = loaders.load(spec, "cpu", offline=True)
    try:
        fed = model.preprocess(picture)  # type: ignore[attr-defined]
        want = marqo_transform(preprocessor, overrides)(picture)
        assert fed.shape == want.shape and torch.equal(fed, want)
        # fp16 is a cuda precision: on cpu the weights stay fp32, as Marqo's fp16 models.
        clip: Any = model.model  # type: ignore[attr-defined]
        assert next(clip.parameters()).dtype == torch.float32
        if overrides.get("size") == 32:  # the tiny model's own input size: embed it
            got = model.encode_images([picture], None)
            with torch.no_grad():
                ref = clip.encode_image(want[None], normalize=True).numpy()
            assert np.allclose(got, ref, atol=1e-5)
    finally:
        model.release()


def test_bad_preprocessing_properties_are_refused(checkpoint: dict[str, Any]) -> None:
    for field, value in (("imagePreprocessor", "Inception"), ("precision", "bf16"),
                         ("mean", [0.5, "x", 0.5]), ("std", [0, 1, 1]), ("size", -3),
                         ("jit", "yes")):
        with pytest.raises(InvalidArgument, match=f"properties.{field}"):
            loaders.spec_for("tiny", {**checkpoint, field: value}, local_paths=True)


def _hub_layout_clip(directory: Path) -> Path:
    """The tiny CLIP in open_clip's hub layout (what ``hf-hub:`` names resolve to)."""
    import open_clip
    import torch

    props = make_tiny_clip(directory / "ckpt", arch="marqo-tiny-visual", seed=3)
    model = open_clip.create_model("marqo-tiny-visual", pretrained=props["localpath"])
    hub = directory / "hub"
    hub.mkdir()
    (hub / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": TINY_CLIP_CONFIG,
        "preprocess_cfg": {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD)}}))
    torch.save(model.state_dict(), hub / "open_clip_pytorch_model.bin")
    return hub


def _mclip_text_tower(directory: Path, dims: int) -> Path:
    """An M-CLIP text model: MiniLM as the encoder, a random projection to ``dims``."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    text = directory / "mclip"
    text.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"):
        shutil.copy(Path(minilm_path()) / name, text / name)
    (text / "config.json").write_text(json.dumps({
        "model_type": "M-CLIP", "modelBase": minilm_path(), "transformerDimensions": 384,
        "numDims": dims}))
    encoder = load_file(str(Path(minilm_path()) / "model.safetensors"))
    torch.manual_seed(11)
    state = {f"transformer.{k}": v for k, v in encoder.items()}
    state["LinearTransformation.weight"] = torch.randn(dims, 384) * 0.05
    state["LinearTransformation.bias"] = torch.randn(dims) * 0.01
    save_file(state, str(text / "model.safetensors"))
    return text


def test_multilingual_clip_text_and_image_towers(tmp_path: Path, picture: Any) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    dims = TINY_CLIP_CONFIG["embed_dim"]
    hub = _hub_layout_clip(tmp_path)
    text_dir = _mclip_text_tower(tmp_path, dims)
    props = {"type": "multilingual_clip", "name": "mine-mclip", "dimensions": dims,
             "textual_model": str(text_dir), "visual_model": f"hf-hub:{hub}"}
    with pytest.raises(InvalidArgument, match="Unix socket"):
        loaders.spec_for("mine-mclip", props, local_paths=False)
    model = loaders.load(loaders.spec_for("mine-mclip", props, local_paths=True), "cpu", True)
    try:
        texts = ["ein Hund im Schnee", "a dog in the snow", "un chien"]
        got, _ = model.encode_texts(texts, None)
        # M-CLIP's forward: mean over the attention mask, then the linear projection.
        tokenizer = AutoTokenizer.from_pretrained(str(text_dir))
        encoder = AutoModel.from_pretrained(minilm_path()).eval()
        head = load_file(str(text_dir / "model.safetensors"))
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = encoder(**batch)[0]
            mask = batch["attention_mask"]
            pooled = (hidden * mask.unsqueeze(2)).sum(1) / mask.sum(1)[:, None]
            want = pooled @ head["LinearTransformation.weight"].T + head[
                "LinearTransformation.bias"]
            want = torch.nn.functional.normalize(want, dim=1).numpy()
        assert got.shape == (3, dims)
        assert float(np.sum(got * want, axis=1).min()) >= 0.9999
        image = model.encode_images([picture], None)
        assert image.shape == (1, dims) and np.isclose(np.linalg.norm(image), 1.0, atol=1e-5)
        assert model.modalities == ("text", "image")
    finally:
        model.release()
