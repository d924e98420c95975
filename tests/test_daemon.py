"""The daemon end to end: CLI, client and raw HTTP against a real daemon and real models."""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from modelctl.client import Client, image_data_uri
from modelctl.errors import (
    ApiError,
    HardwareCompatibilityError,
    InvalidArgument,
    NotFound,
)
from modelctl.testing import MINILM, Daemon, cosine, png_bytes, wait_gone

SENTENCES = ["The cat sits on the mat.", "A quick brown fox jumps over the lazy dog.",
             "modelctl keeps one copy of each model in memory."]


def test_cli_load_ls_embed_eject_default_model(clean_daemon: Daemon,
                                               minilm_reference: Any) -> None:
    d = clean_daemon
    loaded = json.loads(d.cli("load", MINILM, "--device", "cpu", "--json", check=True).stdout)
    assert loaded["state"] == "ready" and loaded["dimensions"] == 384

    listed = json.loads(d.cli("ls", "--json", check=True).stdout)
    assert [(m["name"], m["device"]) for m in listed] == [(MINILM, "cpu")]
    assert listed[0]["bytes"] > 20_000_000  # measured parameters + buffers of MiniLM

    out = d.cli("embed", MINILM, *SENTENCES, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2]
    expected = minilm_reference.encode(SENTENCES)
    for row, want in zip(rows, expected, strict=True):
        assert len(row["embedding"]) == 384
        assert cosine(row["embedding"], want) > 0.9999

    ejected = d.cli("eject", MINILM, "--device", "cpu", check=True)
    assert "freed" in ejected.stdout + ejected.stderr
    assert json.loads(d.cli("ls", "--json", check=True).stdout) == []


def test_aliases_share_one_entry_and_devices_canonicalise(clean_daemon: Daemon) -> None:
    c = clean_daemon.client
    # Marqo's short sbert spelling and the hub id are one model (hf/... is Marqo's hf type).
    first = c.load_model("all-MiniLM-L6-v2", "CPU")
    again = c.load_model("sentence-transformers/all-MiniLM-L6-v2", "cpu")
    assert first["loaded_at"] == again["loaded_at"]
    assert [m["name"] for m in c.list_models()] == ["all-MiniLM-L6-v2"]  # as loaded
    assert c.get_loaded_models() == {"models": [{"model_name": "all-MiniLM-L6-v2",
                                                 "model_device": "cpu"}]}


def test_openai_shape_and_usage(clean_daemon: Daemon, minilm_reference: Any) -> None:
    reply = clean_daemon.client.embeddings(MINILM, SENTENCES[0], device="cpu")
    assert list(reply) == ["object", "data", "model", "usage"]
    assert reply["object"] == "list" and reply["model"] == MINILM
    assert reply["data"][0]["object"] == "embedding" and reply["data"][0]["index"] == 0
    want = len(minilm_reference.tokenizer(SENTENCES[0])["input_ids"])
    assert reply["usage"] == {"prompt_tokens": want, "total_tokens": want}
    b64 = clean_daemon.client.embeddings(MINILM, [SENTENCES[0]], encoding_format="base64")
    raw = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(raw, reply["data"][0]["embedding"], atol=1e-6)


