"""``pull``: fetch a registry model's weights into the Hugging Face cache, without loading it.

The daemon finds weights there later, offline too. ``huggingface_hub`` is imported only
here (and its progress bars go to stderr); for open_clip names, open_clip is imported to
learn which hub repo holds a pretrained tag, as the daemon's loader does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from modelctl.cli import output
from modelctl.cli.params import JsonOpt, ModelArg
from modelctl.cli.state import get_state
from modelctl.errors import InvalidArgument, ModelctlError, WeightsNotFound
from modelctl.units import format_bytes


def pull(ctx: typer.Context, name: ModelArg, as_json: JsonOpt = False) -> None:
    """Download a registry model's weights into the Hugging Face cache (does not load it)."""
    from modelctl.daemon.loaders import is_local_path
    from modelctl.daemon.loaders.weights import SKIP_PATTERNS, hub_reachable, packaged_weights
    from modelctl.registry import resolve

    if is_local_path(name):
        raise InvalidArgument(f"{name} is a local path: there is nothing to pull")
    spec = resolve(name)
    settings = get_state(ctx).settings
    packaged = packaged_weights(spec.source)
    if packaged is not None:
        _report(as_json, name, spec.source, packaged, "its weights ship in a package, nothing "
                "to pull:")
        return
    if settings.offline:
        which = "HF_HUB_OFFLINE" if os.environ.get("HF_HUB_OFFLINE") else "MODELCTL_OFFLINE"
        raise WeightsNotFound(f"cannot pull {name}: offline mode is on ({which} is set); "
                              f"unset it, or run `modelctl pull {name}` where there is network "
                              "and copy the Hugging Face cache here")
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    if not hub_reachable():
        raise WeightsNotFound(f"cannot pull {name}: the Hugging Face hub ({endpoint}) cannot "
                              "be reached from this machine")
    repo, files = _hub_files(spec)
    from huggingface_hub import hf_hub_download, snapshot_download

    try:
        if files is None:
            path = Path(snapshot_download(repo, ignore_patterns=SKIP_PATTERNS))
        else:
            path = _first_file(hf_hub_download, repo, files)
    except ModelctlError:
        raise
    except Exception as exc:  # the hub client's many errors: one message
        raise WeightsNotFound(f"could not pull {name} from {endpoint}: "
                              f"{type(exc).__name__}: {exc}") from exc
    _report(as_json, name, repo, path, "pulled")


def _hub_files(spec: Any) -> tuple[str, list[str] | None]:
    """The hub repo of ``spec``'s weights and, for one checkpoint file, its names to try."""
    if spec.source.startswith("hf-hub:"):
        return spec.source[len("hf-hub:"):], None
    if spec.family in ("sbert", "hf"):
        return spec.source, None
    import open_clip  # the table of pretrained tags is open_clip's

    cfg = open_clip.get_pretrained_cfg(spec.source, spec.pretrained or "") or {}
    hub = str(cfg.get("hf_hub") or "")
    if not hub:
        raise WeightsNotFound(f"{spec.name}: open_clip publishes these weights only at "
                              f"{cfg.get('url') or 'no known place'}, not on the Hugging Face "
                              "hub; download the file and load it with properties.localpath")
    if hub.endswith("/"):
        return hub.rstrip("/"), ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    repo, filename = hub.rsplit("/", 1)
    names = [filename]
    if filename.endswith(".bin"):
        names.insert(0, filename[:-4] + ".safetensors")
    return repo, names


def _first_file(download: Any, repo: str, names: list[str]) -> Path:
    """The first of ``names`` that the repo has, downloaded."""
    errors = []
    for filename in names:
        try:
            return Path(download(repo, filename))
        except Exception as exc:
            errors.append(f"{filename}: {type(exc).__name__}")
    raise WeightsNotFound(f"{repo} has none of {', '.join(names)} ({'; '.join(errors)})")


def _report(as_json: bool, name: str, repo: str, path: Path, what: str) -> None:
    files = [p for p in (path.rglob("*") if path.is_dir() else [path]) if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    if as_json:
        output.print_json({"name": name, "repo": repo, "path": str(path),
                           "files": len(files), "bytes": size})
        return
    output.say(f"{name}: {what} {len(files)} file{'s' * (len(files) != 1)}, "
               f"{format_bytes(size)} in {path}")
