"""What the route modules share: the daemon behind a request, the listener the request
came through, and JSON responses with the contract's exact bytes."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from modelctl.daemon.responses import LISTENER_KEY, dump_json
from modelctl.daemon.state import DaemonState


def daemon_state(request: Request) -> DaemonState:
    """The daemon whose app answers ``request`` (``create_app`` sets it)."""
    state: DaemonState = request.app.state.daemon
    return state


def via_socket(request: Request) -> bool:
    """Whether ``request`` came through the Unix socket (the daemon's own user)."""
    return request.scope.get(LISTENER_KEY) == "unix"


def json_bytes(content: Any, status: int = 200) -> Response:
    return Response(dump_json(content), status_code=status, media_type="application/json")


def json_body(body: bytes) -> Response:
    """A 200 whose body is already JSON (a ``views`` body)."""
    return Response(body, media_type="application/json")
