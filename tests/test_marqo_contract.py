"""shared/CONTRACT.md, byte for byte, against a real ``modelctl serve --http PORT``.

Every example body of the contract is rebuilt with the values of the case (names,
devices) and serialised the way Marqo's FastAPI server writes JSON (compact, UTF-8, key
order kept); the daemon's raw bytes must equal it. Requests go over a plain
``http.client`` connection, with the query written as Marqo's client writes it (names
unencoded, ``model_name=ViT-L/14``).
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelctl import __version__
from modelctl.client import Client
from modelctl.daemon.routes_marqo import eject_message
from modelctl.errors import DaemonNotRunning
from modelctl.testing import MINILM, Daemon, free_port, modelctl_exe

NOT_CACHED_404 = {"message": "The model_name `ViT-L/14` device `cuda` is not cached or found",
                  "code": "model_not_in_cache", "type": "invalid_request", "link": None}
MISSING_NAME_422 = {"detail": [{"loc": ["query", "model_name"], "msg": "field required",
                                "type": "value_error.missing"}],
                    "code": "unprocessable_entity", "type": "invalid_request", "link": ""}
NO_CUDA_400 = {"message": "CUDA is not available on this instance",
               "code": "hardware_compatability_error", "type": "invalid_request", "link": None}
HF_MINILM = "hf/all-MiniLM-L6-v2"  # a Marqo registry name with a slash in it


def marqo_bytes(body: Any) -> bytes:
    """JSON as Marqo's FastAPI server writes it."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def ordered(raw: bytes) -> list[tuple[str, Any]]:
    """The top-level keys and values of a JSON object, in the order they were sent."""
    return json.loads(raw, object_pairs_hook=list)


