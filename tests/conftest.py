"""Session-wide fixtures: one shared daemon with a TCP listener, and the tiny CLIP model.

Starting a daemon costs seconds of torch import, so most modules share this one: a test
that needs a model loads it, and leaves the cache as it found it (``clean_daemon``, or a
module fixture that loads what its module reads and ejects it at the end). Tests that
need a daemon configured otherwise (a key, preload, a small queue, a budget that evicts)
or that stop or kill it start their own with ``modelctl.testing.Daemon``.

The shared daemon's cpu budget comes from ``MODELCTL_MAX_CPU_MEMORY`` (test_cache.py
reads it back), and a ``gs`` on its PATH leaves a marker when anything runs it: no image
a client sends may ever reach Ghostscript (test_hostile_host.py checks the marker).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelctl.testing import Daemon, free_port, make_tiny_clip, minilm_path, wide_clip_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# The suite runs on pytest-xdist workers (pyproject's addopts), a whole module to a worker
# so that its module-scoped daemon starts once. The two Ray modules share one worker, one
# after the other, and its Ray head (``ray_head``), each deploying modelctl on it. The
# modules that use the keyed daemon share one too, so that it starts once, and so do
# those of the budget daemon.
SAME_WORKER = {"tests/test_cluster.py": "ray", "tests/test_cluster_nodes.py": "ray",
               "tests/test_budgets.py": "budget", "tests/test_metrics.py": "budget",
               **{f"tests/{name}.py": "keyed" for name in (
                   "test_http_security", "test_listeners", "test_marqo_clients",
                   "test_openai_client", "test_security")}}
# The longest modules (measured one at a time on two quiet cores), handed out first so
# that none starts last.
LONGEST_FIRST = ["test_cluster_nodes.py", "test_cluster.py", "test_faults.py",
                 "test_variants.py", "test_budgets.py", "test_hostile_clients.py",
                 "test_gpu_check.py", "test_hostile_host.py", "test_terminal.py",
                 "test_daemon.py", "test_marqo_contract.py", "test_pull.py",
                 "test_embeddings.py", "test_preload.py", "test_cache.py"]


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        """xdist's per-module scheduling, with the modules of SAME_WORKER as one unit."""

        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return SAME_WORKER.get(module, module)

    return ByModule(config, log)


def _rank(item: pytest.Item) -> int:
    name = item.path.name
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: each module's own order is kept
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA (scripts/gpu-check)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def minilm_reference() -> Any:
    """The packaged MiniLM in this process (sentence-transformers on cpu), whose vectors
    the daemon's must match. Shared: a test that would change it makes its own."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_path(), device="cpu")


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Marqo modelProperties for a tiny open_clip model saved as a checkpoint."""
    return make_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


SHARED_CPU_BUDGET = "6GiB"


def fake_gs(directory: Path) -> Path:
    """A ``gs`` in ``directory`` that leaves a marker file when anything runs it."""
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / "gs-ran"
    script = directory / "gs"
    script.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return marker


@pytest.fixture(scope="session")
def gs_marker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file the shared daemon's fake ``gs`` would leave."""
    return fake_gs(tmp_path_factory.mktemp("fake-gs"))


@pytest.fixture(scope="session")
def daemon(gs_marker: Path) -> Iterator[Daemon]:
    """A real daemon, started by the CLI, listening on its socket and a TCP port."""
    path = f"{gs_marker.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    with Daemon(http_port=free_port(),
                env={"MODELCTL_MAX_CPU_MEMORY": SHARED_CPU_BUDGET, "PATH": path}) as d:
        yield d


@pytest.fixture(scope="session")
def keyed_daemon() -> Iterator[Daemon]:
    """A daemon started as a user would: `daemon start --http PORT --api-key KEY`, debug
    logging on, in a runtime dir that was created readable by others (0755). Its key is
    ``api_key``; its environment has none (the CLI gets it by flag where it needs it)."""
    runtime = Path(tempfile.mkdtemp(prefix="mc-", dir="/tmp"))
    os.chmod(runtime, 0o755)
    d = Daemon(runtime, http_port=free_port(), env={"MODELCTL_DEBUG": "1"})
    d.api_key = "s3cret-key-" + os.urandom(8).hex()
    try:
        d.cli("daemon", "start", "--http", str(d.http_port), "--api-key", d.api_key,
              check=True, timeout=60)
        d.wait_torch()
        yield d
    finally:
        d.stop()
        shutil.rmtree(runtime, ignore_errors=True)


