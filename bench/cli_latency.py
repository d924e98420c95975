"""The CLI's and daemon's speed targets, each as a ratio against a baseline run in this same script.

1. `modelctl ls --json` against a running daemon vs `python -c "import typer, rich.table"`
   (medians of interleaved runs): target <= 1.3x.
2. `modelctl daemon start` to the first answered `ls`: target under 1 s.
3. One 64-sentence embedding request through the daemon vs the same
   `SentenceTransformer.encode` in-process (medians, interleaved): target <= 1.15x.

    python bench/cli_latency.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from modelctl.testing import MINILM, Daemon, minilm_path


def timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def modelctl(*args: str) -> list[str]:
    exe = Path(sys.executable).with_name("modelctl")
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "modelctl", *args]


def cli_ls(rounds: int) -> None:
    with Daemon() as d:
        baseline, ours = [], []
        for _ in range(rounds):  # interleaved: both see the same machine load
            baseline.append(timed([sys.executable, "-c", "import typer, rich.table"], d.env))
            ours.append(timed(modelctl("ls", "--json"), d.env))
        b, o = statistics.median(baseline), statistics.median(ours)
        print(f"ls --json: {o * 1000:.1f} ms vs import typer, rich.table {b * 1000:.1f} ms "
              f"-> {o / b:.2f}x (target <= 1.3x)")


def start_to_ls(rounds: int) -> None:
    times = []
    for _ in range(rounds):
        d = Daemon()
        try:
            started = time.perf_counter()
            subprocess.run(modelctl("daemon", "start"), env=d.env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            subprocess.run(modelctl("ls", "--json"), env=d.env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times.append(time.perf_counter() - started)
        finally:
            d.stop()
    print(f"daemon start -> first ls answered: median {statistics.median(times):.3f} s, "
          f"max {max(times):.3f} s over {rounds} (target < 1 s)")


def embed_64(rounds: int) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    sentences = [f"request sentence {i}: a modest line of text about topic {i % 11}, "
                 f"long enough to be realistic ({'word ' * (i % 9)})" for i in range(64)]
    model = SentenceTransformer(minilm_path(), device="cpu")
    with Daemon() as d:
        d.client.load_model(MINILM, "cpu")
        d.client.embed(MINILM, sentences)
        model.encode(sentences, batch_size=32)
        local, remote = [], []
        for _ in range(rounds):
            started = time.perf_counter()
            with torch.inference_mode():
                model.encode(sentences, batch_size=32)
            local.append(time.perf_counter() - started)
            started = time.perf_counter()
            d.client.embed(MINILM, sentences)
            remote.append(time.perf_counter() - started)
        lo, re = statistics.median(local), statistics.median(remote)
        print(f"64-sentence request: daemon {re * 1000:.1f} ms vs in-process encode "
              f"{lo * 1000:.1f} ms -> {re / lo:.2f}x (target <= 1.15x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Measure what an installed modelctl costs: with PYTHONDONTWRITEBYTECODE set (some
    # sandboxes set it), our modules would be compiled from source on every run while
    # the baseline's site-packages come from their cached bytecode.
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
        print("PYTHONDONTWRITEBYTECODE was set: unset for the runs measured")
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "modelctl"),
                           quiet=1)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    cli_ls(args.rounds)
    start_to_ls(max(3, args.rounds // 3))
    embed_64(args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
