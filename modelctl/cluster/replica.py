"""One replica of the fleet: modelctl's own daemon state behind a Ray Serve deployment.

Each replica runs ``DaemonState`` (cache with byte budgets, leases, single-flight,
keep-alive, pins, loaders, batcher, verified eject, metrics) and answers forwarded
requests with the daemon's own app, as its TCP listener would (local paths refused).
It reports its entries and device readings to the fleet registry every ``REPORT_S``
and at once after a request changed its cache, so the fleet view reads its writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import tempfile
from pathlib import Path
from typing import Any

from modelctl.cluster.asgi_call import ForwardedRequest, ForwardedResponse, call_app
from modelctl.cluster.fleet import REPORT_S, Report
from modelctl.cluster.options import ClusterOptions
from modelctl.config import Settings

log = logging.getLogger("modelctl.cluster")


class ModelReplica:
    async def __init__(self, replica_id: str, kind: str, registry: Any,  # type: ignore[misc]
                       args: dict[str, Any]) -> None:
        import ray

        from modelctl.daemon.app import create_app
        from modelctl.daemon.listener import Listener
        from modelctl.daemon.state import DaemonState

        options = ClusterOptions.from_args(args)
        runtime_dir = Path(tempfile.mkdtemp(prefix=f"modelctl-{replica_id}-"))
        settings = Settings.from_env().with_overrides(
            runtime_dir=runtime_dir, max_cpu_memory=options.max_cpu_memory,
            max_cuda_memory=options.max_cuda_memory, keep_alive=options.keep_alive,
            default_device="cpu" if kind == "cpu" else None, api_key=None, http_port=None)
        self.replica_id = replica_id
        self.kind = kind
        self.registry = registry
        self.state = DaemonState(settings)
        self.state.start()
        self.app = Listener(create_app(self.state), self.state, kind="tcp")
        context = ray.get_runtime_context()
        self.node_id = context.get_node_id()
        self.node = next((n.get("NodeName") for n in ray.nodes()
                          if n.get("NodeID") == self.node_id), None) or self.node_id[:8]
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        self._reported: object = None
        self._readings = itertools.count(1)  # the registry keeps the latest (fleet.py)
        self._reporter = asyncio.get_running_loop().create_task(self._report_forever())

    async def request(self, request: ForwardedRequest) -> ForwardedResponse:
        """Answer one forwarded HTTP request with the daemon's app."""
        response = await call_app(self.app, request)
        if request.method != "GET" and self._signature() != self._reported:
            await self._report()  # before answering: the fleet view reads this write
        return response

    async def metrics(self) -> str:
        return self.state.metrics.render().decode()

    def _signature(self) -> object:
        return tuple((e.key, e.state, e.pinned, e.keep_alive) for e in self.state.cache.list())

    def _device(self) -> str:
        if self.kind == "cpu" or not self.state.torch_is_ready:
            return "cpu" if self.kind == "cpu" else "cuda"
        return self.state.default_device()

    async def _report_forever(self) -> None:
        while True:
            try:
                await self._report()
            except asyncio.CancelledError:
                raise
            except Exception:  # a registry restarting: the next report carries it all
                log.warning("reporting to the fleet registry failed", exc_info=True)
            await asyncio.sleep(REPORT_S)

    async def _report(self) -> None:
        signature = self._signature()
        await self.registry.report.remote(await self._reading())
        self._reported = signature

    async def _reading(self) -> Report:
        from modelctl.daemon.devices import cpu_report, cuda_reports

        state = self.state
        held: dict[str, int] = {}
        for entry in state.cache.list():
            held[entry.device] = held.get(entry.device, 0) + entry.held_bytes
        devices: dict[str, Any] = {"cpu": cpu_report(state.cpu), "cuda": []}
        devices["cpu"].update(budget=_budget(state, "cpu"), models_bytes=held.get("cpu", 0))
        if state.torch_is_ready and self.kind == "gpu":
            devices["cuda"] = await asyncio.to_thread(cuda_reports, state.nvml)
            for reading in devices["cuda"]:
                reading.update(budget=_budget(state, reading["device"]),
                               models_bytes=held.get(reading["device"], 0))
        device = self._device()
        budget = _budget(state, device if device != "cuda" else "cuda:0")
        return {
            "replica": self.replica_id, "kind": self.kind, "node": self.node,
            "node_id": self.node_id, "gpu_ids": self.gpu_ids, "pid": state.pid,
            "device": device, "torch_ready": state.torch_is_ready,
            "free": max(0, budget - held.get(device, 0)), "budget": budget,
            "seq": next(self._readings),  # taken with the entries: no await between
            "entries": [e.describe() for e in state.cache.list()], "devices": devices,
        }

    async def check_health(self) -> None:
        """Serve's health check: a replica whose torch import failed is replaced."""
        future = getattr(self.state, "_torch", None)
        if future is not None and future.done() and future.exception() is not None:
            raise RuntimeError(f"importing torch failed: {future.exception()}")

    async def __del__(self) -> None:
        self._reporter.cancel()
        with contextlib.suppress(Exception):
            await self.state.close()


def _budget(state: Any, device: str) -> int:
    try:
        return int(state.budgets.budget(device))
    except Exception:  # no such GPU (yet): nothing to offer on it
        return 0
