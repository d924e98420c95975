"""Speed and accuracy of each model variant through the daemon, against in-process fp32.

Same model (the default MiniLM on cpu), same sentences, one run. For each variant
(torch bf16, onnx int8, onnx fp32) the daemon loads it alone and serves:

- 32 concurrent clients, each sending one sentence per request ("c32");
- one client sending 64-sentence requests ("b64");

each rate divided by the in-process fp32 ``SentenceTransformer.encode(batch_size=32)``
ceiling measured just before and just after it (their mean). Accuracy: the worst cosine
of any daemon vector to the in-process fp32 one, and the top-10 retrieval overlap with
fp32 on a corpus the bench builds (queries against the sentences, both embedded by the
variant, against both embedded in fp32).

Targets: bf16 >= 1.6x and worst cosine >= 0.999; int8 >= 2.0x, worst cosine >= 0.99 and
top-10 overlap >= 0.95; onnx fp32 >= 1.0x and worst cosine >= 0.9999. bf16's speed
needs a cpu with AVX512-BF16 or AMX; elsewhere the daemon warns and the bench says so.

    python bench/variants.py [--rounds 2] [--sentences 256]

Measured on a 2-core AMD EPYC (AVX2, no AVX512-BF16), shared with other heavy work (load
average 9 to 12), 128 sentences, one round: bf16 0.36x/0.33x (emulated; worst cosine
0.99992), int8 3.59x/3.73x (worst cosine 0.9895, top-10 overlap 0.919), onnx fp32
2.44x/2.65x (worst cosine 1.00000). The in-process ceiling suffers most from the other
load (6-9 sentences/s, against ~275/s on a quiet core), so the ratios flatter the
daemon; the cosines and overlaps do not depend on load. This corpus (random words from
a small vocabulary) is full of near-ties: even bf16, near-lossless, keeps only 0.978 of
the top-10.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
from embed_throughput import (  # noqa: E402
    drive,
    make_sentences,
    request_bytes,
    vectors_of,
)

from modelctl.testing import MINILM, Daemon, minilm_path  # noqa: E402

VARIANTS = {  # (engine, precision): (speed target, worst cosine, top-10 overlap)
    ("torch", "bf16"): (1.6, 0.999, None),
    ("onnx", "int8"): (2.0, 0.99, 0.95),
    ("onnx", "fp32"): (1.0, 0.9999, None),
}


def load_average() -> str:
    return "load " + "/".join(f"{x:.2f}" for x in os.getloadavg())


def ceiling(model: Any, sentences: list[str]) -> float:
    started = time.perf_counter()
    model.encode(sentences, batch_size=32)
    return len(sentences) / (time.perf_counter() - started)


def worst_cosine(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.min(np.sum(got * want, axis=1)
                        / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)))


def top10_overlap(queries: np.ndarray, corpus: np.ndarray, ref_queries: np.ndarray,
                  ref_corpus: np.ndarray) -> float:
    def top(q: np.ndarray, c: np.ndarray) -> np.ndarray:
        return np.argsort(-(q @ c.T), axis=1)[:, :10]

    got, want = top(queries, corpus), top(ref_queries, ref_corpus)
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want, strict=True)]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=256)
    args = parser.parse_args()
    # A bench stopped by timeout(1) still stops the daemons it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    import torch
    from sentence_transformers import SentenceTransformer

    sentences = make_sentences(args.sentences)
    queries = make_sentences(32, seed=7)
    model = SentenceTransformer(minilm_path(), device="cpu")
    ref = model.encode(sentences, batch_size=32)
    ref_queries = model.encode(queries, batch_size=32)
    scenarios = {
        "c32": ([request_bytes(MINILM, [s], "base64") for s in sentences], 32),
        "b64": ([request_bytes(MINILM, sentences[i:i + 64], "base64")
                 for i in range(0, len(sentences), 64)], 2),
    }
    query_requests = [request_bytes(MINILM, queries, "base64")]
    print(f"modelctl variants: {MINILM} on cpu, {len(sentences)} sentences (5-40 words), "
          f"{args.rounds} round(s); cpu cores {os.cpu_count()}, torch threads here "
          f"{torch.get_num_threads()}; {load_average()}")
    results: dict[tuple[str, str], dict[str, Any]] = {}
    with Daemon() as daemon:
        daemon.start()
        native = daemon.client.devices()["cpu"]["native_precisions"]
        print(f"cpu runs natively: {', '.join(native)}")
        address = str(daemon.socket_path)
        model.encode(sentences[:64], batch_size=32)
        for engine, precision in VARIANTS:
            daemon.client.eject(all=True, force=True)
            started = time.perf_counter()
            entry = daemon.client.load_model(MINILM, "cpu", engine=engine, precision=precision)
            print(f"{engine}/{precision}: loaded in {time.perf_counter() - started:.1f}s, "
                  f"{entry['bytes'] / 2**20:.1f} MiB, accuracy on load {entry['accuracy']}"
                  + (f"; warning: {entry['warnings'][0]}" if entry["warnings"] else ""))
            for requests, clients in scenarios.values():
                drive(address, requests[:32], clients)  # warm-up
            ratios: dict[str, list[float]] = {"c32": [], "b64": []}
            worst = 1.0
            for i in range(args.rounds):
                before = ceiling(model, sentences)
                line = [f"  round {i + 1}: ceiling {before:.0f}/s"]
                for name, (requests, clients) in scenarios.items():
                    result = drive(address, requests, clients)
                    worst = min(worst, worst_cosine(vectors_of(result.bodies), ref))
                    rate = len(sentences) / result.wall
                    after = ceiling(model, sentences)
                    ratio = rate / ((before + after) / 2)
                    ratios[name].append(ratio)
                    line.append(f"{name} {rate:.0f}/s ({ratio:.2f}x), ceiling {after:.0f}/s")
                    before = after
                print(" | ".join(line) + f" | {load_average()}")
            got_queries = vectors_of(drive(address, query_requests, 1).bodies)
            corpus = vectors_of(drive(address, scenarios["b64"][0], 1).bodies)
            overlap = top10_overlap(got_queries, corpus, ref_queries, ref)
            results[(engine, precision)] = {
                "c32": statistics.median(ratios["c32"]), "b64": statistics.median(ratios["b64"]),
                "worst": worst, "overlap": overlap}
        daemon.client.eject(all=True, force=True)

    verdict = {True: "ok", False: "MISSED"}
    print("summary (median ratio to in-process fp32 encode):")
    for (engine, precision), (target, min_cos, min_overlap) in VARIANTS.items():
        r = results[(engine, precision)]
        fast = min(r["c32"], r["b64"]) >= target
        accurate = r["worst"] >= min_cos and (min_overlap is None or r["overlap"] >= min_overlap)
        note = " (emulated on this cpu)" if precision == "bf16" and "bf16" not in native else ""
        print(f"  {engine}/{precision}: 32x1 {r['c32']:.2f}x, 2x64 {r['b64']:.2f}x "
              f"(target >= {target}) {verdict[fast]}{note}; worst cosine {r['worst']:.5f} "
              f"(>= {min_cos}), top-10 overlap {r['overlap']:.3f}"
              + (f" (>= {min_overlap})" if min_overlap else "")
              + f" {verdict[accurate]}")
    print(f"done; {load_average()} (other work on the machine skews every number)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