class Served:
    """``modelctl serve --http PORT`` in the foreground, as a user runs it in a terminal."""

    def __init__(self) -> None:
        self.daemon = Daemon(http_port=free_port())
        self.port = self.daemon.http_port
        self.log_path = self.daemon.runtime_dir / "serve.stderr"
        exe = modelctl_exe()
        assert exe, "the modelctl console script is not installed in this venv"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([exe, "serve", "--http", str(self.port)],
                                         env=self.daemon.env, stdout=log, stderr=log)
        try:
            self._wait_ready()
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise
        self.client = self.daemon.client

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}:\n{self.stderr()}")
            try:
                if self.daemon.client.health()["torch_ready"]:
                    return
            except DaemonNotRunning:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"serve did not become ready:\n{self.stderr()}")
            time.sleep(0.1)

    def stderr(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str) -> tuple[int, str, bytes]:
        """One request on a fresh TCP connection: status, content type and raw body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            return resp.status, resp.getheader("content-type", ""), resp.read()
        finally:
            conn.close()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            return self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def assert_json(self, method: str, path: str, status: int, body: Any) -> None:
        got_status, content_type, raw = self.request(method, path)
        assert (got_status, content_type) == (status, "application/json"), raw
        assert raw == marqo_bytes(body)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    server = Served()
    try:
        yield server
    finally:
        code = server.stop()
        shutil.rmtree(server.daemon.runtime_dir, ignore_errors=True)
    assert code == 0, server.stderr()


@pytest.fixture
def clean(served: Served) -> Iterator[Served]:
    yield served
    served.client.eject(all=True, force=True)


def test_serve_is_one_process_on_both_listeners(served: Served) -> None:
    assert served.daemon.pid == served.proc.pid  # the foreground process is the daemon
    health = Client(f"http://127.0.0.1:{served.port}").health()
    assert health["pid"] == served.proc.pid
    assert health["http"] == f"http://127.0.0.1:{served.port}"


def test_root_answers_the_version(served: Served) -> None:
    status, _, raw = served.request("GET", "/")
    pairs = ordered(raw)
    assert status == 200 and [k for k, _ in pairs] == ["message", "version"]
    message = dict(pairs)["message"]
    assert isinstance(message, str) and message
    assert raw == marqo_bytes({"message": message, "version": __version__})


def test_list_empty(clean: Served) -> None:
    clean.assert_json("GET", "/models", 200, {"models": []})


def test_list_in_load_order_once_per_device(clean: Served, tiny_clip: dict[str, Any]) -> None:
    c = clean.client
    c.load_model("tiny-clip", "cpu", properties=tiny_clip)
    c.load_model(HF_MINILM, "cpu")
    c.load_model(HF_MINILM, "CPU")  # the same model on the same device: one entry
    clean.assert_json("GET", "/models", 200, {"models": [
        {"model_name": "tiny-clip", "model_device": "cpu"},
        {"model_name": HF_MINILM, "model_device": "cpu"}]})
    # Load order, not name order: reloaded, tiny-clip goes to the end.
    c.eject("tiny-clip", "cpu")
    c.load_model("tiny-clip", "cpu", properties=tiny_clip)
    clean.assert_json("GET", "/models", 200, {"models": [
        {"model_name": HF_MINILM, "model_device": "cpu"},
        {"model_name": "tiny-clip", "model_device": "cpu"}]})
    # Exactly two keys per entry: the rich detail lives on /v1 only.
    _, _, raw = clean.request("GET", "/models")
    assert all(list(entry) == ["model_name", "model_device"]
               for entry in json.loads(raw)["models"])


def test_eject_from_one_device(clean: Served) -> None:
    clean.client.load_model(HF_MINILM, "cpu")
    clean.assert_json("DELETE", f"/models?model_name={HF_MINILM}&model_device=cpu", 200, {
        "result": "success",
        "message": f"successfully eject model_name `{HF_MINILM}` from device `cpu`"})
    # Eject is real: gone from both APIs at once.
    clean.assert_json("GET", "/models", 200, {"models": []})
    assert clean.client.list_models() == []
    # The device is matched after canonicalising it, and echoed as the client wrote it.
    clean.client.load_model(HF_MINILM, "cpu")
    clean.assert_json("DELETE", f"/models?model_name={HF_MINILM}&model_device=CPU", 200, {
        "result": "success",
        "message": f"successfully eject model_name `{HF_MINILM}` from device `CPU`"})
    assert clean.client.list_models() == []


def test_eject_from_every_device_without_model_device(clean: Served,
                                                      tiny_clip: dict[str, Any]) -> None:
    clean.client.load_model("tiny-clip", "cpu", properties=tiny_clip)
    clean.assert_json("DELETE", "/models?model_name=tiny-clip", 200, {
        "result": "success",
        "message": "successfully eject model_name `tiny-clip` from device `cpu`"})
    clean.assert_json("DELETE", "/models?model_name=tiny-clip", 404, {
        "message": "The model_name `tiny-clip` is not cached or found",
        "code": "model_not_in_cache", "type": "invalid_request", "link": None})


def test_eject_message_names_every_device() -> None:
    # Several devices need a GPU (test_several_devices_with_cuda runs it for real there);
    # here, the message the route builds from the ejected devices, in their load order.
    assert eject_message("ViT-L/14", ["cpu", "cuda"]) == \
        "successfully eject model_name `ViT-L/14` from devices `cpu`, `cuda`"
    assert eject_message("ViT-L/14", ["cuda", "cuda:1", "cpu"]) == \
        "successfully eject model_name `ViT-L/14` from devices `cuda`, `cuda:1`, `cpu`"
    assert eject_message("ViT-L/14", ["cpu"]) == \
        "successfully eject model_name `ViT-L/14` from device `cpu`"


@pytest.mark.gpu
def test_several_devices_with_cuda(clean: Served) -> None:
    c = clean.client
    c.load_model(HF_MINILM, "cpu")
    c.load_model(HF_MINILM, "cuda")
    clean.assert_json("GET", "/models", 200, {"models": [
        {"model_name": HF_MINILM, "model_device": "cpu"},
        {"model_name": HF_MINILM, "model_device": "cuda"}]})
    clean.assert_json("DELETE", f"/models?model_name={HF_MINILM}", 200, {
        "result": "success",
        "message": f"successfully eject model_name `{HF_MINILM}` from devices `cpu`, `cuda`"})
    clean.assert_json("GET", "/models", 200, {"models": []})


def test_eject_not_cached_is_the_contract_404(clean: Served) -> None:
    clean.client.load_model(HF_MINILM, "cpu")
    clean.assert_json("DELETE", "/models?model_name=ViT-L/14&model_device=cuda", 404,
                      NOT_CACHED_404)
    # Loaded, but not on that device: the same 404 (and the cpu copy stays).
    clean.assert_json("DELETE", f"/models?model_name={HF_MINILM}&model_device=cuda", 404,
                      {**NOT_CACHED_404, "message": f"The model_name `{HF_MINILM}` device "
                                                    "`cuda` is not cached or found"})
    clean.assert_json("GET", "/models", 200, {"models": [
        {"model_name": HF_MINILM, "model_device": "cpu"}]})


@pytest.mark.parametrize("name, device", [
    ("ViT-L/14", "gpu"),           # not a device at all: Marqo does not validate it here
    ("ViT-L/14", "cuda:banana"),
    ("ViT-L/14", ""),
    ("", "cpu"),                   # empty name: no prefix match as in Marqo, a 404
    ("", ""),
    ("hf/all-MiniLM", "cpu"),     # a prefix of a loaded name: modelctl matches exactly
])
def test_bad_device_or_empty_name_is_the_same_404(clean: Served, name: str,
                                                  device: str) -> None:
    clean.client.load_model(HF_MINILM, "cpu")
    clean.assert_json("DELETE", f"/models?model_name={name}&model_device={device}", 404, {
        **NOT_CACHED_404,
        "message": f"The model_name `{name}` device `{device}` is not cached or found"})
    assert [m["model_name"] for m in clean.client.get_loaded_models()["models"]] == [HF_MINILM]


@pytest.mark.parametrize("query", ["", "?model_device=cpu", "?modelname=ViT-L/14"])
def test_missing_model_name_is_the_pydantic_v1_422(served: Served, query: str) -> None:
    served.assert_json("DELETE", f"/models{query}", 422, MISSING_NAME_422)


def test_cuda_without_a_gpu_is_the_contract_400(served: Served) -> None:
    if served.client.devices()["cuda_available"]:
        pytest.skip("this machine has CUDA; test_cuda_devices_format covers it")
    served.assert_json("GET", "/device/cuda", 400, NO_CUDA_400)


@pytest.mark.gpu
def test_cuda_devices_format(served: Served) -> None:
    status, _, raw = served.request("GET", "/device/cuda")
    assert status == 200 and [k for k, _ in ordered(raw)] == ["cuda_devices"]
    devices = json.loads(raw)["cuda_devices"]
    assert devices and [d["device_id"] for d in devices] == list(range(len(devices)))
    for device in devices:
        assert list(device) == ["device_id", "device_name", "memory_used", "total_memory",
                                "utilization", "memory_used_percent"]
        assert isinstance(device["device_name"], str) and device["device_name"]
        assert re.fullmatch(r"\d+\.\d GiB", device["memory_used"])
        assert re.fullmatch(r"\d+\.\d GiB", device["total_memory"])
        assert re.fullmatch(r"\d+\.\d %", device["utilization"])
        assert re.fullmatch(r"\d+\.\d %", device["memory_used_percent"])


def test_device_cpu_formats_and_answers_at_once(served: Served) -> None:
    import psutil

    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    try:
        for _ in range(5):
            started = time.perf_counter()
            conn.request("GET", "/device/cpu")
            resp = conn.getresponse()
            raw = resp.read()
            elapsed = time.perf_counter() - started
            # Marqo samples for a whole second; a background sample answers at once.
            assert elapsed < 0.1, f"/device/cpu took {elapsed * 1000:.0f} ms"
            assert resp.status == 200 and resp.getheader("content-type") == "application/json"
            pairs = ordered(raw)
            assert [k for k, _ in pairs] == ["cpu_usage_percent", "memory_used_percent",
                                             "memory_used_gb"]
            body = dict(pairs)
            assert re.fullmatch(r"\d{1,3}\.\d %", body["cpu_usage_percent"])
            assert re.fullmatch(r"\d{1,3}\.\d %", body["memory_used_percent"])
            assert re.fullmatch(r"\d+\.\d", body["memory_used_gb"])
            assert 0 <= float(body["cpu_usage_percent"][:-2]) <= 100
            assert raw == marqo_bytes(body)
    finally:
        conn.close()
    # memory_used_gb is virtual_memory().used in decimal GB: within 1 GB of ours.
    assert abs(float(body["memory_used_gb"]) - psutil.virtual_memory().used / 1e9) < 1.0


@pytest.mark.parametrize("method, path, status, code", [
    ("GET", "/no/such/route", 404, "not_found"),
    ("GET", "/indexes/my-index/search", 404, "not_found"),
    ("POST", "/models", 405, "method_not_allowed"),
    ("PUT", "/device/cpu", 405, "method_not_allowed"),
    ("POST", "/", 405, "method_not_allowed"),
    ("DELETE", "/v1/health", 405, "method_not_allowed"),
])
def test_unknown_routes_and_wrong_methods_answer_json(served: Served, method: str, path: str,
                                                      status: int, code: str) -> None:
    got, content_type, raw = served.request(method, path)
    assert (got, content_type) == (status, "application/json")
    pairs = ordered(raw)
    assert [k for k, _ in pairs] == ["message", "code", "type", "link"]
    body = dict(pairs)
    assert (body["code"], body["type"], body["link"]) == (code, "invalid_request", None)
    assert path in body["message"]


def test_native_api_is_served_on_tcp(served: Served) -> None:
    status, _, raw = served.request("GET", "/v1/models")
    assert status == 200 and json.loads(raw) == {"object": "list", "data": []}
    status, _, raw = served.request("GET", "/v1/registry")
    assert status == 200 and MINILM in [m["name"] for m in json.loads(raw)["models"]]


def test_openapi_describes_every_route_and_docs_serve_it(served: Served) -> None:
    status, _, raw = served.request("GET", "/openapi.json")
    assert status == 200
    paths = json.loads(raw)["paths"]
    expected = {"/": {"get"}, "/models": {"get", "delete"}, "/device/cpu": {"get"},
                "/device/cuda": {"get"}, "/metrics": {"get"},
                "/v1/health": {"get"}, "/v1/models": {"get", "post", "patch", "delete"},
                "/v1/registry": {"get"}, "/v1/devices": {"get"}, "/v1/embeddings": {"post"},
                "/v1/listeners": {"post"}}
    for path, methods in expected.items():
        assert path in paths, f"{path} missing from /openapi.json"
        assert methods <= set(paths[path]), (path, set(paths[path]))
    delete_models = paths["/models"]["delete"]
    assert {p["name"] for p in delete_models["parameters"]} == {"model_name", "model_device"}
    # No page that would need a CDN: /docs answers the contract's JSON 404, offline too.
    status, content_type, raw = served.request("GET", "/docs")
    assert (status, content_type) == (404, "application/json")
    assert b"/openapi.json" in raw


def test_both_start_paths_answer_the_same_bytes(daemon: Daemon, served: Served) -> None:
    """The shared fixture's ``daemon start --http`` answers exactly as ``serve --http``."""
    for method, path in [("GET", "/"), ("DELETE", "/models"), ("GET", "/device/cuda"),
                         ("DELETE", "/models?model_name=ViT-L/14&model_device=cuda")]:
        conn = http.client.HTTPConnection("127.0.0.1", daemon.http_port, timeout=30)
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            theirs = (resp.status, resp.read())
        finally:
            conn.close()
        ours = served.request(method, path)
        assert theirs == (ours[0], ours[2])