def test_tiny_open_clip_custom_model(clean_daemon: Daemon, tiny_clip: dict[str, Any],
                                     tmp_path: Any) -> None:
    import open_clip
    import torch
    from PIL import Image

    c = clean_daemon.client
    entry = c.load_model("my-tiny-clip", "cpu", properties=tiny_clip)
    assert entry["family"] == "open_clip" and entry["dimensions"] == 32
    assert entry["modalities"] == ["text", "image"] and entry["bytes"] > 1_000_000

    image_path = tmp_path / "red.png"
    image_path.write_bytes(png_bytes())
    texts = ["a red square", "a photo of a dog"]
    vectors = c.embed("my-tiny-clip", [*texts, image_data_uri(image_path)])
    assert [len(v) for v in vectors] == [32, 32, 32]

    model, _, preprocess = open_clip.create_model_and_transforms(
        "tiny-clip", pretrained=tiny_clip["localpath"], weights_only=True)
    model.eval()
    tokenizer = open_clip.get_tokenizer("tiny-clip")
    with torch.inference_mode():
        want_text = model.encode_text(tokenizer(texts), normalize=True).numpy()
        pixels = preprocess(Image.open(image_path).convert("RGB")).unsqueeze(0)
        want_image = model.encode_image(pixels, normalize=True).numpy()[0]
    for got, want in zip(vectors[:2], want_text, strict=True):
        assert cosine(got, want) > 0.9999
    assert cosine(vectors[2], want_image) > 0.9999

    # The CLI's --image path gives the same vector.
    out = clean_daemon.cli("embed", "my-tiny-clip", "--image", str(image_path), check=True)
    assert cosine(json.loads(out.stdout.splitlines()[0])["embedding"], want_image) > 0.9999


def test_concurrent_loads_are_single_flight(clean_daemon: Daemon,
                                            tiny_clip: dict[str, Any]) -> None:
    def load(_: int) -> dict[str, Any]:
        client = Client(socket_path=clean_daemon.socket_path)
        try:
            return client.load_model("flight-clip", "cpu", properties=tiny_clip)
        finally:
            client.close()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(load, range(16)))
    assert len({a["loaded_at"] for a in answers}) == 1
    assert [m["name"] for m in clean_daemon.client.list_models()] == ["flight-clip"]
    metrics = clean_daemon.client.metrics()
    assert 'modelctl_loads_total{device="cpu",model="flight-clip"} 1.0' in metrics


def test_failed_load_leaves_no_entry_and_every_waiter_gets_the_error(
        clean_daemon: Daemon) -> None:
    def load(_: int) -> str:
        client = Client(socket_path=clean_daemon.socket_path)
        try:
            client.load_model("hf/e5-base-v2", "cpu")
        except ApiError as exc:
            return f"{exc.status} {exc.code}"
        finally:
            client.close()
        return "loaded?"

    started = time.monotonic()
    with ThreadPoolExecutor(6) as pool:
        answers = set(pool.map(load, range(6)))
    assert answers == {"400 invalid_argument"}
    assert time.monotonic() - started < 10  # fails fast, never hangs on the network
    assert clean_daemon.client.list_models() == []
    with pytest.raises(InvalidArgument) as info:
        clean_daemon.client.load_model("hf/e5-base-v2", "cpu")
    assert "Hugging Face cache" in info.value.message and "localpath" in info.value.message


def test_eject_waits_for_in_flight_embeddings(clean_daemon: Daemon) -> None:
    c = clean_daemon.client
    c.load_model(MINILM, "cpu")
    batch = [f"sentence number {i} " * 20 for i in range(64)]
    results: list[Any] = []
    barrier = threading.Barrier(9)

    def embed(_: int) -> int:
        client = Client(socket_path=clean_daemon.socket_path)
        barrier.wait()
        try:
            return len(client.embed(MINILM, batch, device="cpu"))
        finally:
            client.close()

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(embed, i) for i in range(8)]
        barrier.wait()
        deadline = time.monotonic() + 30
        while sum(m["in_flight"] for m in c.list_models()) < 8:
            assert time.monotonic() < deadline, "the 8 requests were never in flight at once"
            time.sleep(0.01)
        ejected = c.eject(MINILM, "cpu")
        results = [f.result() for f in futures]
    assert results == [64] * 8
    assert ejected["ejected"][0]["name"] == MINILM
    assert c.list_models() == []


