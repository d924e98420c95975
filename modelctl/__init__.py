"""modelctl: one per-host daemon owns the torch model cache; every process shares it.

``from modelctl import Client`` gives programs the same API the CLI uses (stdlib only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from modelctl.client import Client

__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy: the CLI imports this package for its version on every run, and http.client
    # (with email and ssl behind it) costs more than the rest of `modelctl --help`.
    if name == "Client":
        from modelctl.client import Client

        return Client
    raise AttributeError(f"module 'modelctl' has no attribute {name!r}")
