"""The ASGI app: one app for both listeners, and the error boundary of every route.

``create_app`` builds the FastAPI app; ``Listener`` wraps it once per listener (the
Unix socket, each TCP port) to tag requests with where they came from, enforce the
API key on TCP, and bound request bodies. Every error, from any layer, leaves as the
contract's JSON body: never an HTML page or a plain-text 500.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelctl import __version__
from modelctl.daemon.state import DaemonState
from modelctl.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
    Unprocessable,
)

log = logging.getLogger("modelctl.http")
LISTENER_KEY = "modelctl.listener"

FastBody = Callable[[DaemonState], bytes]
# GET routes without parameters that monitors poll (Marqo's /models, /device/cpu, /):
# the Listener answers them without FastAPI's routing and dependency machinery, which
# is most of such a request's CPU time. Each is also a FastAPI route with the same
# body function, so /openapi.json describes it and the bytes cannot differ.
FAST_GET: dict[str, FastBody] = {}


def fast_get(path: str) -> Callable[[FastBody], FastBody]:
    """Register ``body(state) -> JSON bytes`` as the Listener's fast answer to GET ``path``."""
    def register(body: FastBody) -> FastBody:
        FAST_GET[path] = body
        return body

    return register


class _ContractJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return dump_json(content)


def error_response(exc: ApiError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return _ContractJSON(exc.body(), status_code=exc.status, headers=headers)


class ErrorBody(BaseModel):
    """The contract's error body (docs/MARQO.md)."""

    message: str
    code: str
    type: str
    link: None = None


class _DetailItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class UnprocessableBody(BaseModel):
    """Marqo's 422 body: pydantic-v1 ``detail``, and ``"link": ""``."""

    detail: list[_DetailItem]
    code: str
    type: str
    link: str


def _documented(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


# What any route may answer besides its success, so the OpenAPI document (and clients
# generated from it, and schemathesis) know every body the daemon sends.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _documented("bad argument, device or request (invalid_argument, bad_request, "
                     "hardware_compatability_error)"),
    401: _documented("TCP request without the API key"),
    403: _documented("a loopback listener asked for a foreign Host (DNS rebinding)"),
    404: _documented("model not in the cache, or no such route"),
    409: _documented("the cache cannot make room, or a conflicting change"),
    413: _documented("body, batch, text or image over its limit"),
    422: {"model": UnprocessableBody, "description": "a field or parameter missing or of "
                                                     "the wrong type"},
    429: _documented("the model's queue is full"),
    500: _documented("a bug in modelctl (see the daemon log)"),
    503: _documented("the daemon is shutting down"),
}


def create_app(state: DaemonState) -> FastAPI:
    from modelctl.daemon import embeddings, routes_marqo, routes_native

    # No /docs or /redoc: FastAPI's pages load Swagger UI and ReDoc from a CDN, so they
    # are blank offline; /openapi.json is the whole API for any viewer or generator.
    app = FastAPI(title="modelctl", version=__version__, docs_url=None, redoc_url=None,
                  description="A per-host model cache: native /v1 API, OpenAI-style "
                              "embeddings and Marqo's /models and /device routes.")
    app.state.daemon = state
    for router in (routes_marqo.router, routes_native.router, embeddings.router,
                   routes_native.metrics_router):
        app.include_router(router, responses=ERROR_RESPONSES)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [_v1_error(err) for err in exc.errors()]
        if any(err.get("type") == "json_invalid" for err in exc.errors()):
            return error_response(BadRequest("request body is not valid JSON"))
        return error_response(Unprocessable(detail))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(NotFound(f"no route {request.method} {request.url.path}; "
                                           "see /openapi.json for the API"))
        if exc.status_code == 405:
            return error_response(MethodNotAllowed(  # keep Allow: RFC 9110 requires it
                f"{request.method} is not allowed on {request.url.path}"), exc.headers)
        if isinstance(exc.__cause__, ApiError):
            # FastAPI turns any error raised while it reads the body into a 400 "error
            # parsing the body"; ours (a body over the limit, seen mid-stream) keep theirs.
            return error_response(exc.__cause__)
        if exc.status_code == 400:
            # Bodies json.loads cannot take: bad UTF-8, nesting deeper than the recursion limit.
            return error_response(BadRequest(f"request body cannot be parsed: {exc.detail}"))
        err = ApiError(str(exc.detail))
        err.status = exc.status_code
        err.code, err.type = "http_error", "invalid_request"
        return error_response(err)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(InternalError(f"internal error: {type(exc).__name__}; "
                                            "see the daemon log"))

    return app


def _v1_error(err: Any) -> dict[str, Any]:
    """A pydantic v2 error in Marqo's pydantic-v1 wording."""
    kind = str(err.get("type", "value_error"))
    if kind == "missing":
        return {"loc": list(err.get("loc", ())), "msg": "field required",
                "type": "value_error.missing"}
    prefix = "type_error" if kind.endswith("_type") or kind.endswith("_parsing") else \
        "value_error"
    return {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "invalid value")).lower(),
            "type": f"{prefix}.{kind.removesuffix('_type').removesuffix('_parsing')}"}


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
            # uvicorn cancels what still runs GRACEFUL_SHUTDOWN_S after SIGTERM, and would
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


def dump_json(content: Any) -> bytes:
    """JSON exactly as Marqo's FastAPI server writes it: compact, UTF-8, key order kept."""
    # backslashreplace: a lone surrogate (valid in a JSON string, not in UTF-8) that a
    # client sent and an error message echoes comes back as its JSON escape, not a 500.
    return json.dumps(content, ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode("utf-8", "backslashreplace")


def json_bytes(content: Any, status: int = 200) -> Response:
    return Response(dump_json(content), status_code=status, media_type="application/json")
