"""``modelctl cluster up|status|down``: deploy, inspect and remove the Serve application
on a running Ray cluster (``ray start --head`` on one host, ``ray start --address`` on
the others, or KubeRay). The CLI imports this module only inside those commands.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from modelctl.cluster.options import APP_NAME, ClusterOptions
from modelctl.errors import ModelctlError


class ClusterError(ModelctlError):
    """Raised when the Ray cluster or the Serve application is not as a command needs."""


@contextlib.contextmanager
def connected(address: str | None) -> Iterator[Any]:
    """A driver connection to the Ray cluster at ``address`` (``None``: ``RAY_ADDRESS``
    or the one started on this host), closed on exit; the cluster keeps running."""
    import ray

    try:
        ray.init(address=address or "auto", logging_level=logging.WARNING,
                 log_to_driver=False, namespace="modelctl")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"cannot connect to a Ray cluster at {address or 'auto'}: {exc}; "
                           "start one with `ray start --head`") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def cluster_gpus(ray: Any) -> int:
    return int(ray.cluster_resources().get("GPU", 0))


def up(options: ClusterOptions, address: str | None, timeout: float = 600.0) -> dict[str, Any]:
    """Deploy (or redeploy) the application; returns where it listens and how long it took."""
    from ray import serve

    from modelctl.cluster.app import build

    started = time.monotonic()
    with connected(address) as ray:
        if options.gpus < 0:
            options = _with_gpus(options, cluster_gpus(ray))
        if not options.replica_ids():
            raise ClusterError("nothing to deploy: this Ray cluster has no GPUs; give "
                               "--cpu-replicas N")
        serve.start(proxy_location=options.proxy_location,
                    http_options={"host": options.http_host, "port": options.http_port})
        serve.run(build(options.to_args()), name=APP_NAME, route_prefix="/", blocking=False)
    url = f"http://{_connect_host(options.http_host)}:{options.http_port}"
    health = wait_ready(url, options, len(options.replica_ids()),
                        started + timeout - time.monotonic())
    return {"url": url, "replicas": [r for r, _ in options.replica_ids()],
            "seconds": round(time.monotonic() - started, 2), "health": health}


def _with_gpus(options: ClusterOptions, gpus: int) -> ClusterOptions:
    from dataclasses import replace

    return replace(options, gpus=gpus)


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def wait_ready(url: str, options: ClusterOptions, replicas: int,
               timeout: float) -> dict[str, Any]:
    """Wait until every replica has reported and imported torch."""
    deadline = time.monotonic() + max(timeout, 1.0)
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = health(url, options.api_key)
            if last.get("replicas") == replicas and last.get("torch_ready"):
                return dict(last)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            last = exc
        time.sleep(0.5)
    raise ClusterError(f"the cluster at {url} did not become ready (last: {last}); if Serve "
                       "already listened on another port, `serve shutdown` first")


def health(url: str, api_key: str | None = None) -> dict[str, Any]:
    from modelctl.client import Client

    client = Client(url, api_key=api_key, timeout=10.0)
    try:
        return dict(client.health())
    finally:
        client.close()


def status(address: str | None) -> dict[str, Any]:
    from ray import serve

    with connected(address):
        app = serve.status().applications.get(APP_NAME)
        if app is None:
            raise ClusterError(f"no {APP_NAME} application is deployed on this Ray cluster; "
                               "`modelctl cluster up` deploys it")
        fleet = serve.get_deployment_handle("fleet", APP_NAME).status.remote().result(
            timeout_s=30)
        return {"application": _name(app.status), "message": app.message,
                "deployments": {name: _name(d.status) for name, d in app.deployments.items()},
                "replicas": fleet["replicas"]}


def _name(status: Any) -> str:
    return str(getattr(status, "value", status))


def down(address: str | None) -> bool:
    """Delete the application; ``False`` when there was none."""
    from ray import serve

    with connected(address):
        if APP_NAME not in serve.status().applications:
            return False
        serve.delete(APP_NAME)
        return True


def config_yaml(options: ClusterOptions, address: str | None) -> str:
    from modelctl.cluster.options import serve_config

    if options.gpus < 0:
        with connected(address) as ray:
            options = _with_gpus(options, cluster_gpus(ray))
    return serve_config(options)


def dump(data: Any) -> str:
    return json.dumps(data, indent=2)