@pytest.fixture(scope="session")
def budget_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Random open_clip checkpoints for the budget daemon: ``small`` (about 91 MB, as
    MiniLM: any two fit its budget, three do not) and ``big`` (208 MB: fits next to one)."""
    root = tmp_path_factory.mktemp("budget-clips")
    return {"small": make_tiny_clip(root, arch="budget-small", config=wide_clip_config(384, 1)),
            "big": make_tiny_clip(root, arch="budget-big", config=wide_clip_config(640, 2))}


@pytest.fixture(scope="session")
def budget_daemon() -> Iterator[Daemon]:
    """A daemon with a 250 MB cpu budget, given as ``daemon start --max-cpu-memory``
    over Marqo's alias in its environment (8 GB), which the flag beats."""
    d = Daemon(env={"MARQO_MAX_CPU_MODEL_MEMORY": "8"})
    try:
        d.cli("daemon", "start", "--max-cpu-memory", "250MB", check=True, timeout=60)
        d.wait_torch()
        yield d
    finally:
        d.__exit__(None, None, None)


class RayHeadLease:
    """A Ray head on loopback with 4 logical CPUs, shared by the modules that use it and
    shut down when the last of them ends: an idle head still takes about 5% of a core."""

    def __init__(self, modules: set[Path]) -> None:
        from modelctl.testing import RayCluster

        self.waiting = set(modules)
        self.cluster: Any = RayCluster(head_cpus=4)

    def release(self, module: Path) -> None:
        self.waiting.discard(module)
        if not self.waiting:
            self.close()

    def close(self) -> None:
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            cluster.close()


@pytest.fixture(scope="session")
def ray_head_lease(request: pytest.FixtureRequest) -> Iterator[RayHeadLease]:
    pytest.importorskip("ray.serve")
    users = {item.path for item in request.session.items if "ray_head" in item.fixturenames}
    lease = RayHeadLease(users)
    try:
        yield lease
    finally:
        lease.close()


@pytest.fixture(scope="module")
def ray_head(ray_head_lease: RayHeadLease, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The shared Ray head with nothing deployed: the module deploys modelctl with ``up``
    (its own options), adds the nodes it needs, and takes both away again (``down``,
    ``remove_node``)."""
    assert ray_head_lease.cluster is not None, "the Ray head was shut down early"
    yield ray_head_lease.cluster
    ray_head_lease.release(request.path)


def _restore(d: Daemon) -> None:
    """Empty ``d``'s cache and close every listener but the one it started with."""
    d.client.eject(all=True, force=True)
    for url in d.client.health()["listeners"]:
        port = int(url.rsplit(":", 1)[1])
        if port != d.http_port:
            d.client.close_listener(port)


@pytest.fixture(scope="module")
def keyed(keyed_daemon: Daemon) -> Iterator[Daemon]:
    """The keyed daemon as each module finds it: no model loaded, its one listener."""
    _restore(keyed_daemon)
    yield keyed_daemon
    _restore(keyed_daemon)


@pytest.fixture
def clean_daemon(daemon: Daemon) -> Iterator[Daemon]:
    """The shared daemon with an empty cache, emptied again after the test."""
    if daemon.alive():
        daemon.client.eject(all=True, force=True)
    yield daemon
    if daemon.alive():
        daemon.client.eject(all=True, force=True)


@pytest.fixture
def offline_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A runtime dir (not created) that this process's environment, and so the CLI it
    runs, uses; no socket, URL or key of the user's leaks in, and HOME is the test's."""
    path = tmp_path / "rt"
    for var in ("MODELCTL_SOCKET", "MODELCTL_URL", "MODELCTL_API_KEY", "MODELCTL_DEBUG",
                "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MODELCTL_RUNTIME_DIR", str(path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return path


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    """A runtime dir of the test's own, short enough for a socket path; removed after."""
    path = Path(tempfile.mkdtemp(prefix="mc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
