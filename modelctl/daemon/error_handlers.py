"""The app's error boundary: every error, from any layer, leaves as the contract's JSON
body (docs/MARQO.md), never an HTML page or a plain-text 500.

``EXCEPTION_HANDLERS`` is handed to FastAPI (app.py): our ``ApiError`` tree as it is,
FastAPI's validation errors in Marqo's pydantic-v1 wording, Starlette's 404/405/400 in
our words, and anything else as a logged 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelctl.daemon.responses import dump_json
from modelctl.errors import (
    ApiError,
    BadRequest,
    InternalError,
    MethodNotAllowed,
    NotFound,
    Unprocessable,
)

log = logging.getLogger("modelctl.http")


class _ContractJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return dump_json(content)


def error_response(exc: ApiError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return _ContractJSON(exc.body(), status_code=exc.status, headers=headers)


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc)


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    detail = [_v1_error(err) for err in exc.errors()]
    if any(err.get("type") == "json_invalid" for err in exc.errors()):
        return error_response(BadRequest("request body is not valid JSON"))
    return error_response(Unprocessable(detail))


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


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(InternalError(f"internal error: {type(exc).__name__}; "
                                        "see the daemon log"))


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


Handler = Callable[[Request, Any], Coroutine[Any, Any, Response]]
EXCEPTION_HANDLERS: dict[int | type[Exception], Handler] = {
    ApiError: _api_error,
    RequestValidationError: _validation,
    StarletteHTTPException: _http,
    Exception: _internal,
}
