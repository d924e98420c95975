"""Moved to ``modelctl.registry``; this re-export keeps old imports working."""

from __future__ import annotations

from modelctl.registry import (
    ALIASES,
    DEFAULT_MODEL,
    FAMILIES,
    REGISTRY,
    ModelSpec,
    all_names,
    list_registry,
    lookup,
    resolve,
)

__all__ = ["ALIASES", "DEFAULT_MODEL", "FAMILIES", "REGISTRY", "ModelSpec", "all_names",
           "list_registry", "lookup", "resolve"]
