"""Where weights come from: a local path, a package that ships them, the Hugging Face
cache, and only then a download.

With no network (``MODELCTL_OFFLINE=1``, ``HF_HUB_OFFLINE=1``, or a connection that
fails) a missing model fails fast with ``WeightsNotFound``, whose message names every
place that was looked in and how to put weights there.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

from modelctl.config import default_cache_dir
from modelctl.errors import InvalidArgument, WeightsNotFound
from modelctl.registry import PACKAGED_WEIGHTS as _PACKAGED

_HUB_HOST = ("huggingface.co", 443)
_probe: tuple[float, bool] | None = None


def packaged_weights(repo_id: str) -> Path | None:
    """The directory a package ships for ``repo_id``, if that package is installed."""
    module_name = _PACKAGED.get(repo_id)
    if module_name is None:
        return None
    try:
        module = __import__(module_name)
    except ImportError:
        return None
    path = Path(module.get_model_path())
    return path if path.is_dir() else None


def hub_reachable() -> bool:
    """Whether the Hugging Face hub answers a TCP connect (cached for a minute).

    Checked before a download so a machine without network fails in milliseconds,
    not after the hub client's retries.
    """
    global _probe
    now = time.monotonic()
    if _probe is not None and now - _probe[0] < 60:
        return _probe[1]
    endpoint = os.environ.get("HF_ENDPOINT")
    host = _HUB_HOST
    if endpoint:
        from urllib.parse import urlsplit

        parts = urlsplit(endpoint)
        host = (parts.hostname or _HUB_HOST[0], parts.port or (443 if parts.scheme == "https"
                                                              else 80))
    try:
        socket.create_connection(host, timeout=3).close()
        ok = True
    except OSError:
        ok = False
    _probe = (now, ok)
    return ok


def _not_found(what: str, looked: list[str], offline: bool,
               filename: str | None = None) -> WeightsNotFound:
    why = "offline mode is on" if offline else "the Hugging Face hub cannot be reached"
    # `hf download REPO [FILE]` (huggingface_hub's CLI): the file is a second argument.
    target = f"{what} {filename}" if filename else what
    shown = f"{what}/{filename}" if filename else what
    return WeightsNotFound(
        f"weights for {shown} are not on this machine and {why}; looked in: "
        + "; ".join(looked)
        + ". Download them where there is network (`modelctl pull` with the model's name, "
        f"or `hf download {target}`) and copy the Hugging Face cache here, or load a local "
        "directory by "
        "giving its path as the model name (or as properties.localpath)")


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_EXPECTED = "model.safetensors or pytorch_model.bin (open_clip: open_clip_model.safetensors)"


def has_weights(directory: Path) -> bool:
    """Whether ``directory`` (or a module folder in it, as sentence-transformers keeps
    them) holds a weights file: what an interrupted download lacks."""
    for pattern in ("*", "*/*"):
        for path in directory.glob(pattern):
            # is_file follows links: a cache snapshot's link to a missing blob is no file.
            if path.suffix in _WEIGHT_SUFFIXES and ("model" in path.name
                                                    or path.suffix == ".safetensors") \
                    and path.is_file():
                return True
    return False


def require_weights(directory: Path) -> Path:
    """``directory``, or ``WeightsNotFound`` naming the file it lacks. Without this, a
    config alone loads: the architecture with random weights, serving random vectors."""
    if not has_weights(directory):
        raise WeightsNotFound(
            f"{directory} holds a model's files but no weights ({_EXPECTED} is missing): "
            "an interrupted download leaves only the config; download the model again")
    return directory


def _complete_snapshot(snapshot: Path) -> Path | None:
    """``snapshot`` if it holds weights, else the newest other snapshot of the same repo
    in the cache that does: a partial download must not hide a complete one."""
    if has_weights(snapshot):
        return snapshot
    siblings = sorted((p for p in snapshot.parent.iterdir() if p.is_dir() and p != snapshot),
                      key=lambda p: p.stat().st_mtime, reverse=True)
    return next((p for p in siblings if has_weights(p)), None)


def resolve_hub_dir(repo_id: str, offline: bool) -> Path:
    """A local directory holding the snapshot of ``repo_id`` (downloading if allowed)."""
    local = Path(repo_id).expanduser()
    if local.is_absolute() or repo_id.startswith("."):
        if local.is_dir():
            return require_weights(local)
        if local.is_file():
            return extracted_archive(local)
        raise WeightsNotFound(f"no model directory at {local}")
    packaged = packaged_weights(repo_id)
    if packaged is not None:
        return packaged
    from huggingface_hub import constants, snapshot_download

    looked = []
    if repo_id in _PACKAGED:
        looked.append(f"the {_PACKAGED[repo_id].replace('_', '-')} package (not installed)")
    looked.append(f"the Hugging Face cache {constants.HF_HUB_CACHE}")
    try:
        cached: Path | None = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        cached = None
    if cached is not None:
        complete = _complete_snapshot(cached)
        if complete is not None:
            return complete
        looked.append(f"its snapshot {cached}, which lacks the weights ({_EXPECTED}): "
                      "an interrupted download")
    if offline or constants.HF_HUB_OFFLINE or not hub_reachable():
        raise _not_found(repo_id, looked, offline or bool(constants.HF_HUB_OFFLINE))
    try:
        return require_weights(Path(snapshot_download(repo_id,
                                                      ignore_patterns=SKIP_PATTERNS)))
    except WeightsNotFound:
        raise
    except Exception as exc:
        raise WeightsNotFound(f"could not download {repo_id}: {exc}") from exc


# Other runtimes' copies of the same weights: never needed by torch.
SKIP_PATTERNS = ["*.onnx", "onnx/*", "openvino/*", "*.h5", "*.msgpack", "*.ot", "tf_model*",
                 "flax_model*", "rust_model*", "*.tflite"]


def resolve_hub_file(repo_id: str, filenames: list[str], offline: bool) -> Path:
    """One file of a hub repo, from the cache or (if allowed) downloaded; first name wins."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    for filename in filenames:
        cached = try_to_load_from_cache(repo_id, filename)
        if isinstance(cached, str):
            return Path(cached)
    if offline or constants.HF_HUB_OFFLINE or not hub_reachable():
        raise _not_found(repo_id, [f"the Hugging Face cache {constants.HF_HUB_CACHE}"],
                         offline or bool(constants.HF_HUB_OFFLINE), filenames[-1])
    errors = []
    for filename in filenames:
        try:
            return Path(hf_hub_download(repo_id, filename))
        except Exception as exc:
            errors.append(f"{filename}: {exc}")
    raise WeightsNotFound(f"could not download {repo_id}: {'; '.join(errors)}")


_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


def extracted_archive(path: Path) -> Path:
    """A model directory from a local archive (Marqo's ``url`` for sbert and hf models),
    extracted once into the cache, keyed by the archive's path, size and mtime.

    Tar members are filtered as data (no links out, no device files, no absolute paths);
    zip's extractor already keeps members inside the target.
    """
    import hashlib
    import tarfile
    import zipfile

    if not path.name.endswith(_ARCHIVE_SUFFIXES):
        raise WeightsNotFound(f"{path} is a file, not a model directory or an archive of one "
                              f"({', '.join(_ARCHIVE_SUFFIXES)})")
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    target = default_cache_dir() / "archives" / key.hexdigest()[:24]
    if not target.is_dir():
        partial = target.with_name(target.name + f".partial-{os.getpid()}")
        partial.mkdir(parents=True, exist_ok=True)
        try:
            if zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as archive:
                    archive.extractall(partial)
            else:
                with tarfile.open(path) as archive:
                    archive.extractall(partial, filter="data")
        except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise InvalidArgument(f"cannot extract the archive {path}: {exc}") from exc
        os.replace(partial, target)
    # An archive of one folder holds the model in that folder.
    entries = [p for p in target.iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else target
