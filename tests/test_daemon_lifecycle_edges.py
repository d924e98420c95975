"""The edges of a daemon's life, through the real CLI: a stop that outlasts the daemon's
grace period for requests in flight, and a start that fails before the daemon could
write a word to its log."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from modelctl.client import Client
from modelctl.runtime import STOP_MARGIN_S
from modelctl.testing import (
    MINILM,
    Daemon,
    base_env,
    counter,
    daemons_in,
    modelctl_exe,
    wait_gone,
)


def test_stop_waits_for_a_daemon_that_exits_after_its_grace_period() -> None:
    """Requests in flight keep the daemon busy past its grace period (30 s unless
    configured; 3 s here): `daemon stop` waits for it, exits 0 and says it stopped, and
    leaves no process, socket or status file behind."""
    grace = 3.0
    d = Daemon(env={"MODELCTL_THREADS": "1", "MODELCTL_SHUTDOWN_GRACE": f"{grace:g}s"})
    errors: list[BaseException] = []
    workers: list[threading.Thread] = []
    try:
        d.start(wait_torch=False)
        pid = d.pid
        assert pid is not None and daemons_in(d.runtime_dir) == [pid]
        # The status file tells `daemon stop` how long this daemon's grace is.
        status = json.loads((d.runtime_dir / "modelctl.json").read_text())
        assert status["shutdown_grace_s"] == grace
        d.client.load_model(MINILM, "cpu")
        calls = counter(d, "modelctl_model_calls", MINILM)

        def embed(worker: int) -> None:
            # Read to MiniLM's 256 tokens each: minutes of work on one thread.
            texts = [f"{worker} {i} " + "a long text about many things " * 60
                     for i in range(2048)]
            client = Client(socket_path=d.socket_path, timeout=300)
            try:
                client.embed(MINILM, texts, device="cpu")
            except BaseException as exc:  # noqa: BLE001 (the stop ends it: kept to check)
                errors.append(exc)
            finally:
                client.close()

        workers = [threading.Thread(target=embed, args=(w,), daemon=True) for w in range(3)]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 60
        while counter(d, "modelctl_model_calls", MINILM) == calls:  # a batch has run
            assert time.monotonic() < deadline, "the embeddings never started"
            time.sleep(0.1)

        started = time.monotonic()
        stop = d.cli("daemon", "stop", timeout=grace + STOP_MARGIN_S + 30)
        took = time.monotonic() - started

        assert stop.returncode == 0, stop.stderr
        assert f"stopped modelctl daemon (pid {pid})" in stop.stderr
        assert took > grace, f"the daemon stopped in {took:.1f}s, within its grace"
        # The lock is let go just before the process ends: give it a moment.
        wait_gone(pid, 10)
        assert daemons_in(d.runtime_dir) == []
        assert not (d.runtime_dir / "modelctl.sock").exists()
        assert not (d.runtime_dir / "modelctl.json").exists()
        for worker in workers:
            worker.join(30)
        assert len(errors) == len(workers), "a request finished within the grace period"
        assert all("stopped before this request finished" in str(e) for e in errors), errors
    finally:
        d.stop()
        for worker in workers:
            worker.join(30)
        shutil.rmtree(d.runtime_dir, ignore_errors=True)


def test_a_start_that_fails_before_logging_says_the_log_is_empty() -> None:
    """A daemon that cannot write a byte (a full disk, here a file-size limit of 0) dies
    before its log has anything in it: `daemon start` fails, says the log is empty and
    points at `modelctl serve`, and no daemon is left running."""
    runtime_dir = Path(tempfile.mkdtemp(prefix="mc-", dir="/tmp"))
    env = base_env(runtime_dir)
    log = runtime_dir / "modelctl.log"

    def no_file_may_grow() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    exe = modelctl_exe()
    assert exe, "the modelctl console script is not installed"
    d = Daemon(runtime_dir)
    try:
        start = subprocess.run([exe, "daemon", "start"], env=env, capture_output=True,
                               text=True, timeout=120, preexec_fn=no_file_may_grow)
        assert start.returncode != 0, start.stderr
        assert "the daemon exited with status" in start.stderr
        assert f"it wrote nothing to {log}" in start.stderr
        assert "`modelctl serve` runs it in the foreground" in start.stderr
        assert log.exists() and log.stat().st_size == 0

        status = subprocess.run([exe, "daemon", "status"], env=env, capture_output=True,
                                text=True, timeout=60)
        assert status.returncode == 3, status.stdout + status.stderr
        assert not (runtime_dir / "modelctl.sock").exists()
        # Nor half a status file: the failed atomic write cleaned up after itself.
        assert not (runtime_dir / "modelctl.json").exists()
        assert not (runtime_dir / "modelctl.json.tmp").exists()
        assert d.pid is None
        assert daemons_in(runtime_dir) == []
    finally:
        d.stop()
        for pid in daemons_in(runtime_dir):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(runtime_dir, ignore_errors=True)
