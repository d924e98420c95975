"""Loaders: from a model name (and Marqo's ``modelProperties``) to a ``LoadedModel``.

``spec_for`` decides what a name means; ``load`` builds it on a device. ``load`` is the
one place where the libraries' exceptions (missing files, bad checkpoints, CUDA out
of memory) become ours. torch and the model libraries are imported inside ``load``,
so importing this package stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelctl.daemon.loaders.references import (
    check_filesystem_reference,
    check_not_reserved,
    check_printable,
    local_path_of,
    names_filesystem,
)
from modelctl.daemon.loaders.registry import FAMILIES, ModelSpec, lookup, resolve
from modelctl.errors import (
    ApiError,
    BadRequest,
    CacheManagementError,
    InvalidArgument,
    WeightsNotFound,
)

if TYPE_CHECKING:
    from modelctl.daemon.loaders.base import LoadedModel

__all__ = ["ModelSpec", "estimate_bytes", "is_local_path", "load", "spec_for"]

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def is_local_path(text: str) -> bool:
    return names_filesystem(text)


def spec_for(name: str, properties: dict[str, Any] | None, *, local_paths: bool) -> ModelSpec:
    """What ``name`` means: a registry name, a custom model, or a local directory.

    ``local_paths`` is False over TCP: there, a client may name registry models and
    custom hub models, never files on the daemon's machine.
    """
    if not isinstance(name, str) or not name.strip() or "\x00" in name or len(name) > 512:
        raise InvalidArgument("model name must be a non-empty string of at most 512 characters")
    check_printable(name)
    check_filesystem_reference(name, local_paths=local_paths)  # before any disk access
    if properties is not None:
        return _custom_spec(name, properties, local_paths=local_paths)
    spec = lookup(name)
    if spec is not None:
        return spec
    if is_local_path(name):
        path = Path(local_path_of(name)).expanduser()
        if not path.is_dir():
            raise InvalidArgument(f"no model directory at {path}")
        if "local-dir:" in name.lower():  # open_clip's own spelling of its hub layout
            return ModelSpec(name, "open_clip", 0, f"local-dir:{path}", tokens=77, custom=True)
        family = "sbert" if (path / "modules.json").exists() else "hf"
        return ModelSpec(name, family, 0, str(path), custom=True)
    return resolve(name)  # raises the unknown-name error


def _check_local_allowed(local_paths: bool, path: str) -> None:
    check_filesystem_reference(path, local_paths=local_paths, always_path=True)


def _custom_spec(name: str, props: dict[str, Any], *, local_paths: bool) -> ModelSpec:
    """A ``ModelSpec`` from Marqo's ``modelProperties`` shape."""
    if not isinstance(props, dict):
        raise BadRequest("properties must be an object (Marqo's modelProperties)")
    check_not_reserved(name)
    family = props.get("type")
    if family not in FAMILIES:
        raise InvalidArgument(f"properties.type must be one of {', '.join(FAMILIES)}, "
                              f"not {family!r}")
    source = props.get("name") or name
    dims = props.get("dimensions", 0)
    tokens = props.get("tokens")
    size_gb = props.get("model_size")
    if not isinstance(source, str) or "\x00" in source:
        raise InvalidArgument("properties.name must be a string")
    check_printable(source, "properties.name")
    if not isinstance(dims, int) or isinstance(dims, bool) or not 0 <= dims <= 65536:
        raise InvalidArgument("properties.dimensions must be an integer")
    if tokens is not None and (not isinstance(tokens, int) or not 1 <= tokens <= 65536):
        raise InvalidArgument("properties.tokens must be a positive integer")
    # A range check, not just a sign check: NaN or 1e300 GB would fail int() below.
    if size_gb is not None and (not isinstance(size_gb, (int, float))
                                or not 0 <= size_gb <= 1_000_000):
        raise InvalidArgument("properties.model_size must be a number of GB")
    checkpoint = props.get("localpath")
    url = props.get("url")
    if url is not None:
        if not isinstance(url, str) or not url.startswith("file://"):
            raise InvalidArgument(
                "properties.url: modelctl never fetches URLs on the server's side; download "
                "the checkpoint and give its path as properties.localpath")
        checkpoint = url
    if checkpoint is not None:
        if not isinstance(checkpoint, str):
            raise InvalidArgument("properties.localpath must be a string")
        _check_local_allowed(local_paths, checkpoint)
        checkpoint = str(Path(local_path_of(checkpoint)).expanduser())
    check_filesystem_reference(source, local_paths=local_paths)
    if is_local_path(source):
        path, spelled = Path(local_path_of(source)).expanduser(), source.strip().lower()
        source = (f"local-dir:{path}" if "local-dir:" in spelled else
                  f"hf-hub:{path}" if spelled.startswith("hf-hub:") else str(path))
    if family in ("sbert", "hf") and checkpoint is not None:
        source = checkpoint  # Marqo: a local directory of the model
    pretrained = checkpoint if family in ("clip", "open_clip") else None
    if family in ("clip", "open_clip") and pretrained is None and "/" not in source \
            and not source.startswith("hf-hub:"):
        raise InvalidArgument(f"custom {family} model {name!r} needs properties.localpath "
                              "(its checkpoint)")
    approx = int(size_gb * 10**9) if size_gb else None
    return ModelSpec(name, family, dims, source, pretrained=pretrained, tokens=tokens,
                     approx_bytes=approx, custom=True)


