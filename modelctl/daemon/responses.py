"""What the daemon writes on the wire, shared by the Listener and the routes.

``dump_json`` is the one JSON encoder of every answer; ``LISTENER_KEY`` is where the
Listener notes in a request's scope which listener it came through; ``FAST_GET`` holds
the GET routes the Listener answers itself. No web framework here: the Listener
imports this module before FastAPI is (server.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelctl.daemon.state import DaemonState

LISTENER_KEY = "modelctl.listener"

FastBody = Callable[["DaemonState"], bytes]
# GET routes without parameters (views.py): what monitors poll, and what a client asks a
# daemon it has just started. The Listener answers them without FastAPI's routing and
# dependency machinery, which is most of such a request's CPU time, and before FastAPI
# is even imported. Each is also a FastAPI route with the same body function, so
# /openapi.json describes it and the bytes cannot differ.
FAST_GET: dict[str, FastBody] = {}


def fast_get(path: str) -> Callable[[FastBody], FastBody]:
    """Register ``body(state) -> JSON bytes`` as the Listener's fast answer to GET ``path``."""
    def register(body: FastBody) -> FastBody:
        FAST_GET[path] = body
        return body

    return register


def dump_json(content: Any) -> bytes:
    """JSON exactly as Marqo's FastAPI server writes it: compact, UTF-8, key order kept."""
    # backslashreplace: a lone surrogate (valid in a JSON string, not in UTF-8) that a
    # client sent and an error message echoes comes back as its JSON escape, not a 500.
    return json.dumps(content, ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode("utf-8", "backslashreplace")
