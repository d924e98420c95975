"""Loaders: from a model name (and Marqo's ``modelProperties``) to a ``LoadedModel``.

``spec_for`` decides what a name means; ``load`` builds it on a device. ``load`` is the
one place where the libraries' exceptions (missing files, bad checkpoints, CUDA out
of memory) become ours. torch and the model libraries are imported inside ``load``,
so importing this package stays cheap.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelctl.daemon.loaders.references import (
    check_filesystem_reference,
    check_not_reserved,
    check_printable,
    local_path_of,
    names_filesystem,
)
from modelctl.errors import (
    ApiError,
    BadRequest,
    CacheManagementError,
    InvalidArgument,
    WeightsNotFound,
)
from modelctl.registry import CLIP_FAMILIES, HF_HUB_PREFIX, ModelSpec, hub_id, lookup, resolve
from modelctl.registry.spec import parse

if TYPE_CHECKING:
    from modelctl.daemon.loaders.base import LoadedModel

__all__ = ["ModelSpec", "estimate_bytes", "is_local_path", "load", "spec_for"]

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def is_local_path(text: str) -> bool:
    return names_filesystem(text)


def spec_for(name: str, properties: dict[str, Any] | None, *, local_paths: bool,
             url_downloads: bool | None = None) -> ModelSpec:
    """What ``name`` means: a registry name, a custom model, or a local directory.

    ``local_paths`` is False over TCP: there, a client may name registry models and
    custom hub models, never files on the daemon's machine. ``url_downloads``: whether
    an http(s) ``properties.url`` may be fetched (default: where local paths may be
    named; over TCP only if the daemon's operator allows it, see ``downloads.py``).
    """
    if not isinstance(name, str) or not name.strip() or "\x00" in name or len(name) > 512:
        raise InvalidArgument("model name must be a non-empty string of at most 512 characters")
    check_printable(name)
    check_filesystem_reference(name, local_paths=local_paths)  # before any disk access
    if properties is not None:
        return _custom_spec(name, properties, local_paths=local_paths,
                            url_downloads=local_paths if url_downloads is None else url_downloads)
    spec = lookup(name)
    if spec is not None:
        hub = hub_id(spec.source)
        if hub is not None and is_local_path(hub):
            _check_local_allowed(local_paths, name)  # hf-hub:/dir is a directory here
        return resolve(name)  # raises for refused names and a no_model without dimensions
    if is_local_path(name):
        path = Path(local_path_of(name)).expanduser()
        if not path.is_dir():
            raise InvalidArgument(f"no model directory at {path}")
        if "local-dir:" in name.lower():  # open_clip's own spelling of its hub layout
            return ModelSpec(name, "open_clip", 0, f"local-dir:{path}", tokens=77, custom=True)
        family = "sbert" if (path / "modules.json").exists() else "hf"
        return parse(name, {"type": family, "name": str(path)}, custom=True)
    return resolve(name)  # raises the unknown-name error


def _check_local_allowed(local_paths: bool, path: str) -> None:
    check_filesystem_reference(path, local_paths=local_paths, always_path=True)


def _custom_spec(name: str, props: dict[str, Any], *, local_paths: bool,
                 url_downloads: bool) -> ModelSpec:
    """A ``ModelSpec`` from Marqo's ``modelProperties``, with where its weights come from."""
    if not isinstance(props, dict):
        raise BadRequest("properties must be an object (Marqo's modelProperties)")
    check_not_reserved(name)
    spec = parse(name, props, custom=True)
    check_printable(spec.source, "properties.name")
    url = _download_url(props, url_downloads)
    checkpoint = None if url is not None else _checkpoint(props, local_paths)
    hf_file = _model_location(props)
    source = spec.source
    check_filesystem_reference(source, local_paths=local_paths)
    if is_local_path(source):
        path, spelled = Path(local_path_of(source)).expanduser(), source.strip().lower()
        source = (f"local-dir:{path}" if "local-dir:" in spelled else
                  f"{HF_HUB_PREFIX}{path}" if spelled.startswith(HF_HUB_PREFIX) else str(path))
    for named in (spec.text_model, spec.tokenizer):
        if named is not None:
            check_filesystem_reference(named, local_paths=local_paths)
    pretrained = spec.pretrained
    extra: dict[str, Any] = {}
    if url is not None:
        extra["url"] = url  # fetched by ``load``, in its worker thread
        if spec.family in CLIP_FAMILIES:
            pretrained = None
    elif spec.family in CLIP_FAMILIES:
        if checkpoint is not None:
            pretrained = checkpoint
        elif hf_file is not None:
            extra["hf_file"] = hf_file
            pretrained = None
    elif checkpoint is not None:
        source = checkpoint  # Marqo: a local directory of the model
    elif hf_file is not None:
        source = hf_file[0]
        if hf_file[1]:  # an archive of the model in that repository (Marqo's zip)
            extra["hf_file"] = hf_file
    if spec.family in ("clip", "open_clip") and pretrained is None and not extra \
            and "/" not in spec.source and hub_id(source) is None:
        raise InvalidArgument(f"custom {spec.family} model {name!r} needs its weights: "
                              "properties.localpath, url or modelLocation")
    return replace(spec, source=source, pretrained=pretrained, extra=extra)


def _checkpoint(props: dict[str, Any], local_paths: bool) -> str | None:
    checkpoint = props.get("localpath")
    url = props.get("url")
    given = [key for key in ("localpath", "url", "modelLocation") if props.get(key) is not None]
    if len(given) > 1:
        raise InvalidArgument(f"properties: give only one of localpath, url and modelLocation "
                              f"(got {', '.join(given)})")
    if url is not None:
        if not isinstance(url, str) or not url.strip().lower().startswith("file://"):
            raise InvalidArgument("properties.url must be an http(s) or file:// URL")
        checkpoint = url
    if checkpoint is None:
        return None
    if not isinstance(checkpoint, str):
        raise InvalidArgument("properties.localpath must be a string")
    _check_local_allowed(local_paths, checkpoint)
    return str(Path(local_path_of(checkpoint)).expanduser())


def _download_url(props: dict[str, Any], allowed: bool) -> str | None:
    """An http(s) ``properties.url`` that may be fetched; None for any other value."""
    from modelctl.daemon.loaders.downloads import check_download_url, is_download_url

    url = props.get("url")
    if not is_download_url(url):
        return None
    if props.get("localpath") is not None or props.get("modelLocation") is not None:
        return None  # _checkpoint names the conflict
    if not allowed:
        raise InvalidArgument(
            "properties.url: this daemon fetches URLs for clients of its Unix socket only; "
            "its operator can allow TCP clients with MODELCTL_ALLOW_URL_DOWNLOADS=1, or "
            "download the weights and load them over the socket")
    return check_download_url(str(url))


def _model_location(props: dict[str, Any]) -> tuple[str, str] | None:
    """``(repoId, filename)`` of Marqo's ``modelLocation.hf`` (filename may be empty)."""
    location = props.get("modelLocation")
    if location is None:
        return None
    if not isinstance(location, dict):
        raise InvalidArgument("properties.modelLocation must be an object")
    if "s3" in location:
        raise InvalidArgument("properties.modelLocation.s3: modelctl does not fetch from S3; "
                              "download the weights and give properties.localpath (Unix "
                              "socket), or publish them on the Hugging Face hub")
    hf = location.get("hf")
    if not isinstance(hf, dict) or not isinstance(hf.get("repoId"), str) or not hf["repoId"]:
        raise InvalidArgument("properties.modelLocation needs hf.repoId (a hub repository)")
    unknown = sorted(set(location) - {"hf", "auth_required"}) + sorted(
        set(hf) - {"repoId", "filename"})
    if unknown:
        raise InvalidArgument(f"properties.modelLocation: unknown field {unknown[0]!r}")
    if is_local_path(hf["repoId"]):
        raise InvalidArgument("properties.modelLocation.hf.repoId must be a hub repository")
    filename = hf.get("filename") or ""
    if not isinstance(filename, str) or ".." in filename or filename.startswith("/"):
        raise InvalidArgument("properties.modelLocation.hf.filename must be a file name in "
                              "the repository")
    return hf["repoId"], filename


def estimate_bytes(spec: ModelSpec, offline: bool) -> int | None:
    """How much memory a load of ``spec`` will take, before loading it.

    From the weights on disk when they are here (float32 weights load at their file
    size), else from the architecture (estimate.py), else the registry's figure.
    """
    from modelctl.daemon.loaders.estimate import architecture_bytes
    from modelctl.daemon.loaders.weights import packaged_weights

    if not spec.needs_weights:
        return 0
    candidates: list[Path] = []
    for raw in (spec.pretrained, spec.source):
        if raw and (raw.startswith("/") or raw.startswith(".")):
            candidates.append(Path(raw))
    packaged = packaged_weights(spec.source)
    if packaged is not None:
        candidates.append(packaged)
    if spec.extra.get("url"):
        from modelctl.daemon.loaders.downloads import downloaded

        with contextlib.suppress(WeightsNotFound):  # not fetched yet: no size to read
            candidates.append(downloaded(spec.extra["url"], offline=True))
    if not spec.custom and spec.family in ("sbert", "hf", "sbert_onnx", "test"):
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

    try:
        model = _build(spec, device, offline)
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
    check_dimensions(spec, model)
    return model


def _build(spec: ModelSpec, device: str, offline: bool) -> LoadedModel:
    spec = _with_downloaded_url(spec, offline)
    if spec.family in ("random", "no_model"):
        from modelctl.daemon.loaders.synthetic import NoModel, RandomModel

        return RandomModel(spec, device) if spec.family == "random" else NoModel(spec, device)
    if spec.family in ("sbert", "sbert_onnx", "test"):
        from modelctl.daemon.loaders.sbert import SbertModel

        return SbertModel(spec, device, _model_dir(spec, offline))
    if spec.family == "hf":
        from modelctl.daemon.loaders.hf import HfModel

        return HfModel(spec, device, _model_dir(spec, offline))
    if spec.family == "multilingual_clip":
        from modelctl.daemon.loaders.multilingual_clip import MultilingualClipModel

        return MultilingualClipModel(spec, device, offline)
    from modelctl.daemon.loaders.open_clip import OpenClipModel

    return OpenClipModel(spec, device, offline)


def _with_downloaded_url(spec: ModelSpec, offline: bool) -> ModelSpec:
    """``spec`` with its ``properties.url`` fetched: a checkpoint for the CLIP families
    (open_clip's ``pretrained``), a model archive for the others (Marqo's layout)."""
    url = spec.extra.get("url")
    if url is None:
        return spec
    from modelctl.daemon.loaders.downloads import downloaded

    local = str(downloaded(url, offline=offline))
    if spec.family in CLIP_FAMILIES:
        return replace(spec, pretrained=local)
    return replace(spec, source=local)


def _model_dir(spec: ModelSpec, offline: bool) -> Path:
    from modelctl.daemon.loaders.weights import (
        extracted_archive,
        resolve_hub_dir,
        resolve_hub_file,
    )

    hf_file = spec.extra.get("hf_file")
    if hf_file is not None:
        return extracted_archive(resolve_hub_file(hf_file[0], [hf_file[1]], offline))
    return resolve_hub_dir(spec.source, offline)


def check_dimensions(spec: ModelSpec, model: LoadedModel) -> None:
    """Declared dimensions must be the model's: a mismatch is a 400, nothing stays loaded."""
    made = model.dimensions
    if spec.dimensions and made != spec.dimensions:
        model.release()
        raise InvalidArgument(f"{spec.name}: properties.dimensions is {spec.dimensions} but "
                              f"the model makes vectors of {made}")


def offline_available(spec: ModelSpec) -> tuple[bool, str | None]:
    """Whether ``spec``'s weights are on this machine, and where."""
    from modelctl.daemon.loaders.weights import packaged_weights

    if not spec.needs_weights:
        return True, None
    if spec.refused:
        return False, None
    packaged = packaged_weights(spec.source)
    if packaged is not None:
        return True, str(packaged)
    try:
        from huggingface_hub import snapshot_download, try_to_load_from_cache

        if spec.family in ("sbert", "hf", "sbert_onnx", "test"):
            return True, snapshot_download(spec.source, local_files_only=True)
        hub = hub_id(spec.source)
        if hub is not None:
            return True, snapshot_download(hub, local_files_only=True)
        if spec.family == "multilingual_clip" and spec.text_model:
            from modelctl.daemon.loaders.multilingual_clip import visual_spec

            snapshot_download(spec.text_model, local_files_only=True)
            spec = visual_spec(spec)
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
