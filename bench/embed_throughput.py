"""Embedding throughput of the daemon against the in-process ceiling, on the same machine.

Same model (the default MiniLM on cpu), same sentences, one run:

- ceiling: in-process ``SentenceTransformer.encode(batch_size=32)``, sentences/s;
- 32 concurrent clients, each sending one sentence per request: target >= 0.75x;
- one client sending 64-sentence requests: target >= 0.9x;
- one client, one sentence per request: p50 latency <= 1.3x in-process ``encode`` of one.

torch never runs in two processes at once: the in-process encode runs while the daemon
is idle and the daemon runs while this process only drives sockets. Each round goes
ceiling, 32 clients, ceiling, 64-sentence client, ceiling, then the latency pair; each
throughput ratio is against the mean of the two ceilings beside it (so drift and other
load on the machine hit both sides alike), and the median round is the result. Every
vector the daemon returns is checked against the in-process ones (cosine > 0.9999).
The load generator is one selector loop over raw keep-alive sockets with the requests
pre-built, so it costs little CPU; its own CPU share is printed beside each number.

    python bench/embed_throughput.py [--rounds 3] [--sentences 512]
                                     [--format float|base64] [--transport tcp|unix]

On this 2-core machine, quiet, the numbers were 0.82x, 0.93x and 1.13x (float, TCP)
and 0.83x, 0.95x and 1.11x (base64, Unix socket). Other work on the machine moves
them a lot: torch's two threads stall whenever one of them is descheduled.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import resource
import selectors
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The daemon runs with this too (modelctl.testing.base_env): the same tokenizer on both sides.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from modelctl.testing import MINILM, Daemon, free_port, minilm_path  # noqa: E402

TARGETS = {"c32": 0.75, "b64": 0.9, "latency": 1.3}
_WORDS = ("the a one cat dog model cache daemon memory vector sentence embedding quick brown "
          "fox jumps over lazy server client batch token length request answer fast slow "
          "river mountain city night morning coffee library window garden music").split()


def make_sentences(count: int, seed: int = 0) -> list[str]:
    """Deterministic English-like sentences of 5 to 40 words (mixed lengths, like real text)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 40))).capitalize() + "."
            for _ in range(count)]


