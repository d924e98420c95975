"""modelctl: one per-host daemon owns the torch model cache; every process shares it.

``from modelctl import Client`` gives programs the same API the CLI uses (stdlib only).
"""

from __future__ import annotations

__version__ = "0.1.0"

from modelctl.client import Client  # noqa: E402  (re-exported; stdlib-only)

__all__ = ["Client", "__version__"]
