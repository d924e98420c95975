"""The Serve application: ``build(args)`` is its import path (``modelctl.cluster.app:build``).

Deployments, all in one application named ``modelctl``:

- ``ingress``: the HTTP routes (ingress.py), no model, no torch;
- ``fleet``: the fleet registry (registry.py);
- ``gpu-0``.. and ``cpu-0``..: one deployment per replica (replica.py), so that the
  ingress can send a request to the replica it chose; Serve places each (a GPU replica
  reserves ``1/replicas_per_gpu`` of a GPU) and restarts it when it dies.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from modelctl.cluster.ingress import ClusterIngress
from modelctl.cluster.options import ClusterOptions
from modelctl.cluster.registry import FleetRegistry
from modelctl.cluster.replica import ModelReplica

# Requests a replica takes at once: its batcher, not Serve, decides how they are
# batched and queued (Serve's default of 5 would starve the batcher).
MAX_ONGOING = 1024


def build(args: dict[str, Any]) -> Application:
    options = ClusterOptions.from_args(args)
    if not options.replica_ids():
        raise ValueError("a modelctl cluster needs at least one replica: GPUs in the "
                         "cluster, or cpu_replicas")
    plain = options.to_args()
    registry = serve.deployment(name="fleet", num_replicas=1, max_ongoing_requests=MAX_ONGOING,
                                ray_actor_options={"num_cpus": 0})(FleetRegistry).bind()
    replicas = {}
    for replica_id, kind in options.replica_ids():
        actor: dict[str, Any] = {"num_cpus": options.replica_cpus}
        if kind == "gpu":
            actor["num_gpus"] = 1 / options.replicas_per_gpu
        replicas[replica_id] = serve.deployment(
            name=replica_id, num_replicas=1, max_ongoing_requests=MAX_ONGOING,
            ray_actor_options=actor, health_check_period_s=5, graceful_shutdown_timeout_s=30,
        )(ModelReplica).bind(replica_id, kind, registry, plain)
    return serve.deployment(name="ingress", num_replicas=1, max_ongoing_requests=MAX_ONGOING,
                            ray_actor_options={"num_cpus": 0},
                            )(ClusterIngress).bind(registry, replicas, plain)
