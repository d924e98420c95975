"""``modelctl.Client``: Marqo's documented calls and the native ones, over the socket and
over TCP with an API key, and the typed errors they raise."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelctl import Client, __version__
from modelctl.errors import (
    ApiError,
    DaemonNotRunning,
    HardwareCompatibilityError,
    InvalidArgument,
    MethodNotAllowed,
    ModelNotInCache,
    NotFound,
    Unauthorized,
    Unprocessable,
)
from modelctl.testing import MINILM, Daemon, free_port

REPO = Path(__file__).resolve().parent.parent

KEY = "client-test-key-0b77"
HF_MINILM = "hf/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def tcp_url(daemon: Daemon) -> str:
    """A listener with a key, opened on the shared daemon as `serve --http` would."""
    port = free_port()
    reply = daemon.client.add_listener(port, api_key=KEY)
    assert reply["url"] == f"http://127.0.0.1:{port}"
    return str(reply["url"])


@pytest.fixture(params=["socket", "tcp"])
def client(request: pytest.FixtureRequest, clean_daemon: Daemon,
           tcp_url: str) -> Iterator[Client]:
    c = (Client(socket_path=clean_daemon.socket_path) if request.param == "socket"
         else Client(tcp_url, api_key=KEY))
    yield c
    c.close()


def test_marqo_calls(client: Client) -> None:
    assert client.get_marqo()["version"] == __version__
    assert client.get_loaded_models() == {"models": []}
    client.load_model(HF_MINILM, "cpu")
    assert client.get_loaded_models() == {"models": [{"model_name": HF_MINILM,
                                                      "model_device": "cpu"}]}
    assert client.eject_model(HF_MINILM, "cpu") == {
        "result": "success",
        "message": f"successfully eject model_name `{HF_MINILM}` from device `cpu`"}
    client.load_model(HF_MINILM, "cpu")
    assert client.eject_model(model_name=HF_MINILM) == {  # every device, as 3.18.1+ sends
        "result": "success",
        "message": f"successfully eject model_name `{HF_MINILM}` from device `cpu`"}
    assert client.get_loaded_models() == {"models": []}
    cpu = client.get_cpu_info()
    assert list(cpu) == ["cpu_usage_percent", "memory_used_percent", "memory_used_gb"]
    assert all(isinstance(v, str) for v in cpu.values())
    with pytest.raises(HardwareCompatibilityError) as info:
        client.get_cuda_info()
    assert (info.value.status, info.value.code, info.value.message) == (
        400, "hardware_compatability_error", "CUDA is not available on this instance")


def test_native_calls(client: Client, daemon: Daemon) -> None:
    health = client.health()
    assert health["status"] == "ok" and health["pid"] == daemon.pid
    assert health["version"] == __version__ and health["torch_ready"] is True
    registry = {m["name"]: m for m in client.registry()}
    assert registry[MINILM]["family"] == "sbert" and registry[MINILM]["dimensions"] == 384
    assert registry[MINILM]["available_offline"] is True
    devices = client.devices()
    assert devices["cpu"]["device"] == "cpu" and devices["cpu"]["memory_total"] > 0
    assert devices["cuda"] == [] and devices["cuda_available"] is False

    entry = client.load_model(MINILM, "cpu", keep_alive="10m")
    assert (entry["name"], entry["device"], entry["state"]) == (MINILM, "cpu", "ready")
    assert entry["dimensions"] == 384 and entry["bytes"] > 20_000_000
    assert entry["keep_alive"] == 600
    [listed] = client.list_models()
    assert listed["name"] == MINILM and listed["loaded_at"] == entry["loaded_at"]
    assert {"bytes", "device_bytes", "last_used_at", "requests", "pinned",
            "expires_at"} <= set(listed)
    [changed] = client.update_model(MINILM, pin=True)
    assert changed["pinned"] is True

    vectors = client.embed(MINILM, ["modelctl keeps one copy", "of each model"])
    assert [len(v) for v in vectors] == [384, 384]
    floats = client.embeddings(MINILM, "modelctl keeps one copy")
    assert np.allclose(floats["data"][0]["embedding"], vectors[0], atol=1e-6)
    assert client.list_models()[0]["requests"] == 2

    assert "modelctl_request_seconds" in client.metrics()
    ejected = client.eject(MINILM, "cpu")
    assert [(e["name"], e["device"]) for e in ejected["ejected"]] == [(MINILM, "cpu")]
    assert ejected["bytes_freed"] == sum(e["bytes_freed"] or 0 for e in ejected["ejected"])
    assert client.list_models() == []


@pytest.mark.parametrize("call, cls, status, code", [
    (lambda c: c.eject_model("ViT-L/14", "cuda"), ModelNotInCache, 404, "model_not_in_cache"),
    (lambda c: c.eject_model("ViT-L/14"), ModelNotInCache, 404, "model_not_in_cache"),
    (lambda c: c.eject("ViT-L/14"), ModelNotInCache, 404, "model_not_in_cache"),
    (lambda c: c.load_model("no-such-model", "cpu"), InvalidArgument, 400, "invalid_argument"),
    (lambda c: c.load_model(MINILM, "tpu"), InvalidArgument, 400, "invalid_argument"),
    (lambda c: c.load_model(MINILM, "cuda"), HardwareCompatibilityError, 400,
     "hardware_compatability_error"),
    (lambda c: c.embeddings("no-such-model", "hi"), InvalidArgument, 400, "invalid_argument"),
    (lambda c: c.request("DELETE", "/models"), Unprocessable, 422, "unprocessable_entity"),
    (lambda c: c.request("GET", "/v2/models"), NotFound, 404, "not_found"),
    (lambda c: c.request("PUT", "/models"), MethodNotAllowed, 405, "method_not_allowed"),
], ids=["eject-device", "eject-everywhere", "native-eject", "unknown-model", "bad-device",
        "no-cuda", "embed-unknown", "422", "no-route", "wrong-method"])
def test_errors_are_typed(client: Client, call: Any, cls: type[ApiError], status: int,
                          code: str) -> None:
    with pytest.raises(cls) as info:
        call(client)
    err = info.value
    assert isinstance(err, ApiError)
    assert (err.status, err.code, err.type) == (status, code, "invalid_request")
    assert isinstance(err.message, str) and err.message
    assert str(err) == err.message


def test_errors_carry_the_contract_message(client: Client) -> None:
    with pytest.raises(ModelNotInCache) as info:
        client.eject_model("ViT-L/14", "cuda")
    assert info.value.message == "The model_name `ViT-L/14` device `cuda` is not cached or found"
    with pytest.raises(Unprocessable) as unprocessable:
        client.request("DELETE", "/models")
    assert unprocessable.value.detail == [{"loc": ["query", "model_name"],
                                           "msg": "field required",
                                           "type": "value_error.missing"}]


@pytest.mark.parametrize("key", [None, "wrong", KEY.upper()])
def test_tcp_without_the_right_key_is_unauthorized(tcp_url: str, key: str | None) -> None:
    client = Client(tcp_url, api_key=key)
    for call in (client.get_loaded_models, client.health, client.get_cpu_info):
        with pytest.raises(Unauthorized) as info:
            call()
        assert (info.value.status, info.value.code) == (401, "unauthorized")


def test_no_daemon_is_daemon_not_running(tmp_path: Any) -> None:
    with pytest.raises(DaemonNotRunning, match="no modelctl daemon"):
        Client(socket_path=tmp_path / "modelctl.sock").get_loaded_models()
    with pytest.raises(DaemonNotRunning):
        Client(f"http://127.0.0.1:{free_port()}").health()
    with pytest.raises(ValueError, match="not an http"):
        Client("ftp://example.com")


def test_default_client_follows_the_environment(daemon: Daemon, tcp_url: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELCTL_URL", raising=False)
    monkeypatch.delenv("MODELCTL_SOCKET", raising=False)
    monkeypatch.setenv("MODELCTL_RUNTIME_DIR", str(daemon.runtime_dir))
    local = Client()
    assert local.where == f"unix:{daemon.socket_path}"
    assert local.health()["pid"] == daemon.pid
    monkeypatch.setenv("MODELCTL_URL", tcp_url)
    monkeypatch.setenv("MODELCTL_API_KEY", KEY)
    remote = Client()
    assert remote.where == tcp_url and remote.health()["pid"] == daemon.pid


def test_one_client_shared_by_threads(daemon: Daemon, tcp_url: str) -> None:
    client = Client(tcp_url, api_key=KEY)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: client.get_loaded_models(), range(200)))
    assert len(answers) == 200 and all("models" in a for a in answers)


def test_import_needs_only_the_standard_library() -> None:
    # -S: no site-packages on the path at all, so any third-party import would fail.
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from modelctl import Client; "
            "Client(); Client('http://127.0.0.1:8882', api_key='k'); "
            "import modelctl.client; "
            "print(sorted({m.split('.')[0] for m in sys.modules} "
            "- set(sys.stdlib_module_names) - {'modelctl', '__main__'}))")
    proc = subprocess.run([sys.executable, "-S", "-c", code, str(REPO)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
