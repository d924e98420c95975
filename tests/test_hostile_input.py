"""Hostile input on both listeners: every answer is the contract's JSON error, never a 5xx.

One daemon for the module, with MiniLM and a tiny CLIP loaded. Each case of the table is
sent as raw bytes over the Unix socket and over TCP (so malformed JSON, bad encodings and
chunked bodies reach the server exactly as written); the answer must be a 4xx with the
contract's body. At the end the daemon still runs and its cache is exactly as it was.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from modelctl.testing import MINILM, Daemon, make_tiny_clip, png_bytes

CLIP = "hostile-clip"
LISTENERS = ("unix", "tcp")
ERROR_KEYS = ["message", "code", "type", "link"]
DETAIL_KEYS = ["detail", "code", "type", "link"]


@pytest.fixture(scope="module")
def hostile(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The shared daemon with MiniLM and a tiny CLIP loaded, for this module."""
    props = make_tiny_clip(tmp_path_factory.mktemp("hostile-clip"), arch="hostile-tiny")
    daemon.client.eject(all=True, force=True)
    daemon.client.load_model(MINILM, "cpu")
    daemon.client.load_model(CLIP, "cpu", properties=props)
    yield daemon
    daemon.client.eject(all=True, force=True)


@pytest.fixture(scope="module")
def cache_before(hostile: Daemon) -> list[tuple[Any, ...]]:
    return _cache(hostile)


def _cache(d: Daemon) -> list[tuple[Any, ...]]:
    """What must not change: which models, where, since when, and how they are kept."""
    return [(m["name"], m["device"], m["state"], m["loaded_at"], m["bytes"], m["pinned"],
             m["keep_alive"]) for m in d.client.list_models()]


# -- raw HTTP over either listener ---------------------------------------------------------

def _connect(d: Daemon, listener: str) -> socket.socket:
    if listener == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(d.socket_path))
    else:
        assert d.http_port is not None
        sock = socket.create_connection(("127.0.0.1", d.http_port))
    sock.settimeout(120)
    return sock


def exchange(d: Daemon, listener: str, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None, chunked: bool = False,
             ) -> tuple[int, dict[str, str], bytes]:
    """Send one request as raw bytes; return status, headers and body.

    The body is sent from a thread while the answer is read: a server that answers 413
    from the headers alone may stop reading, and must still be heard.
    """
    hdrs = {"Host": "localhost", "Connection": "close", **(headers or {})}
    if body is not None and not chunked:
        hdrs.setdefault("Content-Type", "application/json")
        hdrs.setdefault("Content-Length", str(len(body)))
    if chunked:
        hdrs.setdefault("Content-Type", "application/json")
        hdrs["Transfer-Encoding"] = "chunked"
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
    payload = head.encode("latin-1") + b"\r\n"
    if body is not None:
        if chunked:
            step = 1 << 20
            for start in range(0, len(body), step):
                part = body[start:start + step]
                payload += b"%x\r\n" % len(part) + part + b"\r\n"
            payload += b"0\r\n\r\n"
        else:
            payload += body
    sock = _connect(d, listener)

    def send() -> None:
        try:
            sock.sendall(payload)
        except OSError:
            pass  # the server answered and closed before reading it all: fine

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        resp = http.client.HTTPResponse(sock, method=method)
        resp.begin()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        sender.join(30)
        sock.close()


# -- inputs that take some building -------------------------------------------------------

