"""Faults lose nothing: a daemon killed mid-load, bad checkpoints, racing starts, SIGTERM
under load, clients that vanish mid-request, and loaders that raise.

Every test runs a real daemon of its own (or the module's), real weights, real sockets.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from modelctl.client import Client
from modelctl.errors import ApiError, DaemonNotRunning, InvalidArgument
from modelctl.testing import (
    MINILM,
    TINY_CLIP_CONFIG,
    Daemon,
    base_env,
    daemon_rss,
    daemons_in,
    free_port,
    make_tiny_clip,
    modelctl_exe,
    wait_gone,
    wide_clip_config,
)

WIDE_ARCH = "faults-wide"
TINY_ARCH = "faults-tiny"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """A tiny and a wide (about 600 MB) random open_clip checkpoint, as modelProperties."""
    root = tmp_path_factory.mktemp("fault-checkpoints")
    return {"tiny": make_tiny_clip(root / "tiny", arch=TINY_ARCH),
            "wide": make_tiny_clip(root / "wide", arch=WIDE_ARCH,
                                   config=wide_clip_config(width=768, layers=8))}


@pytest.fixture(scope="module")
def faulty(checkpoints: dict[str, dict[str, Any]]) -> Iterator[Daemon]:
    """A daemon with a TCP listener and MiniLM loaded, shared by the tests that keep it up.

    Its cpu budget holds MiniLM and one wide model, not two: a failed load whose
    reservation leaked would make the wide model not fit.
    """
    budget = 2 * Path(checkpoints["wide"]["localpath"]).stat().st_size
    d = Daemon(http_port=free_port(), env={"MODELCTL_MAX_CPU_MEMORY": str(budget)})
    d.start()
    try:
        d.client.load_model(MINILM, "cpu")
        yield d
    finally:
        d.stop()








def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


# -- SIGKILL mid-load ---------------------------------------------------------------------

def test_sigkill_mid_load_then_load_recovers_with_a_fresh_daemon(
        runtime_dir: Path, checkpoints: dict[str, dict[str, Any]]) -> None:
    d = Daemon(runtime_dir)
    try:
        d.start()
        first = d.pid
        assert first is not None
        rss_before = daemon_rss(first)
        errors: list[BaseException] = []

        def load_wide() -> None:
            client = Client(socket_path=d.socket_path)
            try:
                client.load_model("wide", "cpu", properties=checkpoints["wide"])
            except BaseException as exc:  # the daemon dies under it
                errors.append(exc)
            finally:
                client.close()

        loader = threading.Thread(target=load_wide)
        loader.start()
        # Kill it once the weights are coming in: the entry is loading and RSS has grown.
        deadline = time.monotonic() + 60
        while daemon_rss(first) < rss_before + 150_000_000:
            assert time.monotonic() < deadline, "the wide load never started"
            assert loader.is_alive(), f"the load finished before it could be killed: {errors}"
            time.sleep(0.01)
        assert [m["state"] for m in d.client.list_models()] == ["loading"]
        os.kill(first, signal.SIGKILL)
        loader.join(30)
        assert len(errors) == 1 and isinstance(errors[0], DaemonNotRunning), errors
        wait_gone(first)
        assert d.socket_path.exists()  # left behind by the killed daemon

        # `modelctl load` cleans up, starts a fresh daemon and loads there.
        proc = d.cli("load", MINILM, "--device", "cpu", "--json", check=True, timeout=120)
        assert json.loads(proc.stdout)["state"] == "ready"
        assert "started modelctl daemon" in proc.stderr
        second = d.pid
        assert second not in (None, first)
        assert [m["name"] for m in d.client.list_models()] == [MINILM]
        # The load that was killed can be done again, whole.
        entry = d.client.load_model("wide", "cpu", properties=checkpoints["wide"])
        assert entry["state"] == "ready" and entry["bytes"] > 500_000_000
    finally:
        d.stop()


# -- bad checkpoints ----------------------------------------------------------------------

def _bad_checkpoint(root: Path, kind: str, good: bytes) -> Path:
    """A checkpoint of the tiny architecture whose file is broken in one way."""
    import io

    import torch

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {root / 'executed'}",))

    pickled = io.BytesIO()
    torch.save({"weights": Payload()}, pickled)
    data = {"truncated": good[:len(good) // 2], "empty": b"", "tail-cut": good[:-64],
            "random": os.urandom(200_000), "text": b"not a checkpoint\n" * 50,
            "code-in-pickle": pickled.getvalue()}[kind]
    where = root / kind
    where.mkdir(parents=True, exist_ok=True)
    (where / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    path = where / f"{TINY_ARCH}.pt"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind", ["truncated", "empty", "tail-cut", "random", "text",
                                  "code-in-pickle"])
def test_corrupt_checkpoint_is_a_clear_400_and_no_entry(
        faulty: Daemon, checkpoints: dict[str, dict[str, Any]], tmp_path: Path,
        kind: str) -> None:
    good = Path(checkpoints["tiny"]["localpath"]).read_bytes()
    path = _bad_checkpoint(tmp_path, kind, good)
    before = faulty.client.list_models()
    with pytest.raises(InvalidArgument) as info:
        faulty.client.load_model(f"bad-{kind}", "cpu",
                                 properties={**checkpoints["tiny"], "localpath": str(path)})
    message = info.value.message
    assert info.value.status == 400
    assert f"the checkpoint {path} is corrupt, truncated or not a plain weights file" in message
    assert "weights_only` set to `False`" not in message  # never advise unsafe loading
    assert not (tmp_path / "executed").exists()  # weights_only=True: no code ran
    assert faulty.client.list_models() == before
    assert faulty.alive()


def test_a_good_load_works_after_a_bad_one(faulty: Daemon, tmp_path: Path,
                                           checkpoints: dict[str, dict[str, Any]]) -> None:
    bad = _bad_checkpoint(tmp_path, "truncated",
                          Path(checkpoints["tiny"]["localpath"]).read_bytes())
    with pytest.raises(InvalidArgument):
        faulty.client.load_model("then-good", "cpu",
                                 properties={**checkpoints["tiny"], "localpath": str(bad)})
    assert 'modelctl_load_failures_total{device="cpu",model="then-good"} 1.0' in \
        faulty.client.metrics()
    entry = faulty.client.load_model("then-good", "cpu", properties=checkpoints["tiny"])
    try:
        assert entry["state"] == "ready" and entry["dimensions"] == 32
        assert len(faulty.client.embed("then-good", ["works"])[0]) == 32
    finally:
        faulty.client.eject("then-good")


# -- a loader that raises, and the budget -------------------------------------------------

def test_loader_that_raises_leaves_no_entry_and_the_budget_whole(
        faulty: Daemon, checkpoints: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    wide = Path(checkpoints["wide"]["localpath"])
    # The tiny architecture's config beside the wide architecture's weights: the file is
    # fine, open_clip raises on the state dict after the weights were read.
    mismatch = tmp_path / f"{TINY_ARCH}.pt"
    mismatch.symlink_to(wide)
    (tmp_path / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    c = faulty.client
    before = c.list_models()
    held = c.devices()["cpu"]["models_bytes"]
    assert held == sum(m["bytes"] for m in before)
    for _ in range(2):  # twice: nothing accumulates
        with pytest.raises(InvalidArgument) as info:
            c.load_model("mismatch", "cpu",
                         properties={**checkpoints["tiny"], "localpath": str(mismatch)})
        assert f"does not fit the architecture {TINY_ARCH}" in info.value.message
        assert c.list_models() == before
        assert c.devices()["cpu"]["models_bytes"] == held
    # Fits only if the failed loads hold nothing: the budget is two wide checkpoints.
    entry = c.load_model("wide", "cpu", properties=checkpoints["wide"])
    try:
        assert entry["state"] == "ready"
        assert c.devices()["cpu"]["models_bytes"] == held + entry["bytes"]
        assert [m["name"] for m in c.list_models()] == [MINILM, "wide"]  # nothing evicted
    finally:
        c.eject("wide")
    assert c.devices()["cpu"]["models_bytes"] == held


# -- racing starts ------------------------------------------------------------------------

def test_two_daemon_starts_at_once_leave_exactly_one_daemon(runtime_dir: Path) -> None:
    exe = modelctl_exe()
    cmd = [exe] if exe else [sys.executable, "-m", "modelctl"]
    env = base_env(runtime_dir)
    try:
        for _ in range(2):
            procs = [subprocess.Popen([*cmd, "daemon", "start", "--json"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(2)]
            outs = [p.communicate(timeout=60) for p in procs]
            assert [p.returncode for p in procs] == [0, 0], outs
            answers = [json.loads(out) for out, _ in outs]
            pids = {a["pid"] for a in answers}
            assert len(pids) == 1, answers  # both talk to the same daemon
            pid = pids.pop()
            assert sorted(a["started"] for a in answers) == [False, True]
            messages = sorted(err.strip() for _, err in outs)
            assert messages == [f"modelctl daemon already running (pid {pid})",
                                f"started modelctl daemon (pid {pid})"]
            assert daemons_in(runtime_dir) == [pid]
            stop = subprocess.run([*cmd, "daemon", "stop"], env=env, capture_output=True,
                                  text=True, timeout=60)
            assert stop.returncode == 0, stop.stderr
            wait_gone(pid)
    finally:
        for pid in daemons_in(runtime_dir):
            os.kill(pid, signal.SIGKILL)


# -- SIGTERM with embeddings in flight ----------------------------------------------------

def test_sigterm_lets_embeddings_in_flight_finish_and_exits_0(runtime_dir: Path) -> None:
    exe = modelctl_exe()
    cmd = [exe] if exe else [sys.executable, "-m", "modelctl"]
    serve = subprocess.Popen([*cmd, "serve"], env=base_env(runtime_dir),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    d = Daemon(runtime_dir)
    try:
        deadline = time.monotonic() + 60
        while not d.socket_path.exists() or d.pid != serve.pid:
            assert serve.poll() is None and time.monotonic() < deadline, serve.stdout
            time.sleep(0.05)
        d.wait_torch()
        d.client.load_model(MINILM, "cpu")
        batch = [f"sentence {i} of a batch that keeps the daemon busy for a moment " * 2
                 for i in range(48)]
        go = threading.Barrier(5)

        def embed(_: int) -> int:
            client = Client(socket_path=d.socket_path)
            go.wait()
            try:
                return len(client.embed(MINILM, batch, device="cpu"))
            finally:
                client.close()

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(embed, i) for i in range(4)]
            go.wait()
            deadline = time.monotonic() + 30
            while sum(m["in_flight"] for m in d.client.list_models()) < 4:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            d.client.close()
            signalled = time.monotonic()
            serve.send_signal(signal.SIGTERM)
            # New clients find no daemon at once, while the old requests still run.
            while d.socket_path.exists():
                assert time.monotonic() < signalled + 5
                time.sleep(0.01)
            with pytest.raises(DaemonNotRunning):
                Client(socket_path=d.socket_path).health()
            results = [f.result(timeout=120) for f in futures]
        assert results == [48] * 4
        assert serve.wait(timeout=60) == 0
        assert time.monotonic() - signalled < 60
        assert not (runtime_dir / "modelctl.json").exists()
        out = serve.stdout.read() if serve.stdout else ""
        assert "stopped" in out and "Traceback" not in out
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()


# -- clients that vanish ------------------------------------------------------------------

def _connect(d: Daemon, listener: str) -> socket.socket:
    if listener == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(d.socket_path))
        return sock
    assert d.http_port is not None
    return socket.create_connection(("127.0.0.1", d.http_port))


def _request_bytes(method: str, path: str, body: bytes, length: int | None = None) -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(body) if length is None else length}\r\n\r\n"
            ).encode() + body


@pytest.mark.parametrize("listener", ["unix", "tcp"])
def test_clients_that_disconnect_harm_nothing(faulty: Daemon, listener: str) -> None:
    pid = faulty.pid
    assert pid is not None
    faulty.client.embed(MINILM, ["warm the pools"])
    time.sleep(0.5)
    fds_before, threads_before = _fds(pid), _threads(pid)
    big = json.dumps({"model": MINILM, "input": [f"text number {i} " * 10 for i in range(64)],
                      "device": "cpu"}).encode()
    load = json.dumps({"name": MINILM, "device": "cpu"}).encode()

    def abandon(data: bytes, wait: float = 0.0, half_close: bool = False) -> None:
        sock = _connect(faulty, listener)
        if data:
            sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        time.sleep(wait)
        sock.close()

    abandon(_request_bytes("POST", "/v1/embeddings", big[:len(big) // 2], len(big)))  # mid-body
    abandon(_request_bytes("POST", "/v1/models", load[:5], len(load)), wait=0.2)
    abandon(b"POST /v1/embeddings HTTP/1.1\r\nHost: local")  # mid-headers
    abandon(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64))  # TLS hello
    abandon(b"GET /v1/health HTTP/1.1\r\n\r\n" * 50)  # pipelined, answers never read
    for _ in range(2):  # a whole request, then gone before the answer
        abandon(_request_bytes("POST", "/v1/embeddings", big), wait=0.05)
    abandon(_request_bytes("POST", "/v1/embeddings", big), half_close=True)
    idle = [_connect(faulty, listener) for _ in range(64)]  # connections that never speak
    for sock in idle:
        sock.close()

    # The abandoned embeddings run to the end and give their leases back.
    deadline = time.monotonic() + 120
    while any(m["in_flight"] for m in faulty.client.list_models()):
        assert time.monotonic() < deadline, faulty.client.list_models()
        time.sleep(0.1)
    assert faulty.alive()
    assert [(m["name"], m["state"]) for m in faulty.client.list_models()] == [(MINILM, "ready")]
    assert len(faulty.client.embed(MINILM, ["still serving"])[0]) == 384
    assert len(faulty.http_client().embed(MINILM, ["still serving"])[0]) == 384
    faulty.client.close()
    # Every socket of the vanished clients is closed; no thread was left behind for them.
    # A thread pool may have grown by a worker under the concurrent embeddings (its idle
    # workers stay), but a thread per vanished client would be dozens.
    threads_allowed = threads_before + 2
    deadline = time.monotonic() + 30
    while _fds(pid) > fds_before or _threads(pid) > threads_allowed:
        assert time.monotonic() < deadline, (
            f"fds {fds_before} -> {_fds(pid)}, threads {threads_before} -> {_threads(pid)}")
        time.sleep(0.1)
    assert "Traceback" not in faulty.log()


def test_errors_raised_by_loads_reach_every_waiter(faulty: Daemon,
                                                   checkpoints: dict[str, dict[str, Any]],
                                                   tmp_path: Path) -> None:
    path = _bad_checkpoint(tmp_path, "truncated",
                           Path(checkpoints["tiny"]["localpath"]).read_bytes())
    props = {**checkpoints["tiny"], "localpath": str(path)}

    def load(_: int) -> str:
        client = Client(socket_path=faulty.socket_path)
        try:
            client.load_model("bad-waiters", "cpu", properties=props)
        except ApiError as exc:
            return f"{exc.status} {exc.message}"
        finally:
            client.close()
        return "loaded?"

    with ThreadPoolExecutor(8) as pool:
        answers = set(pool.map(load, range(8)))
    assert len(answers) == 1 and answers.pop().startswith("400 the checkpoint")
    assert "bad-waiters" not in [m["name"] for m in faulty.client.list_models()]
