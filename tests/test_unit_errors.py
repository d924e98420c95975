"""Every class of ``modelctl/errors.py`` through the wire and back, without a daemon.

The daemon sends ``err.status`` with ``err.body()``; the client decodes the JSON and
rebuilds the exception with ``error_from_body``. Each wire class must come back as
itself with the same status, code, type and message, so a new class that forgets its
code (or reuses another's) fails here.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelctl import errors
from modelctl.errors import (
    ApiError,
    DaemonError,
    GlobalOptionError,
    InternalError,
    InvalidArgument,
    ModelctlError,
    Unprocessable,
    UsageError,
    WeightsNotFound,
    error_from_body,
)


def subclasses(cls: type[Any]) -> list[type[Any]]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *subclasses(sub)]
    return out


WIRE = [cls for cls in subclasses(ApiError)
        if cls.__module__ == errors.__name__ and not cls.__name__.startswith("_")
        and cls is not Unprocessable]
# Classes that share a code with their parent come back as the parent: the body has no
# more to tell them apart, and callers catch the parent.
SAME_CODE_AS_PARENT = {WeightsNotFound: InvalidArgument}


def over_the_wire(err: ApiError) -> ApiError:
    """What a client raises for ``err``: its body as JSON bytes, decoded, rebuilt."""
    data = json.dumps(err.body()).encode()
    return error_from_body(err.status, json.loads(data))


def test_every_class_of_the_module_is_covered() -> None:
    in_module = {obj for obj in vars(errors).values()
                 if isinstance(obj, type) and issubclass(obj, Exception)
                 and obj.__module__ == errors.__name__}
    wire_bases = {ApiError, Unprocessable, errors._InvalidRequest}
    assert in_module == set(WIRE) | wire_bases | set(subclasses(DaemonError)) | {
        ModelctlError, DaemonError, UsageError, GlobalOptionError}
    assert len(WIRE) >= 13


@pytest.mark.parametrize("cls", WIRE, ids=lambda c: c.__name__)
def test_round_trip(cls: type[ApiError]) -> None:
    sent = cls(f"something about {cls.__name__} `with` \"quotes\" and ünïcode")
    body = sent.body()
    assert list(body) == ["message", "code", "type", "link"]  # Marqo's key order
    assert body["link"] is None and body["type"] in ("invalid_request", "internal")
    assert 400 <= sent.status < 600
    got = over_the_wire(sent)
    assert type(got) is SAME_CODE_AS_PARENT.get(cls, cls)
    assert (got.status, got.code, got.type, got.message) == (
        sent.status, sent.code, sent.type, sent.message)


@pytest.mark.parametrize("cls", WIRE, ids=lambda c: c.__name__)
def test_default_message_is_the_reason_phrase(cls: type[ApiError]) -> None:
    got = over_the_wire(cls())
    assert got.message and got.message == cls().message
    assert not got.message.startswith("HTTP ")  # every status we send has a phrase


def test_codes_are_unique_except_for_declared_refinements() -> None:
    by_code: dict[str, type[ApiError]] = {}
    for cls in WIRE:
        if cls in SAME_CODE_AS_PARENT:
            assert cls.code == SAME_CODE_AS_PARENT[cls].code
            continue
        assert cls.code not in by_code, (cls, by_code.get(cls.code))
        by_code[cls.code] = cls


def test_unprocessable_keeps_marqos_body_and_its_detail() -> None:
    sent = Unprocessable.missing("query", "model_name")
    assert sent.body() == {
        "detail": [{"loc": ["query", "model_name"], "msg": "field required",
                    "type": "value_error.missing"}],
        "code": "unprocessable_entity", "type": "invalid_request", "link": ""}
    got = over_the_wire(sent)
    assert type(got) is Unprocessable and got.status == 422
    assert got.detail == sent.detail and got.message == "query.model_name: field required"
    assert isinstance(error_from_body(422, {"detail": "not a list"}), Unprocessable)


@pytest.mark.parametrize(("status", "body", "cls"), [
    (502, {"message": "upstream gone", "code": "bad_gateway", "type": "proxy"}, ApiError),
    (502, "<html>Bad Gateway</html>", InternalError),
    (500, None, InternalError),
    (418, {"code": "invalid_argument"}, InvalidArgument),
])
def test_answers_from_something_else_keep_the_status_seen(status: int, body: Any,
                                                           cls: type[ApiError]) -> None:
    got = error_from_body(status, body)
    assert type(got) is cls and got.status == status and got.message


def test_daemon_and_usage_errors_never_cross_the_wire() -> None:
    for cls in [DaemonError, *subclasses(DaemonError), UsageError, *subclasses(UsageError)]:
        err = cls("no daemon here")
        assert isinstance(err, ModelctlError) and not isinstance(err, ApiError)
        assert err.message == "no daemon here" and not hasattr(err, "body")
