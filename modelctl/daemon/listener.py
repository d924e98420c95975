"""The app as one listener (the Unix socket, each TCP port) serves it.

``Listener`` is pure ASGI, with no per-request middleware stack: it tags each request
with the listener it came through (``LISTENER_KEY``), enforces the API key on TCP and
the Host of a loopback listener, bounds request bodies, answers the fast GET routes
(``FAST_GET``, views.py) itself, and hands everything else to the app. ``LateApp``
stands for an app that is still being built: requests wait for it. Neither imports
FastAPI or pydantic, so the daemon serves before the web stack is imported (server.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from typing import TYPE_CHECKING

from modelctl.daemon.responses import FAST_GET, LISTENER_KEY, dump_json
from modelctl.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    InternalError,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
)

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from modelctl.daemon.state import DaemonState


class Listener:
    """The app as one listener serves it (pure ASGI: no per-request middleware stack)."""

    def __init__(self, app: ASGIApp, state: DaemonState, *, kind: str,
                 api_key: str | None = None,
                 allowed_hosts: tuple[str, ...] | None = None) -> None:
        self.app = app
        self.state = state
        self.kind = kind  # "unix" or "tcp"
        # Kept as a digest: compared to the digest of what a client sends, so neither the
        # key's value nor its length shows in the time a wrong guess takes.
        self.api_key = hashlib.sha256(api_key.encode()).digest() if api_key else None
        self.max_body = state.settings.limits.max_body_bytes
        # None: any Host (the socket, and listeners bound beyond loopback).
        self.allowed_hosts = (None if allowed_hosts is None or "*" in allowed_hosts
                              else frozenset(allowed_hosts))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                return  # the daemon runs its own start-up and shut-down
            await self.app(scope, receive, send)
            return
        scope[LISTENER_KEY] = self.kind
        headers = dict(scope.get("headers") or ())
        if self.allowed_hosts is not None and not _host_allowed(headers.get(b"host"),
                                                                self.allowed_hosts):
            await _send_error(send, Forbidden(
                "this loopback listener answers requests for localhost only, not for the "
                "Host this request names (a web page's script, reaching the port through "
                "its own domain, is refused this way); add the name to "
                "MODELCTL_ALLOWED_HOSTS to allow it"))
            return
        if self.api_key is not None and not self._authorized(headers):
            await _send_error(send, Unauthorized(
                "missing or wrong API key: send it as x-api-key or Authorization: Bearer"))
            return
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_body
            except ValueError:
                await _send_error(send, BadRequest("bad Content-Length header"))
                return
            if too_big:
                await _send_error(send, PayloadTooLarge(
                    f"request body over {self.max_body} bytes"))
                return
        started = time.perf_counter()
        if scope["method"] == "GET" and scope["path"] in FAST_GET:
            try:
                body = FAST_GET[scope["path"]](self.state)
            except Exception:  # the app and its error boundary answer instead
                body = None
            if body is not None:
                await _send_json(send, 200, body)
                self.state.metrics.request(scope["path"], "GET", time.perf_counter() - started)
                return
        responded = False

        async def tracked_send(message: Message) -> None:
            nonlocal responded
            responded = responded or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, self._bounded(receive), tracked_send)
        except asyncio.CancelledError:
            # uvicorn cancels what still runs past the shutdown grace after SIGTERM, and would
            # answer with its plain-text 500; the request task ends here either way.
            if not responded:
                await _send_error(send, ServiceUnavailable(
                    "the daemon stopped before this request finished"))
            return
        route = scope.get("route")
        path = getattr(route, "path", "unmatched")
        self.state.metrics.request(path, scope["method"], time.perf_counter() - started)

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        assert self.api_key is not None
        given = headers.get(b"x-api-key")
        if given is None:
            auth = headers.get(b"authorization", b"")
            if auth[:7].lower() == b"bearer ":
                given = auth[7:].strip()
        # compare_digest: the time taken must not tell how much of a guess was right.
        return given is not None and hmac.compare_digest(hashlib.sha256(given).digest(),
                                                         self.api_key)

    def _bounded(self, receive: Receive) -> Receive:
        seen = 0
        limit = self.max_body

        async def bounded_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge()
            return message

        return bounded_receive


class LateApp:
    """An app built while the daemon already serves (server.py): a request that needs
    it before it exists waits for it, and one that came before a failed build gets
    the contract's 500."""

    def __init__(self, built: asyncio.Future[ASGIApp]) -> None:
        self._built = built
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app
        if app is None:
            try:
                # shield: a request that gives up waiting must not cancel the build.
                app = self._app = await asyncio.shield(self._built)
            except Exception:  # logged where it is built
                await _send_error(send, InternalError(
                    "the daemon could not build its web app; see the daemon log"))
                return
        await app(scope, receive, send)


def _host_allowed(raw: bytes | None, allowed: frozenset[str]) -> bool:
    if raw is None:
        return True  # HTTP/1.0 without Host: no browser sends that
    host = raw.decode("latin-1").strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    host = host.rstrip(".")
    # *.localhost resolves to loopback in browsers themselves (RFC 6761): no page can
    # rebind it.
    return host in allowed or host.endswith(".localhost")


class _BodyTooLarge(PayloadTooLarge):
    def __init__(self) -> None:
        super().__init__("request body over the size limit")


async def _send_error(send: Send, exc: ApiError) -> None:
    await _send_json(send, exc.status, dump_json(exc.body()))


async def _send_json(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
