"""One exception tree for the daemon, the client and the CLI.

Every error that can cross the wire carries the HTTP ``status`` it is sent with and
the ``code`` and ``type`` of the Marqo error body (docs/MARQO.md), so the same
object becomes an HTTP body in the daemon, is rebuilt from that body by the client,
and is printed as one line by the CLI::

    ModelctlError
    ├── ApiError                  anything the daemon answers with an error body
    │   ├── ModelNotInCache       404 model_not_in_cache
    │   ├── NotFound              404 not_found (unknown route)
    │   ├── MethodNotAllowed      405 method_not_allowed
    │   ├── CacheManagementError  409 model_cache_management_error
    │   ├── InvalidArgument       400 invalid_argument
    │   │   └── WeightsNotFound   400 invalid_argument: weights are not on this machine
    │   ├── HardwareCompatibilityError  400 hardware_compatability_error
    │   ├── BadRequest            400 bad_request
    │   ├── Unauthorized          401 unauthorized
    │   ├── Forbidden             403 forbidden (a Host a loopback listener does not serve)
    │   ├── PayloadTooLarge       413 payload_too_large
    │   ├── Unprocessable         422 unprocessable_entity (Marqo's pydantic-v1 body)
    │   ├── TooManyRequests       429 too_many_requests
    │   ├── ClientGone            499 client_closed_request (logged, never seen)
    │   ├── ServiceUnavailable    503 service_unavailable (daemon shutting down)
    │   └── InternalError         500 internal
    ├── DaemonError               the daemon cannot be reached or started
    │   ├── DaemonNotRunning      no daemon answers on the socket
    │   ├── DaemonUnreachable     the exchange failed midway: a timeout, bad HTTP
    │   │   └── ServerClosed      the connection closed before a whole answer arrived
    │   └── DaemonStartError      a daemon was started but did not become ready
    └── UsageError                a command line that cannot be run as given
        └── GlobalOptionError     a global option without its value

``ServerClosed`` is raised by the transports (``modelctl.unix_http``); the client's one
table of transport failures (``modelctl.client.TRANSPORT_ERRORS``) turns it, and the
socket's own errors, into ``DaemonNotRunning`` or ``DaemonUnreachable``, so callers
and the CLI's ``main`` see only this tree.

This module imports only the standard library: the CLI and ``modelctl.client`` use it.
"""

from __future__ import annotations

import json
from typing import Any


def _phrase(status: int) -> str:
    """The reason phrase of ``status`` (``http.HTTPStatus`` is imported only when needed:
    building that enum costs the CLI half a millisecond on every run)."""
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


class ModelctlError(Exception):
    """Base of every error modelctl raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ApiError(ModelctlError):
    """Raised when the daemon answers (or must answer) with an error body."""

    status: int = 500
    code: str = "internal"
    type: str = "internal"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or _phrase(self.status))

    def body(self) -> dict[str, Any]:
        """The contract's error body, keys in the order Marqo emits them."""
        return {"message": self.message, "code": self.code, "type": self.type, "link": None}


class _InvalidRequest(ApiError):
    type = "invalid_request"


class ModelNotInCache(_InvalidRequest):
    """Raised when an eject names a model that is not loaded on that device."""

    status = 404
    code = "model_not_in_cache"


class NotFound(_InvalidRequest):
    """Raised for a route that does not exist."""

    status = 404
    code = "not_found"


class MethodNotAllowed(_InvalidRequest):
    """Raised for a route that exists, called with the wrong HTTP method."""

    status = 405
    code = "method_not_allowed"


class CacheManagementError(_InvalidRequest):
    """Raised when the cache cannot make room, or a cache change conflicts."""

    status = 409
    code = "model_cache_management_error"


class InvalidArgument(_InvalidRequest):
    """Raised for an unknown model name, a bad device string or a bad value."""

    status = 400
    code = "invalid_argument"


class WeightsNotFound(InvalidArgument):
    """Raised when a model's weights are not on this machine and cannot be downloaded."""


class HardwareCompatibilityError(_InvalidRequest):
    """Raised when a request names a device this machine does not have."""

    status = 400
    code = "hardware_compatability_error"  # sic: Marqo's clients match this spelling


class BadRequest(_InvalidRequest):
    """Raised for a malformed request: bad JSON, bad base64, a body of the wrong shape."""

    status = 400
    code = "bad_request"


