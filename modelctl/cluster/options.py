"""What a cluster deployment is made of, as plain data (no Ray).

``ClusterOptions`` travels as the Serve application's ``args``: ``cluster up`` passes
it to ``app.build`` itself, and ``cluster config`` writes it into the Serve config that
``serve deploy`` and a KubeRay ``RayService`` read, so both start the same application.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

APP_NAME = "modelctl"
IMPORT_PATH = "modelctl.cluster.app:build"


@dataclass(frozen=True)
class ClusterOptions:
    http_host: str = "127.0.0.1"
    http_port: int = 8882
    # Serve's: EveryNode (a proxy on each node with replicas) or HeadOnly.
    proxy_location: str = "EveryNode"
    api_key: str | None = None
    gpus: int = 0  # GPUs the replicas are spread over (the cluster's, at `cluster up`)
    replicas_per_gpu: int = 1
    cpu_replicas: int = 0
    replica_cpus: float = 1.0  # Ray CPUs each replica reserves
    max_cpu_memory: int | None = None  # bytes, per replica
    max_cuda_memory: int | None = None  # bytes, per replica
    keep_alive: float | None = None

    def replica_ids(self) -> list[tuple[str, str]]:
        """(deployment name, kind) of every replica: ``gpu-0``.., then ``cpu-0``.."""
        gpu = [(f"gpu-{i}", "gpu") for i in range(self.gpus * self.replicas_per_gpu)]
        return gpu + [(f"cpu-{i}", "cpu") for i in range(self.cpu_replicas)]

    def to_args(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_args(cls, args: dict[str, Any] | None) -> ClusterOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(args or {}) - known)
        if unknown:
            raise ValueError(f"unknown modelctl cluster args: {', '.join(unknown)}")
        return cls(**(args or {}))


def serve_config(options: ClusterOptions) -> str:
    """The Serve config (YAML) for ``serve deploy`` or a ``RayService``'s ``serveConfigV2``.

    The API key, when there is one, is written as given: keep the file as secret as the
    key (or leave it out and set ``MODELCTL_API_KEY`` in the runtime environment).
    """
    args = options.to_args()
    lines = [
        "# modelctl on Ray Serve: `serve deploy` this file, or paste it as a RayService's",
        "# serveConfigV2. Replicas need `pip install 'modelctl[ray]'` on every node image.",
        f"proxy_location: {options.proxy_location}",
        "http_options:",
        f"  host: {_scalar(options.http_host)}",
        f"  port: {options.http_port}",
        "applications:",
        f"  - name: {APP_NAME}",
        "    route_prefix: /",
        f"    import_path: {IMPORT_PATH}",
        "    args:",
    ]
    lines += [f"      {key}: {_scalar(value)}" for key, value in args.items()
              if key not in ("http_host", "http_port", "proxy_location")]
    return "\n".join(lines) + "\n"


def _scalar(value: Any) -> str:
    # JSON scalars are YAML scalars; strings are quoted so none reads as a number or bool.
    return json.dumps(value)
