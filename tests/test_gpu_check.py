"""The CPU side of scripts/gpu-check: its report runs the same flow on cpu, and the
script itself refuses to run where there is no CUDA. The cuda checks themselves are
the `gpu`-marked tests and need an NVIDIA GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modelctl.testing import base_env

REPO = Path(__file__).resolve().parent.parent


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def test_gpu_report_flow_passes_on_cpu(tmp_path: object) -> None:
    proc = subprocess.run(
        [sys.executable, "scripts/gpu_report.py", "--device", "cpu", "--skip-throughput",
         "--small"], cwd=REPO, capture_output=True, text=True, timeout=400,
        env=base_env(REPO / "unused-runtime-dir"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "0 failed checks" in out
    for line in ("MiniLM on the daemon's device matches in-process cpu encode",
                 "loading a third evicted the LRU one", "409 naming the holders",
                 "cache empty after eject"):
        assert line in out


@pytest.mark.skipif(_has_cuda(), reason="this machine has CUDA: gpu-check would run")
def test_gpu_check_refuses_without_cuda() -> None:
    proc = subprocess.run(["bash", "scripts/gpu-check"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**base_env(REPO / "unused"),
                                                       "PYTHON": sys.executable})
    assert proc.returncode != 0
    assert "no CUDA device" in proc.stderr + proc.stdout
