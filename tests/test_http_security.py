"""The TCP listener's guards: the API key, local paths, and exposure without a key."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from typing import Any

import pytest

from modelctl.client import Client
from modelctl.errors import InvalidArgument, Unauthorized
from modelctl.testing import Daemon, free_port, minilm_path

UNAUTHORIZED = {"message": "missing or wrong API key: send it as x-api-key or "
                           "Authorization: Bearer",
                "code": "unauthorized", "type": "invalid_request", "link": None}


def get(port: int, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheader("content-type", ""), resp.read()
    finally:
        conn.close()


ROUTES = ["/models", "/device/cpu", "/", "/v1/models", "/v1/health", "/metrics",
          "/openapi.json", "/docs", "/no/such/route"]


Headers = Callable[[str], dict[str, str]]  # the headers a client sends, given the key


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("headers", [
    lambda k: {},
    lambda k: {"x-api-key": "wrong"},
    lambda k: {"x-api-key": k[:-1]},                   # a prefix of the key
    lambda k: {"x-api-key": k + "x"},
    lambda k: {"Authorization": f"Bearer {k[:-1]}"},
    lambda k: {"Authorization": k},                    # no scheme
    lambda k: {"Authorization": f"Basic {k}"},
    lambda k: {"x-api-key": "", "Authorization": f"Bearer {k}"},  # empty x-api-key: wrong
], ids=["none", "wrong", "prefix", "longer", "bearer-prefix", "no-scheme", "basic", "empty"])
def test_tcp_without_the_right_key_is_401_json(keyed: Daemon, path: str,
                                               headers: Headers) -> None:
    assert keyed.api_key is not None
    status, content_type, raw = get(keyed.http_port or 0, path, headers(keyed.api_key))
    assert (status, content_type) == (401, "application/json")
    assert raw == json.dumps(UNAUTHORIZED, separators=(",", ":")).encode()


@pytest.mark.parametrize("path", ["/models", "/device/cpu", "/v1/models", "/v1/health"])
@pytest.mark.parametrize("headers", [
    lambda k: {"x-api-key": k},
    lambda k: {"Authorization": f"Bearer {k}"},
    lambda k: {"Authorization": f"bearer {k}"},
], ids=["x-api-key", "bearer", "bearer-lowercase"])
def test_tcp_with_the_key_answers(keyed: Daemon, path: str, headers: Headers) -> None:
    assert keyed.api_key is not None
    status, content_type, raw = get(keyed.http_port or 0, path, headers(keyed.api_key))
    assert (status, content_type) == (200, "application/json")
    assert json.loads(raw)


def test_socket_needs_no_key_and_the_log_never_shows_it(keyed: Daemon) -> None:
    assert keyed.client.api_key is None
    assert keyed.client.get_loaded_models() == {"models": []}
    assert keyed.client.health()["status"] == "ok"
    with pytest.raises(Unauthorized) as info:
        keyed.http_client(api_key="wrong").get_loaded_models()
    assert (info.value.status, info.value.code) == (401, "unauthorized")
    assert keyed.http_client().get_loaded_models() == {"models": []}
    keyed.cli("ls", check=True)
    keyed.cli("daemon", "status", check=True)
    log = keyed.log()
    assert keyed.api_key and log and keyed.api_key not in log
    assert keyed.api_key not in (keyed.runtime_dir / "modelctl.json").read_text()


def test_a_listener_opened_with_a_key_requires_it(keyed: Daemon) -> None:
    port = free_port()
    other_key = "second-listener-key-91ab"
    keyed.client.add_listener(port, api_key=other_key)
    assert get(port, "/models", {})[0] == 401
    assert get(port, "/models", {"x-api-key": keyed.api_key or ""})[0] == 401  # its own key
    assert get(port, "/models", {"x-api-key": other_key})[0] == 200
    assert other_key not in keyed.log()


def test_listeners_can_be_opened_only_over_the_socket(keyed: Daemon) -> None:
    with pytest.raises(InvalidArgument, match="only over the Unix socket"):
        keyed.http_client().add_listener(free_port())


@pytest.mark.parametrize("name, properties", [
    ("local-dir", None),                                 # name is a directory of weights
    ("/etc", None),
    ("/no/such/dir", None),                              # refused before the disk is looked at
    ("file:///etc", None),
    ("~/models/x", None),
    ("custom-sbert", {"type": "sbert", "dimensions": 384, "localpath": "local-dir"}),
    ("custom-clip", {"type": "open_clip", "dimensions": 32, "localpath": "/etc/passwd"}),
    ("custom-url", {"type": "open_clip", "dimensions": 32, "url": "file:///etc/passwd"}),
    ("custom-name", {"type": "sbert", "name": "local-dir", "dimensions": 384}),
])
def test_local_paths_are_refused_over_tcp(daemon: Daemon, name: str,
                                          properties: dict[str, Any] | None) -> None:
    local = minilm_path()
    if name == "local-dir":
        name = local
    if properties is not None:
        properties = {k: local if v == "local-dir" else v for k, v in properties.items()}
    before = [(m["name"], m["device"]) for m in daemon.client.list_models()]
    with pytest.raises(InvalidArgument) as info:
        daemon.http_client().load_model(name, "cpu", properties=properties)
    assert info.value.status == 400
    assert "refused" in info.value.message and "Unix socket" in info.value.message
    assert [(m["name"], m["device"]) for m in daemon.client.list_models()] == before


def test_local_paths_are_accepted_on_the_socket(clean_daemon: Daemon,
                                                tiny_clip: dict[str, Any]) -> None:
    c = clean_daemon.client
    entry = c.load_model(minilm_path(), "cpu")
    assert entry["state"] == "ready" and entry["dimensions"] == 384
    entry = c.load_model("sock-clip", "cpu", properties=tiny_clip)
    assert entry["state"] == "ready" and tiny_clip["localpath"].startswith("/")
    # Loaded over the socket, listed and usable over TCP like any other model.
    over_tcp = clean_daemon.http_client()
    assert [m["model_name"] for m in over_tcp.get_loaded_models()["models"]] == \
        [minilm_path(), "sock-clip"]
    assert len(over_tcp.embed("sock-clip", ["a red square"])[0]) == 32


def test_non_loopback_without_a_key_warns(keyed: Daemon) -> None:
    # The running daemon opens the listener (no second daemon to start and stop).
    port = free_port()
    proc = keyed.cli("serve", "--http", str(port), "--host", "0.0.0.0", timeout=60,
                     env={"MODELCTL_API_KEY": ""})
    assert proc.returncode == 0, proc.stderr
    assert "without an API key" in proc.stderr and f"0.0.0.0:{port}" in proc.stderr
    assert "0.0.0.0 without an API key" in keyed.log()
    # With a key (from MODELCTL_API_KEY): no warning, and the new listener asks for it.
    assert keyed.api_key is not None
    port = free_port()
    proc = keyed.cli("serve", "--http", str(port), "--host", "0.0.0.0", timeout=60,
                     env={"MODELCTL_API_KEY": keyed.api_key})
    assert proc.returncode == 0 and "API key" not in proc.stderr, proc.stderr
    assert get(port, "/models", {})[0] == 401
    assert get(port, "/models", {"x-api-key": keyed.api_key})[0] == 200


def test_loopback_is_the_default_bind(daemon: Daemon) -> None:
    health = Client(socket_path=daemon.socket_path).health()
    assert health["http"].startswith("http://127.0.0.1:")
