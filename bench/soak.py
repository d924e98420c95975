"""Soak: 16 threads mixing load, embed, eject, ls and device queries against one daemon.

Half the threads talk over the Unix socket, half over TCP, to one real daemon with the
bundled MiniLM and a tiny open_clip model. After a warm-up, the daemon's RSS, threads and
open files are read from /proc with the cache in the same state (both models loaded, no
request in flight, no client connected); the soak runs; they are read again the same way.

Outcomes are counted per operation. Two error answers are outcomes the API defines for
concurrent ejects, and are counted apart: 404 ``model_not_in_cache`` (an eject that lost
the race to another eject) and 409 ``model_cache_management_error`` (a request that got a
model in the instant it began ejecting). Everything else that is not a success (a 5xx,
another 4xx, a dropped connection) is unexpected.

    python bench/soak.py --seconds 60 [--threads 16] [--warmup 15]

Passes (exit 0) with zero unexpected errors, RSS growth under 10% from the end of the
warm-up, and no more threads or file descriptors than after the warm-up (which ends with
a burst of twice as many threads, so that bounded pools are full before the first count).
"""

from __future__ import annotations

import argparse
import base64
import collections
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelctl.client import Client
from modelctl.errors import ApiError
from modelctl.testing import (
    MINILM,
    Daemon,
    daemon_rss,
    free_port,
    make_tiny_clip,
    png_bytes,
)

CLIP = "soak-clip"
RSS_GROWTH_LIMIT = 0.10
EXPECTED = {(404, "model_not_in_cache"), (409, "model_cache_management_error")}
IMAGE = "data:image/png;base64," + base64.b64encode(png_bytes(size=64)).decode()
WORDS = ("model cache daemon socket tensor memory budget eject load embed vector "
         "batch device thread lease").split()

Op = Callable[[Client, random.Random], Any]


def _texts(rng: random.Random, most: int) -> list[str]:
    return [" ".join(rng.choices(WORDS, k=rng.randint(3, 20)))
            for _ in range(rng.randint(1, most))]


def _ops(clip: dict[str, Any], listener: str) -> list[tuple[str, int, Op]]:
    """(name, weight, call) for one listener. A custom model's properties name a file on
    the daemon's machine, so only the socket threads load and eject the tiny CLIP."""
    ops: list[tuple[str, int, Op]] = [
        ("embed-minilm", 30, lambda c, r: c.embed(MINILM, _texts(r, 16), device="cpu")),
        ("load-minilm", 6, lambda c, r: c.load_model(MINILM, "cpu")),
        ("eject-minilm", 4, lambda c, r: c.eject(MINILM, "cpu")),
        ("marqo-eject-minilm", 1, lambda c, r: c.eject_model(MINILM, "cpu")),
        ("ls", 10, lambda c, r: c.list_models()),
        ("marqo-ls", 6, lambda c, r: c.get_loaded_models()),
        ("devices", 5, lambda c, r: c.devices()),
        ("marqo-cpu", 4, lambda c, r: c.get_cpu_info()),
        ("health", 3, lambda c, r: c.health()),
        ("metrics", 2, lambda c, r: c.metrics()),
    ]
    if listener == "unix":
        ops += [
            ("load-clip", 4, lambda c, r: c.load_model(CLIP, "cpu", properties=clip)),
            ("embed-clip", 12, lambda c, r: _embed_clip(c, r, clip)),
            ("eject-clip", 2, lambda c, r: c.eject(CLIP, "cpu")),
        ]
    return ops


def _embed_clip(c: Client, r: random.Random, clip: dict[str, Any]) -> Any:
    # Only its loader knows a custom model's properties: load it (a no-op when it is
    # loaded), then embed texts and images together.
    c.load_model(CLIP, "cpu", properties=clip)
    return c.embed(CLIP, [*_texts(r, 4), *[IMAGE] * r.randint(1, 4)], device="cpu")


def _expected(name: str, exc: ApiError) -> str | None:
    """The label of an outcome the API defines for concurrent ejects, or ``None``."""
    if (exc.status, exc.code) in EXPECTED:
        return str(exc.status)
    if name == "embed-clip" and exc.status == 400 and f"unknown model '{CLIP}'" in exc.message:
        # Ejected by another thread between the load and the embed: the daemon cannot
        # reload a custom model without its properties, so it answers as for any
        # unknown name.
        return "400 ejected custom model"
    return None


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok: collections.Counter[str] = collections.Counter()
        self.expected: collections.Counter[str] = collections.Counter()
        self.unexpected: collections.Counter[str] = collections.Counter()
        self.samples: list[str] = []

    def add(self, kind: str, key: str, sample: str = "") -> None:
        with self.lock:
            getattr(self, kind)[key] += 1
            if sample and len(self.samples) < 10:
                self.samples.append(sample)


def _worker(client: Client, listener: str, clip: dict[str, Any], seed: int, deadline: float,
            tally: Tally) -> None:
    rng = random.Random(seed)
    ops = _ops(clip, listener)
    names = [name for name, _, _ in ops]
    weights = [weight for _, weight, _ in ops]
    calls = {name: call for name, _, call in ops}
    try:
        while time.monotonic() < deadline:
            name = rng.choices(names, weights)[0]
            key = f"{listener}:{name}"
            try:
                calls[name](client, rng)
            except ApiError as exc:
                label = _expected(name, exc)
                if label is not None:
                    tally.add("expected", f"{key}|{label}")
                else:
                    tally.add("unexpected", f"{key} {exc.status}",
                              f"{key}: {exc.status} {exc.code} {exc.message[:200]}")
            except Exception as exc:  # a dropped connection, a timeout: all unexpected
                tally.add("unexpected", f"{key} {type(exc).__name__}",
                          f"{key}: {type(exc).__name__}: {exc}")
            else:
                tally.add("ok", key)
    finally:
        client.close()  # its connection is this thread's


