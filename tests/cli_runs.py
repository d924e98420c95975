"""Running the CLI as a process of its own, with no daemon: the helpers of the offline
CLI tests (``offline_runtime``, in conftest.py, gives each test its own runtime dir)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, env: dict[str, str] | None = None,
        stdin: str | None = "") -> subprocess.CompletedProcess[str]:
    """``python -m modelctl ARGS`` with this test's environment."""
    return subprocess.run([sys.executable, "-m", "modelctl", *args], cwd=ROOT,
                          env={**os.environ, **(env or {})}, input=stdin,
                          capture_output=True, text=True, timeout=60)


def no_daemon_left(runtime_dir: Path) -> bool:
    return not (runtime_dir / "modelctl.sock").exists() and \
        not (runtime_dir / "modelctl.json").exists()


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("modelctl: error: "), stderr
    return lines[0]