@pytest.mark.parametrize("call, status, code", [
    (lambda c: c.load_model("no-such-model", "cpu"), 400, "invalid_argument"),
    (lambda c: c.load_model(MINILM, "tpu:0"), 400, "invalid_argument"),
    (lambda c: c.load_model(MINILM, "cuda"), 400, "hardware_compatability_error"),
    (lambda c: c.request("GET", "/no/such/route"), 404, "not_found"),
    (lambda c: c.request("PUT", "/models"), 405, "method_not_allowed"),
    (lambda c: c.embeddings("no-such-model", "hi"), 400, "invalid_argument"),
])
def test_errors_keep_the_daemon_and_cache_intact(clean_daemon: Daemon, call: Any, status: int,
                                                  code: str) -> None:
    c = clean_daemon.client
    c.load_model(MINILM, "cpu")
    before = [(m["name"], m["device"], m["loaded_at"]) for m in c.list_models()]
    raw_status, headers, body = c.request_raw("GET", "/no/such/route")
    assert raw_status == 404 and headers["content-type"] == "application/json"
    with pytest.raises(ApiError) as info:
        call(c)
    assert (info.value.status, info.value.code) == (status, code)
    assert info.value.message
    after = [(m["name"], m["device"], m["loaded_at"]) for m in c.list_models()]
    assert after == before and clean_daemon.alive()


@pytest.mark.parametrize("args, fragment", [
    (["load", "no-such-model", "--device", "cpu"], "unknown model"),
    (["load", MINILM, "--device", "gpu"], "invalid device"),
    (["load", MINILM, "--device", "cuda"], "CUDA is not available"),
    (["eject", "no-such-model"], "not cached"),
])
def test_cli_errors_are_one_line_and_non_zero(clean_daemon: Daemon, args: list[str],
                                              fragment: str) -> None:
    proc = clean_daemon.cli(*args)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in proc.stderr
    assert clean_daemon.alive()


def test_client_errors_are_typed(clean_daemon: Daemon) -> None:
    with pytest.raises(InvalidArgument):
        clean_daemon.client.load_model("nope", "cpu")
    with pytest.raises(HardwareCompatibilityError):
        clean_daemon.client.get_cuda_info()
    with pytest.raises(NotFound):
        clean_daemon.client.request("GET", "/v2/anything")


def test_runtime_dir_and_socket_permissions(daemon: Daemon) -> None:
    assert stat.S_IMODE(daemon.runtime_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(daemon.socket_path.stat().st_mode) == 0o600
    assert stat.S_ISSOCK(daemon.socket_path.stat().st_mode)
    status = json.loads((daemon.runtime_dir / "modelctl.json").read_text())
    assert set(status) >= {"pid", "socket", "version", "started_at"}


def test_daemon_lifecycle_sigterm_sigkill_and_stale_files(runtime_dir: Any) -> None:
    d = Daemon(runtime_dir)
    try:
        assert d.cli("daemon", "status").returncode == 3  # none runs yet
        ls = d.cli("ls")
        assert ls.returncode == 0 and "no modelctl daemon is running" in ls.stderr
        assert not d.socket_path.exists()  # ls started nothing

        d.start(wait_torch=False)
        assert d.cli("daemon", "status").returncode == 0
        first = d.pid
        assert first is not None
        os.kill(first, signal.SIGTERM)
        wait_gone(first)
        assert not d.socket_path.exists()
        assert not (runtime_dir / "modelctl.json").exists()

        # A daemon killed outright leaves its socket and status file behind ...
        d.start(wait_torch=False)
        second = d.pid
        assert second is not None and second != first
        os.kill(second, signal.SIGKILL)
        wait_gone(second)
        assert d.socket_path.exists() and (runtime_dir / "modelctl.json").exists()
        # ... `ls` says none runs (and starts nothing), the next load starts a fresh one.
        assert d.cli("ls", "--json", check=True).stdout.strip() == "[]"
        loaded = d.cli("load", MINILM, "--device", "cpu", "--json", check=True)
        assert json.loads(loaded.stdout)["state"] == "ready"
        third = d.pid
        assert third not in (None, first, second)
        assert d.cli("daemon", "stop").returncode == 0
        wait_gone(third)  # type: ignore[arg-type]
        assert d.cli("daemon", "status").returncode == 3
    finally:
        d.stop()