def estimate_bytes(spec: ModelSpec, offline: bool) -> int | None:
    """How much memory a load of ``spec`` will take, before loading it.

    From the weights on disk when they are here (float32 weights load at their file
    size), else from the architecture (estimate.py), else the registry's figure.
    """
    from modelctl.daemon.loaders.estimate import architecture_bytes
    from modelctl.daemon.loaders.weights import packaged_weights

    candidates: list[Path] = []
    for raw in (spec.pretrained, spec.source):
        if raw and (raw.startswith("/") or raw.startswith(".")):
            candidates.append(Path(raw))
    packaged = packaged_weights(spec.source)
    if packaged is not None:
        candidates.append(packaged)
    if not spec.custom and spec.family in ("sbert", "hf"):
        try:
            from huggingface_hub import snapshot_download

            candidates.append(Path(snapshot_download(spec.source, local_files_only=True)))
        except Exception:
            pass
    for path in candidates:
        size = _weights_size(path)
        if size:
            return size
    return architecture_bytes(spec) or spec.approx_bytes


def _weights_size(path: Path) -> int | None:
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return None
    files = [p for p in path.rglob("*") if p.suffix in _WEIGHT_SUFFIXES and p.is_file()]
    safetensors = [p for p in files if p.suffix == ".safetensors"]
    chosen = safetensors or files  # both formats side by side hold the same weights once
    return sum(p.stat().st_size for p in chosen) or None


def load(spec: ModelSpec, device: str, offline: bool) -> LoadedModel:
    """Build ``spec`` on ``device`` (blocking; run it in a worker thread)."""
    import torch

    from modelctl.daemon.loaders.weights import resolve_hub_dir

    try:
        if spec.family == "sbert":
            from modelctl.daemon.loaders.sbert import SbertModel

            return SbertModel(spec, device, resolve_hub_dir(spec.source, offline))
        if spec.family == "hf":
            from modelctl.daemon.loaders.hf import HfModel

            return HfModel(spec, device, resolve_hub_dir(spec.source, offline))
        from modelctl.daemon.loaders.open_clip import OpenClipModel

        return OpenClipModel(spec, device, offline)
    except ApiError:
        raise
    except torch.cuda.OutOfMemoryError as exc:
        raise CacheManagementError(f"out of memory on {device} while loading {spec.name}: "
                                   f"{str(exc).splitlines()[0]}") from exc
    except FileNotFoundError as exc:
        raise WeightsNotFound(f"cannot load {spec.name}: {exc}") from exc
    except (OSError, ValueError, RuntimeError, KeyError, EOFError, TypeError) as exc:
        # Bad or truncated checkpoints, config mismatches, unpickling refused by
        # weights_only: all are "these weights cannot be loaded", not our bug.
        first = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__
        raise InvalidArgument(f"cannot load {spec.name} on {device}: {first}") from exc
    except Exception as exc:
        if type(exc).__module__.startswith(("safetensors", "pickle", "_pickle", "zipfile")):
            raise InvalidArgument(f"cannot load {spec.name}: corrupt weights ({exc})") from exc
        raise


def offline_available(spec: ModelSpec) -> tuple[bool, str | None]:
    """Whether ``spec``'s weights are on this machine, and where."""
    from modelctl.daemon.loaders.weights import packaged_weights

    packaged = packaged_weights(spec.source)
    if packaged is not None:
        return True, str(packaged)
    try:
        from huggingface_hub import snapshot_download, try_to_load_from_cache

        if spec.family in ("sbert", "hf"):
            return True, snapshot_download(spec.source, local_files_only=True)
        if spec.source.startswith("hf-hub:"):
            return True, snapshot_download(spec.source[7:], local_files_only=True)
        import open_clip

        cfg = open_clip.get_pretrained_cfg(spec.source, spec.pretrained or "")
        hub = (cfg or {}).get("hf_hub", "").rstrip("/")
        if hub:
            repo = hub if hub.count("/") == 1 else hub.rsplit("/", 1)[0]
            for fname in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
                cached = try_to_load_from_cache(repo, fname)
                if isinstance(cached, str):
                    return True, os.path.dirname(cached)
    except Exception:
        pass
    return False, None