# -- the load generator ---------------------------------------------------------------
def request_bytes(model: str, texts: list[str], encoding: str) -> bytes:
    body = json.dumps({"model": model, "input": texts, "encoding_format": encoding}).encode()
    head = ("POST /v1/embeddings HTTP/1.1\r\nHost: localhost\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    buf: bytearray = field(default_factory=bytearray)
    index: int = -1
    started: float = 0.0


def _connect(address: str | tuple[str, int]) -> socket.socket:
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.connect(address)
    sock.setblocking(False)
    return sock


def _response(buf: bytearray) -> tuple[int, bytes] | None:
    """(status, body) once ``buf`` holds a whole response (the daemon sends Content-Length)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).lower()
    start = head.find(b"content-length:")
    length = int(head[start + 15:head.find(b"\r\n", start)]) if start >= 0 else 0
    if len(buf) < end + 4 + length:
        return None
    status = int(head[9:12])
    body = bytes(buf[end + 4:end + 4 + length])
    del buf[:end + 4 + length]
    return status, body


@dataclass
class LoadResult:
    wall: float
    cpu: float  # this process's CPU seconds while it ran
    latencies: list[float]
    bodies: list[bytes]


def drive(address: str | tuple[str, int], requests: list[bytes], clients: int) -> LoadResult:
    """Send ``requests`` over ``clients`` keep-alive connections, each one at a time."""
    selector = selectors.DefaultSelector()
    conns = [_Conn(_connect(address)) for _ in range(min(clients, len(requests)))]
    bodies: list[bytes] = [b""] * len(requests)
    latencies = [0.0] * len(requests)
    next_index = 0
    done = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()

    def send_next(conn: _Conn) -> None:
        nonlocal next_index
        if next_index >= len(requests):
            selector.unregister(conn.sock)
            return
        conn.index, next_index = next_index, next_index + 1
        conn.started = time.perf_counter()
        conn.sock.sendall(requests[conn.index])  # small: fits the socket buffer at once

    for conn in conns:
        selector.register(conn.sock, selectors.EVENT_READ, conn)
        send_next(conn)
    while done < len(requests):
        for key, _ in selector.select():
            conn = key.data
            chunk = conn.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("the daemon closed a connection")
            conn.buf += chunk
            reply = _response(conn.buf)
            if reply is None:
                continue
            status, body = reply
            if status != 200:
                raise AssertionError(f"HTTP {status}: {body[:300]!r}")
            latencies[conn.index] = time.perf_counter() - conn.started
            bodies[conn.index] = body
            done += 1
            send_next(conn)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    for conn in conns:
        conn.sock.close()
    selector.close()
    return LoadResult(wall, cpu, latencies, bodies)


def vectors_of(bodies: list[bytes]) -> np.ndarray:
    rows: list[np.ndarray] = []
    for body in bodies:
        for item in json.loads(body)["data"]:
            value = item["embedding"]
            rows.append(np.frombuffer(base64.b64decode(value), "<f4") if isinstance(value, str)
                        else np.asarray(value, np.float32))
    return np.stack(rows)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of another process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the scenarios --------------------------------------------------------------------
@dataclass
class Round:
    ceilings: list[float] = field(default_factory=list)
    rates: dict[str, float] = field(default_factory=dict)  # sentences/s per scenario
    ratios: dict[str, float] = field(default_factory=dict)  # against the ceilings beside it
    notes: dict[str, str] = field(default_factory=dict)


def ceiling(model: Any, sentences: list[str], daemon_pid: int, r: Round) -> float:
    d0, started = process_cpu(daemon_pid), time.perf_counter()
    model.encode(sentences, batch_size=32)
    wall = time.perf_counter() - started
    r.notes["ceiling"] = f"the daemon used {(process_cpu(daemon_pid) - d0) / wall:.0%} " \
        "of a core meanwhile"
    r.ceilings.append(len(sentences) / wall)
    return r.ceilings[-1]


def run_round(model: Any, daemon_pid: int, address: str | tuple[str, int],
              sentences: list[str], scenarios: dict[str, tuple[list[bytes], int]],
              one_texts: list[str], one_requests: list[bytes], check: np.ndarray) -> Round:
    """Ceiling, scenario, ceiling, scenario, ..., ceiling; then the latency pair."""
    r = Round()
    before = ceiling(model, sentences, daemon_pid, r)
    for name, (requests, clients) in scenarios.items():
        d0 = process_cpu(daemon_pid)
        result = drive(address, requests, clients)
        daemon_cpu = process_cpu(daemon_pid) - d0
        got = vectors_of(result.bodies)
        cos = float(np.min(np.sum(got * check, axis=1)
                           / np.linalg.norm(got, axis=1) / np.linalg.norm(check, axis=1)))
        if cos < 0.9999:
            raise AssertionError(f"{name}: a vector differs from in-process encode (cos {cos})")
        r.rates[name] = len(sentences) / result.wall
        r.notes[name] = (f"load generator {result.cpu / result.wall:.0%} of a core, "
                         f"daemon {daemon_cpu / result.wall:.0%}")
        after = ceiling(model, sentences, daemon_pid, r)
        r.ratios[name] = r.rates[name] / ((before + after) / 2)
        before = after

    lat = []
    for text in one_texts:
        t = time.perf_counter()
        model.encode([text])
        lat.append(time.perf_counter() - t)
    inproc = statistics.median(lat)
    result = drive(address, one_requests, 1)
    daemon = statistics.median(result.latencies)
    r.ratios["latency"] = daemon / inproc
    r.notes["latency"] = (f"p50 {daemon * 1e3:.2f} ms against {inproc * 1e3:.2f} ms in-process;"
                          f" load generator {result.cpu / result.wall:.0%} of a core")
    return r


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=512)
    parser.add_argument("--singles", type=int, default=100,
                        help="one-sentence requests timed for the latency comparison")
    parser.add_argument("--format", choices=("float", "base64"), default="float",
                        help="encoding_format the clients ask for (float: the API default)")
    parser.add_argument("--transport", choices=("tcp", "unix"), default="tcp")
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    sentences = make_sentences(args.sentences)
    one_texts = make_sentences(args.singles, seed=1)
    model = SentenceTransformer(minilm_path(), device="cpu")
    check = model.encode(sentences, batch_size=32)
    scenarios = {
        "c32": ([request_bytes(MINILM, [s], args.format) for s in sentences], 32),
        "b64": ([request_bytes(MINILM, sentences[i:i + 64], args.format)
                 for i in range(0, len(sentences), 64)], 1),
    }
    one_requests = [request_bytes(MINILM, [s], args.format) for s in one_texts]

    print(f"modelctl embedding throughput: {MINILM} on cpu, {len(sentences)} sentences "
          f"(5-40 words), encoding_format={args.format}, over {args.transport}")
    print(f"cpu cores: {os.cpu_count()}; torch threads here: {torch.get_num_threads()} "
          "(the daemon keeps torch's default, the same)")
    with Daemon(http_port=free_port()) as daemon:
        daemon.client.load_model(MINILM, "cpu")
        pid = daemon.pid
        assert pid is not None
        address: str | tuple[str, int] = (
            str(daemon.socket_path) if args.transport == "unix"
            else ("127.0.0.1", daemon.http_port or 0))
        # Warm both sides up: first calls allocate and fill caches.
        model.encode(sentences[:64], batch_size=32)
        for requests, clients in scenarios.values():
            drive(address, requests[:64], clients)
        rounds = []
        for i in range(args.rounds):
            r = run_round(model, pid, address, sentences, scenarios, one_texts, one_requests,
                          check)
            rounds.append(r)
            print(f"  round {i + 1}: ceilings " + "/".join(f"{c:.0f}" for c in r.ceilings)
                  + " per s | 32 clients x 1: " f"{r.rates['c32']:.0f}/s "
                  f"({r.ratios['c32']:.2f}x) | 1 client x 64: {r.rates['b64']:.0f}/s "
                  f"({r.ratios['b64']:.2f}x) | one sentence: {r.notes['latency']}")
        scrape = daemon.client.metrics().splitlines()
        calls = [line for line in scrape if line.startswith((
            "modelctl_model_calls_total", "modelctl_embedding_requests_total"))]

    def median(key: str) -> float:
        return statistics.median(r.ratios[key] for r in rounds)

    last = rounds[-1].notes
    verdict = {True: "ok", False: "MISSED"}
    ceilings = [c for r in rounds for c in r.ceilings]
    print(f"ceiling (in-process encode, batch_size=32): median "
          f"{statistics.median(ceilings):.1f} sentences/s, from {min(ceilings):.0f} to "
          f"{max(ceilings):.0f}; {last['ceiling']}")
    c32, b64, lat = median("c32"), median("b64"), median("latency")
    print(f"32 concurrent clients, 1 sentence each: {c32:.2f}x ceiling "
          f"(target >= {TARGETS['c32']}) {verdict[c32 >= TARGETS['c32']]}; {last['c32']}")
    print(f"1 client, 64 sentences per request:     {b64:.2f}x ceiling "
          f"(target >= {TARGETS['b64']}) {verdict[b64 >= TARGETS['b64']]}; {last['b64']}")
    print(f"1 client, 1 sentence, p50 latency:       {lat:.2f}x in-process "
          f"(target <= {TARGETS['latency']}) {verdict[lat <= TARGETS['latency']]}; "
          f"{last['latency']}")
    for line in calls:
        print(f"  {line}")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"bench process CPU overall: {usage.ru_utime + usage.ru_stime:.1f}s; load average "
          f"now {os.getloadavg()[0]:.2f} (other work on the machine skews every number)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
