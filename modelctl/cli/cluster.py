"""``modelctl cluster up|status|down|config``: modelctl as a Ray Serve application.

Ray is imported only inside these commands (``pip install 'modelctl[ray]'``); once a
cluster is up, every other command talks to it as to a daemon: ``modelctl --url
http://HEAD:PORT ls``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelctl.cli import output
from modelctl.cli.params import (
    JsonOpt,
    MaxCpuMemoryOpt,
    MaxCudaMemoryOpt,
    ServerApiKeyOpt,
    ServerKeepAliveOpt,
    duration_value,
    help_without_command,
    size_value,
)
from modelctl.errors import ModelctlError

if TYPE_CHECKING:
    from modelctl.cluster.options import ClusterOptions

app = typer.Typer(help="Run modelctl across hosts as a Ray Serve application "
                       "(needs `pip install 'modelctl[ray]'` and a running Ray cluster).",
                  no_args_is_help=False)
app.callback(invoke_without_command=True)(help_without_command)

AddressOpt = Annotated[str | None, typer.Option(
    "--address", metavar="HOST:PORT",
    help="The Ray cluster's address (`ray start --head` prints it) [default: RAY_ADDRESS, "
         "else the cluster started on this host].")]
ClusterHttpOpt = Annotated[int, typer.Option(
    "--http", metavar="PORT", min=1, max=65535, help="Port of Serve's HTTP listener.")]
ClusterHostOpt = Annotated[str, typer.Option(
    "--host", metavar="HOST", help="Address Serve's HTTP listener binds on every node.")]
ReplicasPerGpuOpt = Annotated[int, typer.Option(
    "--replicas-per-gpu", metavar="N", min=1, max=16,
    help="Replicas sharing each GPU (each reserves 1/N of it).")]
CpuReplicasOpt = Annotated[int, typer.Option(
    "--cpu-replicas", metavar="N", min=0, max=256, help="Replicas that run models on cpu.")]
GpusOpt = Annotated[int | None, typer.Option(
    "--gpus", metavar="N", min=0,
    help="GPUs to spread replicas over [default: the cluster's GPUs now].")]
ProxyOpt = Annotated[str, typer.Option(
    "--proxy-location", metavar="WHERE",
    help="Where Serve runs HTTP proxies: EveryNode (each node with replicas) or HeadOnly.")]
ReplicaCpusOpt = Annotated[float, typer.Option(
    "--replica-cpus", metavar="N", min=0.0, help="Ray CPUs each replica reserves.")]


def _options(http: int, host: str, proxy: str, api_key: str | None, gpus: int | None,
             replicas_per_gpu: int, cpu_replicas: int, replica_cpus: float,
             max_cpu_memory: str | None, max_cuda_memory: str | None,
             keep_alive: str | None) -> ClusterOptions:
    from modelctl.cluster.options import ClusterOptions

    seconds = duration_value(keep_alive, "--keep-alive")
    if proxy not in ("EveryNode", "HeadOnly"):
        raise typer.BadParameter("EveryNode or HeadOnly", param_hint="--proxy-location")
    return ClusterOptions(
        http_host=host, http_port=http, proxy_location=proxy, api_key=api_key,
        gpus=-1 if gpus is None else gpus, replicas_per_gpu=replicas_per_gpu,
        cpu_replicas=cpu_replicas, replica_cpus=replica_cpus,
        max_cpu_memory=size_value(max_cpu_memory, "--max-cpu-memory"),
        max_cuda_memory=size_value(max_cuda_memory, "--max-cuda-memory"),
        keep_alive=None if seconds is None or seconds < 0 else seconds)


def _control() -> Any:
    try:
        from modelctl.cluster import control
    except ImportError as exc:
        raise ModelctlError(f"`modelctl cluster` needs Ray Serve: pip install "
                            f"'modelctl[ray]' ({exc})") from None
    return control


def up(
    address: AddressOpt = None,
    http: ClusterHttpOpt = 8882,
    host: ClusterHostOpt = "127.0.0.1",
    proxy_location: ProxyOpt = "EveryNode",
    api_key: ServerApiKeyOpt = None,
    gpus: GpusOpt = None,
    replicas_per_gpu: ReplicasPerGpuOpt = 1,
    cpu_replicas: CpuReplicasOpt = 0,
    replica_cpus: ReplicaCpusOpt = 1.0,
    max_cpu_memory: MaxCpuMemoryOpt = None,
    max_cuda_memory: MaxCudaMemoryOpt = None,
    keep_alive: ServerKeepAliveOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deploy modelctl on a running Ray cluster and wait until every replica is ready."""
    options = _options(http, host, proxy_location, api_key, gpus, replicas_per_gpu,
                       cpu_replicas, replica_cpus, max_cpu_memory, max_cuda_memory, keep_alive)
    control = _control()
    with output.activity("deploying modelctl on Ray Serve"):
        result = control.up(options, address)
    if as_json:
        output.print_json(result)
        return
    output.say(f"modelctl cluster up at {result['url']} with {len(result['replicas'])} "
               f"replicas ({', '.join(result['replicas'])}) in {result['seconds']:.1f}s")
    output.hint(f"modelctl --url {result['url']} ls")


def status(address: AddressOpt = None, as_json: JsonOpt = False) -> None:
    """Show the application's state and every replica the fleet registry hears from."""
    result = _control().status(address)
    if as_json:
        output.print_json(result)
        return
    from modelctl.units import format_bytes

    output.say(f"application {result['application']}" +
               (f": {result['message']}" if result.get("message") else ""))
    output.print_table(
        [("REPLICA", "left"), ("NODE", "left"), ("DEVICE", "left"), ("MODELS", "right"),
         ("FREE", "right"), ("BUDGET", "right"), ("DEPLOYMENT", "left")],
        [[str(r["replica"]), str(r.get("node")), str(r.get("device")), str(r.get("models")),
          format_bytes(r.get("free")), format_bytes(r.get("budget")),
          result["deployments"].get(r["replica"], "-")] for r in result["replicas"]])


def down(address: AddressOpt = None) -> None:
    """Delete the modelctl application from the Ray cluster (Ray itself keeps running)."""
    if _control().down(address):
        output.say("modelctl cluster application deleted")
    else:
        output.hint("no modelctl application was deployed")


def config(
    address: AddressOpt = None,
    http: ClusterHttpOpt = 8882,
    host: ClusterHostOpt = "0.0.0.0",
    proxy_location: ProxyOpt = "EveryNode",
    api_key: ServerApiKeyOpt = None,
    gpus: GpusOpt = None,
    replicas_per_gpu: ReplicasPerGpuOpt = 1,
    cpu_replicas: CpuReplicasOpt = 0,
    replica_cpus: ReplicaCpusOpt = 1.0,
    max_cpu_memory: MaxCpuMemoryOpt = None,
    max_cuda_memory: MaxCudaMemoryOpt = None,
    keep_alive: ServerKeepAliveOpt = None,
) -> None:
    """Print the Serve config (YAML) for `serve deploy` or a KubeRay RayService.

    Without --gpus it asks the Ray cluster how many GPUs it has.
    """
    options = _options(http, host, proxy_location, api_key, gpus, replicas_per_gpu,
                       cpu_replicas, replica_cpus, max_cpu_memory, max_cuda_memory, keep_alive)
    if options.gpus >= 0:
        from modelctl.cluster.options import serve_config

        text = serve_config(options)
    else:
        text = _control().config_yaml(options, address)
    import sys

    sys.stdout.write(text)


app.command("up")(up)
app.command("status")(status)
app.command("down")(down)
app.command("config")(config)