class Unauthorized(_InvalidRequest):
    """Raised for a TCP request without the configured API key."""

    status = 401
    code = "unauthorized"


class Forbidden(_InvalidRequest):
    """Raised when a loopback listener gets a request for a foreign ``Host`` (DNS
    rebinding: a web page's script talking to the port under its own domain)."""

    status = 403
    code = "forbidden"


class PayloadTooLarge(_InvalidRequest):
    """Raised when a body, batch, text or image is over its limit."""

    status = 413
    code = "payload_too_large"


class Unprocessable(_InvalidRequest):
    """Raised when a required field or query parameter is missing or of the wrong type.

    Marqo answers these with FastAPI's pydantic-v1 body, ``detail`` instead of
    ``message`` and ``"link": ""``; ``body()`` rebuilds it exactly.
    """

    status = 422
    code = "unprocessable_entity"

    def __init__(self, detail: list[dict[str, Any]]) -> None:
        first = detail[0] if detail else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        super().__init__(f"{where}: {first.get('msg', 'invalid value')}" if where else None)
        self.detail = detail

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, "code": self.code, "type": self.type, "link": ""}

    @classmethod
    def missing(cls, location: str, name: str) -> Unprocessable:
        return cls([{"loc": [location, name], "msg": "field required",
                     "type": "value_error.missing"}])


class TooManyRequests(_InvalidRequest):
    """Raised when a model's request queue is full."""

    status = 429
    code = "too_many_requests"


class ClientGone(_InvalidRequest):
    """Raised when a request's client disconnected before its answer was ready: its
    queued work is dropped, and nobody is left to read this status (nginx's 499)."""

    status = 499
    code = "client_closed_request"

    def __init__(self, message: str | None = None) -> None:
        # 499 is nginx's, not in http.HTTPStatus: give it its phrase here.
        super().__init__(message or "Client Closed Request")


class ServiceUnavailable(_InvalidRequest):
    """Raised for new work that arrives while the daemon is shutting down."""

    status = 503
    code = "service_unavailable"


class InternalError(ApiError):
    """Raised for our own bugs; the daemon logs the traceback."""

    status = 500
    code = "internal"
    type = "internal"


_BY_CODE: dict[str, type[ApiError]] = {
    cls.code: cls
    for cls in (ModelNotInCache, NotFound, MethodNotAllowed, CacheManagementError,
                InvalidArgument, HardwareCompatibilityError, BadRequest, Unauthorized,
                Forbidden, PayloadTooLarge, TooManyRequests, ClientGone, ServiceUnavailable,
                InternalError)
}


def error_from_body(status: int, body: Any) -> ApiError:
    """Rebuild the exception the daemon raised from its status and JSON body."""
    err: ApiError
    if not isinstance(body, dict):
        err = InternalError(f"HTTP {status}: {str(body)[:200]}")
    elif "detail" in body and status == 422:
        return Unprocessable(body["detail"] if isinstance(body["detail"], list) else [])
    else:
        cls = _BY_CODE.get(str(body.get("code")), ApiError)
        err = cls(str(body.get("message") or _phrase(status)))
    if err.status != status:
        # A code we do not know, or a proxy's answer: keep the status we saw.
        err.status = status
    return err


def reply_body(status: int, data: bytes) -> Any:
    """A daemon's reply as JSON (text when it is not JSON); its error raised for >= 400."""
    try:
        body = json.loads(data) if data else None
    except ValueError:
        body = data.decode(errors="replace")
    if status >= 400:
        raise error_from_body(status, body)
    return body


class DaemonError(ModelctlError):
    """Base for errors reaching or starting the daemon."""


class DaemonNotRunning(DaemonError):
    """Raised when no daemon answers on the socket (and none may be started)."""


class DaemonUnreachable(DaemonError):
    """Raised when talking to the daemon failed midway: a timeout, a reset connection,
    an answer that is not HTTP."""


class ServerClosed(DaemonUnreachable):
    """Raised when the server closed the connection before a whole answer arrived."""


class DaemonStartError(DaemonError):
    """Raised when a spawned daemon exits or does not become ready in time."""


class UsageError(ModelctlError):
    """Raised for a command line that cannot be run as given (the CLI exits 2)."""


class GlobalOptionError(UsageError):
    """Raised for a global option without its value."""
