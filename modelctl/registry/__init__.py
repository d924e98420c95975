"""The model registry: every name Marqo 2.13 knows, with Marqo's modelProperties for it.

Data, not code: ``marqo-2.13.json`` is Marqo's registry as Marqo assembles it (name ->
modelProperties), kept verbatim so it diffs against Marqo's; ``modelctl.json`` holds
modelctl's own fields (names it adds, extra aliases, size estimates, which weights a
package ships). Every name resolves through ``spec.parse``, the same parse a client's
custom ``properties`` go through.

A name whose record equals the record of the name it points at (Marqo's short sbert
spellings: ``all-MiniLM-L6-v2`` for ``sentence-transformers/all-MiniLM-L6-v2``) is an
alias: one model, one cache entry. Stdlib only: the CLI imports it for completion.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from modelctl.errors import InvalidArgument
from modelctl.registry.spec import (
    CLIP_FAMILIES,
    FAMILIES,
    HF_HUB_PREFIX,
    NO_MODEL_DIMS,
    REFUSED_FAMILIES,
    ModelSpec,
    parse,
)

__all__ = ["ALIASES", "CLIP_FAMILIES", "FAMILIES", "HF_HUB_PREFIX", "PACKAGED_WEIGHTS",
           "RECORDS", "REFUSED_FAMILIES", "REGISTRY", "ModelSpec", "hub_id", "list_registry",
           "lookup", "parse", "resolve"]

_DATA = Path(__file__).parent
REGISTRY_VERSION = "2.13.0"  # the Marqo release the names and properties come from


def _read(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((_DATA / name).read_text(encoding="utf-8"))
    return data


RECORDS: dict[str, dict[str, Any]] = _read("marqo-2.13.json")
_OWN = _read("modelctl.json")
PACKAGED_WEIGHTS: dict[str, str] = _OWN["packaged_weights"]
_APPROX_MB: dict[str, int] = _OWN["approx_mb_by_source"]


def _build() -> tuple[dict[str, ModelSpec], dict[str, str]]:
    records = {**RECORDS, **_OWN["extra_models"]}
    aliases: dict[str, str] = {
        name: props["name"] for name, props in records.items()
        if props.get("name") != name and records.get(props.get("name", "")) == props}
    aliases.update(_OWN["aliases"])
    specs: dict[str, ModelSpec] = {}
    for name, props in records.items():
        if name in aliases:
            continue
        spec = parse(name, props, custom=False)
        own = tuple(sorted(a for a, target in aliases.items() if target == name))
        approx = spec.approx_bytes or (_APPROX_MB.get(spec.source, 0) * 10**6 or None)
        specs[name] = replace(spec, aliases=own, approx_bytes=approx)
    return specs, aliases


REGISTRY, ALIASES = _build()


def hub_id(source: str) -> str | None:
    """The hub repository of an ``hf-hub:`` source (open_clip's spelling), else ``None``."""
    return source[len(HF_HUB_PREFIX):] if source.startswith(HF_HUB_PREFIX) else None


def lookup(name: str) -> ModelSpec | None:
    """The registry's spec for a name or alias, or ``None``."""
    spec = REGISTRY.get(name) or REGISTRY.get(ALIASES.get(name, ""))
    if spec is None and name.startswith("open_clip/") and name.count("/") == 2:
        # Any open_clip arch/tag pair is loadable even if Marqo does not list it; its
        # dimensions become known when it loads.
        return parse(name, {"type": "open_clip", "name": name}, custom=False)
    if spec is None and hub_id(name) is not None:
        return parse(name, {"type": "open_clip", "name": name}, custom=False)
    return spec


def resolve(name: str) -> ModelSpec:
    """``lookup``, raising ``InvalidArgument`` with a hint for an unknown or refused name."""
    spec = lookup(name)
    if spec is None:
        from modelctl.suggest import did_you_mean

        guess = did_you_mean(name, [*REGISTRY, *ALIASES])
        raise InvalidArgument(
            f"unknown model {name!r}: {guess + ' ' if guess else ''}`modelctl models` lists "
            "the known names; a custom model needs properties (Marqo's modelProperties: "
            "name, type, dimensions)")
    if spec.refused:
        raise InvalidArgument(spec.refused)
    if spec.family == "no_model" and spec.dimensions <= 0:
        raise InvalidArgument(NO_MODEL_DIMS)
    return spec


def list_registry() -> list[dict[str, Any]]:
    """The registry as JSON rows (``/v1/registry`` adds ``available_offline``)."""
    return [
        {"name": spec.name, "family": spec.family, "dimensions": spec.dimensions,
         "modalities": list(spec.modalities), "aliases": list(spec.aliases),
         "engine": spec.engine, "marqo_engine": spec.marqo_engine, "refused": spec.refused,
         "properties": spec.properties}
        for spec in REGISTRY.values()
    ]

