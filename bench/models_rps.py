"""Requests per second of Marqo's ``GET /models``: modelctl against a minimal FastAPI app.

The baseline is the least a FastAPI server can do for this route: one ``async`` handler
returning the same constant bytes the daemon answers, under uvicorn with the same HTTP
stack (httptools, uvloop). Both are measured over one keep-alive ``http.client``
connection, over TCP and over a Unix socket, in interleaved rounds (so drift and other
load on the machine hit both alike); the medians and their ratio are printed.

    python bench/models_rps.py [--seconds 2] [--rounds 5]

Target: ours / baseline >= 0.8 on both transports.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from modelctl.testing import Daemon, free_port

TARGET = 0.8

BASELINE_APP = '''
import os

from fastapi import FastAPI
from fastapi.responses import Response

BODY = bytes.fromhex(os.environ["BENCH_BODY_HEX"])
app = FastAPI()


@app.get("/models")
async def models() -> Response:
    return Response(BODY, media_type="application/json")
'''

Connect = Callable[[], http.client.HTTPConnection]


class UnixHTTPConnection(http.client.HTTPConnection):
    """The load generator's client over AF_UNIX: the same http.client as over TCP."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def tcp(port: int) -> Connect:
    return lambda: http.client.HTTPConnection("127.0.0.1", port, timeout=10)


def unix(path: str) -> Connect:
    return lambda: UnixHTTPConnection(path, 10)


def get_models(connect: Connect) -> bytes:
    conn = connect()
    try:
        conn.request("GET", "/models")
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (resp.status, body)
        return body
    finally:
        conn.close()


def rps(connect: Connect, seconds: float, expected: bytes) -> float:
    """Requests per second over one kept-alive connection for ``seconds``."""
    conn = connect()
    try:
        count = 0
        started = time.perf_counter()
        deadline = started + seconds
        while True:
            conn.request("GET", "/models")
            resp = conn.getresponse()
            body = resp.read()
            count += 1
            if body != expected:  # a server that answers something else is not measured
                raise AssertionError(f"unexpected body {body[:200]!r}")
            now = time.perf_counter()
            if now >= deadline:
                return count / (now - started)
    finally:
        conn.close()


def start_baseline(workdir: Path, body: bytes, port: int,
                   uds: str) -> list[subprocess.Popen[bytes]]:
    (workdir / "bench_baseline_app.py").write_text(BASELINE_APP)
    env = {**os.environ, "BENCH_BODY_HEX": body.hex(), "PYTHONPATH": str(workdir)}
    common = [sys.executable, "-m", "uvicorn", "bench_baseline_app:app", "--http",
              "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning",
              "--no-server-header", "--lifespan", "off"]
    procs = [subprocess.Popen([*common, "--host", "127.0.0.1", "--port", str(port)], env=env),
             subprocess.Popen([*common, "--uds", uds], env=env)]
    deadline = time.monotonic() + 30
    for connect in (tcp(port), unix(uds)):
        while True:
            try:
                get_models(connect)
                break
            except (OSError, http.client.HTTPException):
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise RuntimeError("the baseline server did not start") from None
                time.sleep(0.1)
    return procs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved runs per target")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="mc-bench-", dir="/tmp"))
    daemon = Daemon(http_port=free_port())
    procs: list[subprocess.Popen[bytes]] = []
    try:
        daemon.start(wait_torch=False)
        ours = {"tcp": tcp(daemon.http_port or 0), "unix": unix(str(daemon.socket_path))}
        body = get_models(ours["tcp"])
        assert get_models(ours["unix"]) == body
        uds, port = str(workdir / "baseline.sock"), free_port()
        procs = start_baseline(workdir, body, port, uds)
        base = {"tcp": tcp(port), "unix": unix(uds)}
        # torch warms up in the daemon's background for a few seconds: let it finish,
        # so the first rounds do not measure a busy core.
        daemon.wait_torch()
        targets = {(side, kind): conns[kind] for side, conns in (("ours", ours),
                                                                   ("base", base))
                   for kind in ("tcp", "unix")}
        for connect in targets.values():  # warm-up: imports, caches, branch predictors
            rps(connect, min(0.5, args.seconds), body)
        results: dict[tuple[str, str], list[float]] = {key: [] for key in targets}
        for _ in range(args.rounds):
            for key, connect in targets.items():
                results[key].append(rps(connect, args.seconds, body))
        print(f"GET /models ({len(body)} bytes), one keep-alive connection, "
              f"{args.rounds} x {args.seconds:g}s each, medians:")
        ok = True
        for kind in ("tcp", "unix"):
            mine = statistics.median(results[("ours", kind)])
            theirs = statistics.median(results[("base", kind)])
            ratio = mine / theirs
            ok &= ratio >= TARGET
            print(f"  {kind:4}  modelctl {mine:8.0f} req/s   minimal FastAPI {theirs:8.0f} req/s"
                  f"   ratio {ratio:.2f} (target >= {TARGET})")
        return 0 if ok else 1
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
        daemon.stop()
        shutil.rmtree(daemon.runtime_dir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
