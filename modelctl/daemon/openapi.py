"""The error bodies as OpenAPI models, so ``/openapi.json`` (and clients generated from
it, and schemathesis) know every body the daemon sends besides a route's success."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


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


# What any route may answer besides its success.
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
