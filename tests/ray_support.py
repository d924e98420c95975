"""A real Ray cluster on loopback for the ``ray`` tests and ``bench/cluster.py``.

``RayCluster`` starts a head (and, for the multi-node tests, more nodes with logical GPU
resources) with ``ray.cluster_utils.Cluster``, all on 127.0.0.1 with no dashboard and a
small object store, and deploys modelctl on it with the CLI, as a user would:
``modelctl cluster up --address HEAD``. ``close()`` deletes the application and stops
every Ray process it started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from modelctl.client import Client
from tests.support import base_env, free_port, modelctl_exe

# Ray binds its node to the machine's own IP unless told to keep to loopback: this makes
# it take 127.0.0.1 (the node's address is also given explicitly below).
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
OBJECT_STORE = 100 * 2**20
# Ray reads these when it is imported: import this module before ray.
os.environ.update(LOOPBACK_ENV)


class RayCluster:
    def __init__(self, head_cpus: int = 4) -> None:
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
                            **LOOPBACK_ENV)

    @staticmethod
    def node_args(name: str, **resources: Any) -> dict[str, Any]:
        return {"node_ip_address": "127.0.0.1", "node_name": name, "include_dashboard": False,
                "object_store_memory": OBJECT_STORE, **resources}

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def add_node(self, name: str, **resources: Any) -> None:
        self.nodes[name] = self.cluster.add_node(**self.node_args(name, **resources))

    def remove_node(self, name: str) -> None:
        self.cluster.remove_node(self.nodes.pop(name))

    def cli(self, *args: str, timeout: float = 300, check: bool = False,
            ) -> subprocess.CompletedProcess[str]:
        exe = modelctl_exe()
        cmd = [exe, *args] if exe else [sys.executable, "-m", "modelctl", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"modelctl {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr[-3000:]}")
        return proc

    def at(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """``modelctl --url CLUSTER ARGS``."""
        return self.cli("--url", self.url, *args, **kwargs)

    def up(self, *args: str, timeout: float = 400) -> dict[str, Any]:
        proc = self.cli("cluster", "up", "--address", self.address, "--http", str(self.port),
                        "--json", *args, timeout=timeout, check=True)
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def client(self, timeout: float = 120) -> Client:
        return Client(self.url, timeout=timeout)

    def close(self) -> None:
        try:
            self.cli("cluster", "down", "--address", self.address, timeout=120)
        finally:
            self.cluster.shutdown()


def wait_for(predicate: Any, timeout: float = 60, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout}s waiting for {predicate}")
        time.sleep(interval)
