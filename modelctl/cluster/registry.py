"""The fleet registry as a Serve deployment: one replica holding ``fleet.Fleet``.

A deployment rather than a free-standing named actor, so it lives and dies with the
application: ``serve deploy``, KubeRay and ``cluster down`` manage it with the rest,
and Serve restarts it if it dies (its state comes back with the next reports).
"""

from __future__ import annotations

from typing import Any

from modelctl.cluster.fleet import Fleet, Report


class FleetRegistry:
    def __init__(self) -> None:
        self.fleet = Fleet()

    def report(self, report: Report) -> None:
        self.fleet.report(report)

    def forget(self, replica: str) -> None:
        self.fleet.forget(replica)

    def live(self) -> list[Report]:
        return self.fleet.live()

    def place(self, model: str, device: str | None = None, node: str | None = None,
              exclude: list[str] | None = None) -> str | None:
        return self.fleet.place(model, device, node, exclude or ())

    def copies(self, model: str, count: int, device: str | None = None,
               node: str | None = None) -> list[str]:
        return self.fleet.copies(model, count, device, node)

    def status(self) -> dict[str, Any]:
        return {"replicas": [{k: r.get(k) for k in ("replica", "kind", "node", "node_id",
                                                     "device", "free", "budget", "torch_ready")}
                             | {"models": len(r.get("entries") or ())}
                             for r in self.fleet.live()]}