def run_phase(d: Daemon, clip: dict[str, Any], threads: int, seconds: float) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + seconds
    workers = []
    for i in range(threads):
        listener = "unix" if i % 2 == 0 else "tcp"
        client = d.client if listener == "unix" else d.http_client()
        workers.append(threading.Thread(target=_worker, args=(
            client, listener, clip, i, deadline, tally), name=f"soak-{i}"))
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return tally


def saturate_pools(d: Daemon, clip: dict[str, Any], threads: int) -> None:
    """Grow the daemon's bounded thread pools (the event loop's default executor, the
    loaders', torch's) to their size now, so that the reading after the warm-up counts
    them and a growth after the soak is a leak, not a pool filling up."""
    def burst(i: int) -> None:
        c = d.client if i % 2 else d.http_client()
        try:
            for _ in range(3):
                c.registry()
                c.devices()
                if c is d.client:
                    _embed_clip(c, random.Random(i), clip)
                c.embed(MINILM, _texts(random.Random(i), 16), device="cpu")
        finally:
            c.close()

    workers = [threading.Thread(target=burst, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def settle(d: Daemon, clip: dict[str, Any]) -> dict[str, int]:
    """The same cache state at every reading: both models loaded, nothing in flight,
    no client connected; then RSS, threads and fds."""
    c = Client(socket_path=d.socket_path)
    try:
        c.load_model(MINILM, "cpu")
        c.load_model(CLIP, "cpu", properties=clip)
        deadline = time.monotonic() + 60
        while any(m["in_flight"] or m["state"] != "ready" for m in c.list_models()):
            if time.monotonic() > deadline:
                raise SystemExit(f"requests still in flight: {c.list_models()}")
            time.sleep(0.05)
    finally:
        c.close()
    d.client.close()
    time.sleep(2.0)  # let the server close its side of every connection
    pid = d.pid
    assert pid is not None
    return {"rss": daemon_rss(pid), "threads": len(os.listdir(f"/proc/{pid}/task")),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def report(tally: Tally, seconds: float) -> None:
    total_ok = sum(tally.ok.values())
    total_expected = sum(tally.expected.values())
    total_unexpected = sum(tally.unexpected.values())
    print(f"requests: {total_ok + total_expected + total_unexpected} in {seconds:.0f}s "
          f"({(total_ok + total_expected + total_unexpected) / seconds:.0f}/s): "
          f"{total_ok} ok, {total_expected} expected race outcomes (404/409), "
          f"{total_unexpected} unexpected")
    for key in sorted(tally.ok):
        extra = [f"{k.split('|')[1]}: {v}" for k, v in tally.expected.items()
                 if k.split("|")[0] == key]
        print(f"  {key:28s} {tally.ok[key]:6d} ok" + (f"  ({', '.join(extra)})" if extra
                                                      else ""))
    for key, count in sorted(tally.unexpected.items()):
        print(f"  UNEXPECTED {key}: {count}")
    for sample in tally.samples:
        print(f"    e.g. {sample}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=15.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        clip = make_tiny_clip(Path(tmp) / "clip", arch="soak-tiny")
        d = Daemon(http_port=free_port())
        d.start()
        try:
            warm = run_phase(d, clip, args.threads, args.warmup)
            saturate_pools(d, clip, 2 * args.threads)
            before = settle(d, clip)
            print(f"warm-up: {args.warmup:.0f}s, {sum(warm.ok.values())} ok, "
                  f"{sum(warm.unexpected.values())} unexpected")
            started = time.monotonic()
            tally = run_phase(d, clip, args.threads, args.seconds)
            elapsed = time.monotonic() - started
            after = settle(d, clip)
            alive = d.alive()
            tracebacks = d.log().count("Traceback")
        finally:
            d.stop()

    report(tally, elapsed)
    growth = after["rss"] / before["rss"] - 1
    print(f"daemon RSS after warm-up {before['rss'] / 2**20:.0f} MiB, after the soak "
          f"{after['rss'] / 2**20:.0f} MiB: {growth:+.1%} (limit +{RSS_GROWTH_LIMIT:.0%})")
    print(f"daemon threads {before['threads']} -> {after['threads']}, "
          f"open fds {before['fds']} -> {after['fds']}")
    print(f"daemon alive at the end: {alive}; tracebacks in its log: {tracebacks}")
    failures = []
    if sum(tally.unexpected.values()) or sum(warm.unexpected.values()):
        failures.append("unexpected errors")
    if growth >= RSS_GROWTH_LIMIT:
        failures.append("RSS grew too much")
    if after["threads"] > before["threads"]:
        failures.append("threads leaked")
    if after["fds"] > before["fds"]:
        failures.append("file descriptors leaked")
    if not alive or tracebacks:
        failures.append("the daemon died or logged a traceback")
    print("PASS" if not failures else f"FAIL: {', '.join(failures)}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
