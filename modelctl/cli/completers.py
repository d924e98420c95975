"""Shell-completion callbacks: candidates only, fast, silent, and never start a daemon.

They run inside ``_MODELCTL_COMPLETE=...`` requests, where the root callback has not run:
the settings come from the environment and the global options already on the line. Any failure (no
daemon, a slow one, a bad flag) yields no candidates rather than a message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from modelctl.cli.state import COMPLETION_TIMEOUT, get_state, static_registry

if TYPE_CHECKING:
    from modelctl.client import Client

T = TypeVar("T")


def _quietly(ctx: typer.Context, fetch: Callable[[Client], T]) -> T | None:
    """``fetch`` from the running daemon, or ``None`` when none answers (or anything fails)."""
    try:
        state = get_state(ctx)
        if state.surely_no_daemon():
            return None
        client = state.client(timeout=COMPLETION_TIMEOUT)
    except Exception:
        return None
    try:
        return fetch(client)
    except Exception:
        return None
    finally:
        client.close()


def _unique(values: list[str], incomplete: str) -> list[str]:
    return [v for v in dict.fromkeys(values) if v.startswith(incomplete)]


def loaded_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """Names of the models the running daemon has loaded."""
    names = _quietly(ctx, lambda c: [str(e["name"]) for e in c.list_models()])
    return _unique(names or [], incomplete)


def loaded_devices(ctx: typer.Context, incomplete: str) -> list[str]:
    """Devices the model named earlier on the line is loaded on (all devices in use if none)."""
    name = ctx.params.get("name")

    def fetch(client: Client) -> list[str]:
        entries: list[dict[str, Any]] = client.list_models()
        return [str(e["device"]) for e in entries
                if not name or name in (e.get("name"), e.get("canonical_name"))]

    return _unique(_quietly(ctx, fetch) or [], incomplete)


def registry_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """Registry names and aliases: from the daemon when one runs, else the built-in list."""
    entries = _quietly(ctx, lambda c: c.registry())
    if entries is None:
        entries = static_registry() or []
    names: list[str] = []
    for entry in entries:
        if isinstance(entry, dict):
            names.append(str(entry.get("name")))
            names.extend(str(a) for a in entry.get("aliases") or ())
    return _unique(names, incomplete)


def devices(ctx: typer.Context, incomplete: str) -> list[str]:
    """``cpu``, ``cuda`` and each ``cuda:N`` the running daemon sees; ``cpu``/``cuda`` else."""

    def fetch(client: Client) -> list[str]:
        info = client.devices()
        found = ["cpu"]
        if info.get("cuda_available"):
            found.append("cuda")
            found.extend(str(d["device"]) for d in info.get("cuda") or ())
        return found

    return _unique(_quietly(ctx, fetch) or ["cpu", "cuda"], incomplete)
