"""Moved to ``modelctl.registry``; this re-export keeps old imports working."""

from __future__ import annotations

from modelctl.registry import (
    ALIASES,
    FAMILIES,
    REGISTRY,
    ModelSpec,
    list_registry,
    lookup,
    resolve,
)

__all__ = ["ALIASES", "FAMILIES", "REGISTRY", "ModelSpec", "list_registry", "lookup",
           "resolve"]