def test_serve_http_while_a_daemon_runs_joins_it(clean_daemon: Daemon,
                                                tiny_clip: dict[str, Any]) -> None:
    """One daemon, one cache: ``serve --http`` makes the running daemon listen on TCP."""
    d = clean_daemon
    port, other = free_port(), free_port()
    try:
        pid = d.pid
        d.client.load_model("tiny-clip", "cpu", properties=tiny_clip)
        proc = d.cli("serve", "--http", str(port), timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert f"pid {pid}" in proc.stderr and f"http://127.0.0.1:{port}" in proc.stderr
        over_tcp = Client(f"http://127.0.0.1:{port}")
        assert over_tcp.health()["pid"] == pid == d.pid  # no second daemon
        # The model loaded over the socket is listed over TCP: one cache.
        assert over_tcp.get_loaded_models() == {"models": [
            {"model_name": "tiny-clip", "model_device": "cpu"}]}
        assert d.client.get_loaded_models() == over_tcp.get_loaded_models()
        # `daemon start --http` does the same in the background.
        proc = d.cli("daemon", "start", "--http", str(other), timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert Client(f"http://127.0.0.1:{other}").health()["pid"] == pid
        # A port the daemon already serves: said so, not an error.
        proc = d.cli("serve", "--http", str(port), timeout=60)
        assert proc.returncode == 0
        assert f"already serves http://127.0.0.1:{port}" in proc.stderr
        # A port another process holds: one clear line, and the daemon keeps running.
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            held = taken.getsockname()[1]
            proc = d.cli("serve", "--http", str(held), timeout=60)
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and str(held) in lines[0] and "Traceback" not in proc.stderr
        assert d.alive() and d.pid == pid
        over_tcp.close()
        assert over_tcp.get_cpu_info()["cpu_usage_percent"].endswith(" %")
        assert Path(d.socket_path).exists()
    finally:  # the shared daemon keeps only the listener it started with
        for opened in (port, other):
            if f"http://127.0.0.1:{opened}" in d.client.health()["listeners"]:
                d.client.close_listener(opened)