def j(obj: Any) -> bytes:
    """JSON as Python writes it: NaN and Infinity included, lone surrogates escaped."""
    return json.dumps(obj).encode()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(side: int = 20000) -> bytes:
    """A valid one-colour PNG of side x side pixels that compresses to a few dozen KB."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)  # filter byte + 1-bit greyscale pixels
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row * 500) for _ in range(side // 500)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def data_uri(data: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


def embed(inputs: Any, model: str = CLIP, **extra: Any) -> bytes:
    return j({"model": model, "input": inputs, **extra})


# -- the table ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    body: bytes | None = None
    want: tuple[int, str] | None = None  # the same on both listeners
    per_listener: dict[str, tuple[int, str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False
    only: tuple[str, ...] = LISTENERS  # where the case is hostile (the socket may load paths)

    def expected(self, listener: str) -> tuple[int, str] | None:
        return self.per_listener.get(listener, self.want)


BAD = (400, "bad_request")
ARG = (400, "invalid_argument")
UNPROCESSABLE = (422, "unprocessable_entity")
TOO_BIG = (413, "payload_too_large")
NOT_CACHED = (404, "model_not_in_cache")
LIMIT = 32 * 2**20
TEN_K = "n" * 10_000

CASES = [
    # malformed JSON and encodings
    Case("json-truncated", "POST", "/v1/models", b'{"name":', BAD),
    Case("json-trailing-garbage", "POST", "/v1/models", b'{"name": "x"} }}', BAD),
    Case("json-single-quotes", "POST", "/v1/embeddings", b"{'model': 'x', 'input': 'a'}", BAD),
    Case("json-not-utf8", "POST", "/v1/models", b'\xff\xfe{"name": "x"}', BAD),
    Case("json-nested-100k-deep", "POST", "/v1/models", b"[" * 100_000 + b"]" * 100_000, BAD),
    Case("json-empty-body", "POST", "/v1/models", b"", UNPROCESSABLE),
    Case("json-as-text-plain", "POST", "/v1/models", j({"name": MINILM}), UNPROCESSABLE,
         headers={"Content-Type": "text/plain"}),
    # wrong types
    Case("body-is-array", "POST", "/v1/models", b"[]", UNPROCESSABLE),
    Case("body-is-string", "POST", "/v1/embeddings", b'"hello"', UNPROCESSABLE),
    Case("name-is-int", "POST", "/v1/models", j({"name": 5}), UNPROCESSABLE),
    Case("name-is-null", "POST", "/v1/models", j({"name": None}), UNPROCESSABLE),
    Case("pin-is-word", "POST", "/v1/models", j({"name": MINILM, "pin": "maybe"}),
         UNPROCESSABLE),
    Case("properties-is-string", "POST", "/v1/models", j({"name": "x", "properties": "yes"}),
         UNPROCESSABLE),
    Case("extra-field", "POST", "/v1/models", j({"name": MINILM, "evil": True}),
         UNPROCESSABLE),
    Case("input-is-int", "POST", "/v1/embeddings", embed(5, MINILM), UNPROCESSABLE),
    Case("input-items-mixed", "POST", "/v1/embeddings", embed(["a", 1, None], MINILM),
         UNPROCESSABLE),
    Case("input-is-object", "POST", "/v1/embeddings", embed({"a": "b"}, MINILM),
         UNPROCESSABLE),
    Case("encoding-format-hex", "POST", "/v1/embeddings",
         embed("a", MINILM, encoding_format="hex"), UNPROCESSABLE),
    Case("listener-port-string", "POST", "/v1/listeners", j({"port": "eighty"}),
         UNPROCESSABLE),
    Case("listener-port-out-of-range", "POST", "/v1/listeners", j({"port": 99999}),
         UNPROCESSABLE),
    # values that parse but must be refused
    Case("keep-alive-nan", "POST", "/v1/models", j({"name": MINILM, "keep_alive": float("nan")}),
         ARG),
    Case("keep-alive-infinity", "POST", "/v1/models",
         j({"name": MINILM, "keep_alive": float("inf")}), ARG),
    Case("keep-alive-1e300", "POST", "/v1/models", j({"name": MINILM, "keep_alive": 1e300}),
         ARG),
    Case("keep-alive-string-1e999", "PATCH", "/v1/models",
         j({"name": MINILM, "keep_alive": "1e999"}), ARG),
    Case("keep-alive-word", "PATCH", "/v1/models", j({"name": MINILM, "keep_alive": "forever"}),
         ARG),
    Case("model-size-nan", "POST", "/v1/models",
         j({"name": "x", "properties": {"type": "sbert", "model_size": float("nan")}}), ARG),
    Case("model-size-1e300", "POST", "/v1/models",
         j({"name": "x", "properties": {"type": "sbert", "model_size": 1e300}}), ARG),
    Case("properties-type-unknown", "POST", "/v1/models",
         j({"name": "x", "properties": {"type": "pickle"}}), ARG),
    Case("properties-dimensions-negative", "POST", "/v1/models",
         j({"name": "x", "properties": {"type": "sbert", "dimensions": -1}}), ARG),
    Case("device-tpu", "POST", "/v1/models", j({"name": MINILM, "device": "tpu:0"}), ARG),
    Case("device-cuda-absent", "POST", "/v1/models", j({"name": MINILM, "device": "cuda:7"}),
         (400, "hardware_compatability_error")),
    Case("input-empty-list", "POST", "/v1/embeddings", embed([], MINILM), ARG),
    # missing fields
    Case("missing-name", "POST", "/v1/models", b"{}", UNPROCESSABLE),
    Case("missing-input", "POST", "/v1/embeddings", j({"model": MINILM}), UNPROCESSABLE),
    Case("missing-model", "POST", "/v1/embeddings", j({"input": "a"}), UNPROCESSABLE),
    Case("patch-missing-name", "PATCH", "/v1/models", j({"pin": True}), UNPROCESSABLE),
    Case("marqo-delete-missing-model-name", "DELETE", "/models", None, UNPROCESSABLE),
    Case("delete-neither-name-nor-all", "DELETE", "/v1/models", None, ARG),
    # sizes
    Case("content-length-over-limit", "POST", "/v1/models", None, TOO_BIG,
         headers={"Content-Length": str(LIMIT + 1), "Content-Type": "application/json"}),
    Case("body-over-limit", "POST", "/v1/embeddings", embed("a" * (LIMIT + 10), MINILM),
         TOO_BIG),
    Case("chunked-body-over-limit", "POST", "/v1/embeddings", embed("a" * (LIMIT + 10), MINILM),
         TOO_BIG, chunked=True),
    Case("batch-100k-items", "POST", "/v1/embeddings", embed(["a"] * 100_000, MINILM), TOO_BIG),
    Case("text-one-megabyte", "POST", "/v1/embeddings", embed("a" * 2**20, MINILM), TOO_BIG),
    Case("name-one-megabyte", "POST", "/v1/models", j({"name": "m" * 2**20}), UNPROCESSABLE),
    Case("name-10k-chars", "POST", "/v1/models", j({"name": TEN_K}), UNPROCESSABLE),
    Case("model-10k-chars", "POST", "/v1/embeddings", embed("a", TEN_K), UNPROCESSABLE),
    Case("query-name-10k-chars", "DELETE", f"/v1/models?name={TEN_K}", None, UNPROCESSABLE),
    Case("marqo-model-name-10k-chars", "DELETE", f"/models?model_name={TEN_K}&model_device=cpu",
         None, NOT_CACHED),
    Case("properties-name-10k-chars", "POST", "/v1/models",
         j({"name": "x", "properties": {"type": "sbert", "name": TEN_K}}), ARG),
    # names: traversal, NUL, unicode
    Case("name-dotdot-etc", "POST", "/v1/models", j({"name": "../../../../../../etc"}), ARG),
    Case("name-dotdot", "POST", "/v1/models", j({"name": ".."}), ARG, only=("tcp",)),
    Case("name-hf-hub-dotdot", "POST", "/v1/models", j({"name": "hf-hub:../../etc"}), ARG),
    Case("name-open-clip-dotdot", "POST", "/v1/models", j({"name": "open_clip/../etc"}), ARG),
    Case("name-hf-slash-dotdot", "POST", "/v1/models", j({"name": "hf/../../etc/passwd"}), ARG),
    Case("embed-model-dotdot", "POST", "/v1/embeddings", embed("a", "../../etc/passwd"), ARG),
    Case("query-name-dotdot", "DELETE", "/v1/models?name=../../etc", None, NOT_CACHED),
    Case("marqo-model-name-dotdot", "DELETE", "/models?model_name=../x&model_device=cpu", None,
         NOT_CACHED),
    Case("name-nul", "POST", "/v1/models", j({"name": "all-MiniLM\x00-L6-v2"}), ARG),
    Case("embed-model-nul", "POST", "/v1/embeddings", embed("a", "all-MiniLM\x00"), ARG),
    Case("properties-name-nul", "POST", "/v1/models",
         j({"name": "x", "properties": {"type": "sbert", "name": "a\x00b"}}), ARG),
    Case("query-name-nul", "DELETE", "/v1/models?name=a%00b", None, NOT_CACHED),
    Case("marqo-model-name-nul", "DELETE", "/models?model_name=a%00b&model_device=cpu", None,
         NOT_CACHED),
    Case("name-unicode", "POST", "/v1/models", j({"name": "模型/🙂-ẞ"}), ARG),
    Case("name-zero-width", "POST", "/v1/models", j({"name": MINILM + "\u200b"}), ARG),
    Case("name-lone-surrogate", "POST", "/v1/models", b'{"name": "\\ud800"}', UNPROCESSABLE),
    Case("input-lone-surrogate", "POST", "/v1/embeddings", embed("a\ud800b", MINILM), BAD),
    Case("properties-name-lone-surrogate", "POST", "/v1/models",
         j({"name": "x", "properties": {"type": "sbert", "name": "\udfff"}}), ARG),
    Case("query-name-unicode", "DELETE", "/v1/models?name=%E6%A8%A1%F0%9F%99%82", None,
         NOT_CACHED),
    Case("query-name-bad-utf8", "DELETE", "/v1/models?name=%ff%fe%fd", None, NOT_CACHED),
    # repeated query parameters
    Case("query-name-repeated", "DELETE", "/v1/models?name=a&name=b", None, NOT_CACHED),
    Case("query-device-repeated", "DELETE", "/v1/models?name=a&device=cpu&device=tpu", None,
         ARG),
    Case("query-all-repeated-bad", "DELETE", "/v1/models?all=maybe&all=perhaps", None,
         UNPROCESSABLE),
    Case("query-force-word", "DELETE", "/v1/models?name=a&force=yes-please", None,
         UNPROCESSABLE),
    Case("marqo-query-repeated", "DELETE",
         "/models?model_name=a&model_name=b&model_device=cpu&model_device=cuda", None,
         NOT_CACHED),
    # images: bad base64, not images, bombs, too big
    Case("image-invalid-base64", "POST", "/v1/embeddings",
         embed(["data:image/png;base64,!!!not base64!!!"]), BAD),
    Case("image-base64-of-text", "POST", "/v1/embeddings",
         embed([data_uri(b"hello, I am not a picture")]), BAD),
    Case("image-empty-payload", "POST", "/v1/embeddings", embed(["data:image/png;base64,"]),
         BAD),
    Case("image-not-base64-uri", "POST", "/v1/embeddings",
         embed(["data:image/png,raw-bytes-here"]), BAD),
    Case("image-truncated-png", "POST", "/v1/embeddings", embed([data_uri(png_bytes()[:40])]),
         BAD),
    Case("image-svg", "POST", "/v1/embeddings",
         embed([data_uri(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml")]),
         BAD),
    Case("data-uri-text-plain", "POST", "/v1/embeddings",
         embed([data_uri(b"hello", "text/plain")]), BAD),
    Case("data-uri-pdf-to-text-model", "POST", "/v1/embeddings",
         embed(data_uri(b"%PDF-1.4", "application/pdf"), MINILM), BAD),
    Case("image-to-text-model", "POST", "/v1/embeddings",
         embed(data_uri(png_bytes()), MINILM), ARG),
    Case("image-decompression-bomb", "POST", "/v1/embeddings", embed([data_uri(bomb_png())]),
         TOO_BIG),
    Case("image-over-byte-limit", "POST", "/v1/embeddings",
         embed([data_uri(b"\x89PNG" + os.urandom(21 * 2**20))]), TOO_BIG),
    Case("image-bomb-among-texts", "POST", "/v1/embeddings",
         embed(["a cat", data_uri(bomb_png(12000))]), TOO_BIG),
    # local paths: refused over TCP; over the socket they are tried, and are not models
    Case("local-path-etc", "POST", "/v1/models", j({"name": "/etc"}), ARG),
    Case("local-path-file-url", "POST", "/v1/models", j({"name": "file:///etc"}), ARG),
    Case("local-path-home", "POST", "/v1/models", j({"name": "~/no-such-model"}), ARG),
    Case("local-path-hf-hub", "POST", "/v1/models", j({"name": "hf-hub:/etc"}), ARG),
    Case("local-path-properties", "POST", "/v1/models",
         j({"name": "x", "properties": {"type": "open_clip", "localpath": "/etc/passwd"}}), ARG),
    Case("local-path-properties-hf-hub", "POST", "/v1/models",
         j({"name": "x", "properties": {"type": "open_clip", "name": "hf-hub:/tmp"}}), ARG),
    Case("local-path-properties-dot", "POST", "/v1/models",
         j({"name": "x", "properties": {"type": "sbert", "name": "."}}), ARG, only=("tcp",)),
    Case("local-path-embed", "POST", "/v1/embeddings", embed("a", "/etc"), ARG),
    Case("url-http", "POST", "/v1/models",  # the socket may fetch it; TCP may not
         j({"name": "x", "properties": {"type": "open_clip", "url": "http://127.0.0.1:1/x.pt"}}),
         ARG, only=("tcp",)),
    Case("url-ftp", "POST", "/v1/models",
         j({"name": "x", "properties": {"type": "open_clip", "url": "ftp://127.0.0.1:1/x.pt"}}),
         ARG),
    # listeners: socket only; a bad host is a 400 on the socket, not a crash
    Case("listener-over-tcp", "POST", "/v1/listeners", j({"port": 0}), ARG, only=("tcp",)),
    Case("listener-bad-host", "POST", "/v1/listeners", j({"port": 0, "host": "999.1.1.1"}), ARG),
    Case("listener-nul-host", "POST", "/v1/listeners", j({"port": 0, "host": "a\x00b"}), ARG),
    # routes and methods
    Case("route-unknown", "GET", "/v1/../../etc/passwd", None, (404, "not_found")),
    Case("route-nul", "GET", "/v1/models%00", None, (404, "not_found")),
    Case("method-put", "PUT", "/v1/models", j({"name": MINILM}), (405, "method_not_allowed")),
    Case("method-delete-health", "DELETE", "/v1/health", None, (405, "method_not_allowed")),
    Case("patch-not-loaded", "PATCH", "/v1/models", j({"name": "nope", "pin": True}),
         NOT_CACHED),
]


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case, listener", [
    pytest.param(case, listener, id=f"{case.id}-{listener}")
    for case in CASES for listener in case.only])
def test_hostile_request_gets_a_contract_error(hostile: Daemon, cache_before: Any, case: Case,
                                               listener: str) -> None:
    want = case.expected(listener)
    assert want is not None
    status, headers, data = exchange(hostile, listener, case.method, case.path, case.body,
                                     case.headers, case.chunked)
    assert headers.get("content-type") == "application/json", data[:300]
    body = json.loads(data)
    assert (status, body.get("code")) == want, body
    assert_contract_error(status, body)


def assert_contract_error(status: int, body: dict[str, Any]) -> None:
    assert 400 <= status < 500
    assert body["type"] == "invalid_request"
    if status == 422:
        assert list(body) == DETAIL_KEYS and body["link"] == ""
        assert body["detail"] and all({"loc", "msg", "type"} <= set(item)
                                      for item in body["detail"])
    else:
        assert list(body) == ERROR_KEYS and body["link"] is None
        assert isinstance(body["message"], str) and body["message"]


def test_local_paths_over_tcp_say_why(hostile: Daemon) -> None:
    for name in ("/etc", "hf-hub:/etc", "..", "file:///etc"):
        status, _, data = exchange(hostile, "tcp", "POST", "/v1/models", j({"name": name}))
        assert status == 400 and "only over the Unix socket" in json.loads(data)["message"]


def test_daemon_and_cache_survive_the_suite(hostile: Daemon, cache_before: Any) -> None:
    assert hostile.alive()
    assert _cache(hostile) == cache_before
    # Still serving both listeners and both models.
    assert len(hostile.client.embed(MINILM, ["still here"])[0]) == 384
    assert len(hostile.http_client().embed(CLIP, [data_uri(png_bytes())])[0]) == 32
    assert "Traceback" not in hostile.log()
