"""Session-wide fixtures: one shared daemon with a TCP listener, and the tiny CLIP model.

Tests that need a daemon configured differently (budgets, preload, a key) start their
own with ``support.Daemon``; the shared one is for everything else, and each test
leaves its cache as it found it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelctl.testing import Daemon, free_port, make_tiny_clip

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
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
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Marqo modelProperties for a tiny open_clip model saved as a checkpoint."""
    return make_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    """A real daemon, started by the CLI, listening on its socket and a TCP port."""
    d = Daemon(http_port=free_port())
    d.start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def clean_daemon(daemon: Daemon) -> Iterator[Daemon]:
    """The shared daemon with an empty cache, emptied again after the test."""
    if daemon.alive():
        daemon.client.eject(all=True, force=True)
    yield daemon
    if daemon.alive():
        daemon.client.eject(all=True, force=True)


@pytest.fixture
def runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="mc-", dir="/tmp"))
