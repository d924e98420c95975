"""How long a <TAB> takes: one completion request, as the shell scripts send it.

Each request is a fresh ``modelctl`` process (the console script, as a shell runs it)
with ``_MODELCTL_COMPLETE``, against a real daemon holding MiniLM and with none running.
The baseline is ``python -c "import typer"``: the least any Typer CLI pays before it can
answer. Requests and baselines run in interleaved rounds, so load on the machine hits
both alike; medians (and the fastest run) are printed, with their ratio to the baseline.

    python bench/completion_latency.py [--rounds 15]

Target: every median under 150 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from modelctl.testing import MINILM, Daemon, base_env

TARGET_MS = 150.0
LINES = ["modelctl l", "modelctl eject ", f"modelctl eject {MINILM} --device ",
         "modelctl load ", "modelctl load x --device "]


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)
    return (time.perf_counter() - start) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    exe = str(Path(sys.executable).with_name("modelctl"))
    if not os.path.exists(exe):
        sys.exit("needs the modelctl console script beside this python (pip install -e .)")
    absent = Path(tempfile.mkdtemp(prefix="mc-", dir="/tmp")) / "rt"
    with Daemon() as daemon:
        daemon.client.load_model(MINILM, "cpu")
        cases: dict[str, tuple[list[str], dict[str, str]]] = {
            "baseline: python -c 'import typer'": (
                [sys.executable, "-c", "import typer"], base_env(absent))}
        for where, runtime_dir in (("daemon", daemon.runtime_dir), ("no daemon", absent)):
            for line in LINES:
                env = {**base_env(runtime_dir), "_MODELCTL_COMPLETE": "bash",
                       "_MODELCTL_COMPLETE_LINE": line}
                cases[f"{where}: {line!r}"] = ([exe], env)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name, (argv, env) in cases.items():
                samples[name].append(timed(argv, env))
    baseline = statistics.median(next(iter(samples.values())))
    worst = 0.0
    width = max(len(name) for name in samples)
    print(f"{'request':{width}} {'median':>8} {'fastest':>8} {'/typer':>7}")
    for name, values in samples.items():
        median = statistics.median(values)
        if not name.startswith("baseline"):
            worst = max(worst, median)
        print(f"{name:{width}} {median:6.1f}ms {min(values):6.1f}ms {median / baseline:6.2f}x")
    verdict = "ok" if worst <= TARGET_MS else "OVER"
    print(f"slowest median {worst:.1f} ms; target {TARGET_MS:.0f} ms: {verdict}")
    return 0 if worst <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
