"""A model's size from its architecture alone, before any weights are read or fetched.

The architecture is built on torch's ``meta`` device, where tensors have a shape and a
dtype but no storage: counting ``numel * element_size`` over the parameters and
buffers costs about a second and no memory, even for a 10 GB ViT-bigG. Used when no
weights are on disk to measure, so that a budget is never skipped for want of a number.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from modelctl.registry import ModelSpec

log = logging.getLogger("modelctl.loaders")


def architecture_bytes(spec: ModelSpec) -> int | None:
    """Bytes of ``spec``'s parameters and buffers as it loads (float32), or ``None`` when
    the architecture itself is not on this machine (a hub model not yet downloaded)."""
    try:
        if spec.family in ("clip", "open_clip"):
            return _open_clip_bytes(spec)
        return _transformers_bytes(spec)
    except Exception as exc:  # an estimate only: the load reports real problems
        log.debug("no architecture estimate for %s: %r", spec.name, exc)
        return None


def _open_clip_bytes(spec: ModelSpec) -> int | None:
    import open_clip

    source = spec.source
    config: dict[str, Any] | None = None
    if source.startswith("local-dir:"):
        config = _read_json(Path(source[len("local-dir:"):]) / "open_clip_config.json")
    elif source.startswith("hf-hub:"):
        config = _cached_json(source[len("hf-hub:"):], "open_clip_config.json")
    if source.startswith(("local-dir:", "hf-hub:")):
        model_cfg = (config or {}).get("model_cfg")
        if not isinstance(model_cfg, dict):
            return None
        return _count(_build_clip(model_cfg))
    if source not in open_clip.list_models():
        return None
    import torch

    with torch.device("meta"), _quiet():
        return _count(open_clip.create_model(source, pretrained=None, device="meta"))


def _build_clip(model_cfg: dict[str, Any]) -> torch.nn.Module:
    import torch
    from open_clip.model import CLIP, CustomTextCLIP

    if "hf_model_name" in model_cfg.get("text_cfg", {}):
        # Its text tower's config lives on the hub; building it could reach the network.
        raise ValueError("a text tower from the hub")
    cls = CustomTextCLIP if model_cfg.get("custom_text") else CLIP
    cfg = {k: v for k, v in model_cfg.items() if k != "custom_text"}
    with torch.device("meta"), _quiet():
        return cls(**cfg)


def _transformers_bytes(spec: ModelSpec) -> int | None:
    from transformers import AutoConfig, AutoModel

    source = Path(spec.source).expanduser()
    if source.is_absolute():
        config_dir: Path | None = source if (source / "config.json").is_file() else None
    else:
        cached = _cached_file(spec.source, "config.json")
        config_dir = cached.parent if cached is not None else None
    if config_dir is None:
        return None
    import torch

    config = AutoConfig.from_pretrained(str(config_dir), trust_remote_code=False,
                                        local_files_only=True)
    with torch.device("meta"), _quiet():
        return _count(AutoModel.from_config(config, trust_remote_code=False))


def _count(model: torch.nn.Module) -> int:
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def _cached_file(repo_id: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(repo_id, filename)
    except Exception:  # not a valid repo id
        return None
    return Path(cached) if isinstance(cached, str) else None


def _cached_json(repo_id: str, filename: str) -> dict[str, Any] | None:
    path = _cached_file(repo_id, filename)
    return _read_json(path) if path is not None else None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class _RandomInitFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


_FILTER = _RandomInitFilter()


@contextlib.contextmanager
def _quiet() -> Any:
    """Without open_clip's "initialized randomly" warning (logged on the root logger)
    for a model built without weights, which is the point here."""
    root = logging.getLogger()
    if _FILTER not in root.filters:
        root.addFilter(_FILTER)  # kept: filters are shared by threads, not scoped
    yield
