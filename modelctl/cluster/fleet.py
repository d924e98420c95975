"""The fleet registry's state: what each replica holds, reported by the replica itself.

Soft state: every replica reports its cache entries and device readings about once a
second and after every change; a replica not heard from for ``EXPIRY_S`` is gone from
every view and from routing (a dead replica, a lost node). The registry also makes the
placement decisions for cold models, one at a time, so concurrent first requests for
a model, from any ingress, go to one replica, whose single-flight cache loads it once.

Pure Python (no Ray): ``registry.FleetRegistry`` serves it as a Serve deployment.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

Report = dict[str, Any]

# A replica reports every REPORT_S; three missed reports and it is taken for dead.
REPORT_S = 1.0
EXPIRY_S = 3.5
# How long a placement is remembered before the replica reports the model: longer than
# any load takes to show up as "loading" in a report.
PENDING_S = 60.0
_HELD = ("loading", "ready")


def holds(entry: dict[str, Any], model: str) -> bool:
    """Whether ``entry`` is a copy of ``model`` that requests may use (or wait for)."""
    return model in (entry.get("name"), entry.get("canonical_name")) and \
        entry.get("state") in _HELD


def device_kind(device: str | None) -> str | None:
    """``cpu`` or ``cuda`` (a replica's own ``cuda:N`` is local to it); ``None``: any."""
    if device is None:
        return None
    return "cuda" if device.lower().startswith("cuda") else device.lower()


def on_node(report: Report, node: str | None) -> bool:
    """``node`` names a node by its Ray node name or a prefix of its node id."""
    return node is None or report.get("node") == node or \
        str(report.get("node_id", "")).startswith(node)


@dataclass
class _Placement:
    replica: str
    at: float


class Fleet:
    def __init__(self, expiry_s: float = EXPIRY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.expiry_s = expiry_s
        self._clock = clock
        self._reports: dict[str, tuple[float, Report]] = {}
        self._pending: dict[tuple[str, str | None], _Placement] = {}

    def report(self, report: Report) -> None:
        """Take a replica's reading, unless a later one from the same process is here.

        Reports travel through Serve's handles, which keep no order: the periodic
        reading taken just before an eject may arrive after the one the eject sent, and
        must not bring the model back into the view. ``seq`` counts a process's readings
        (``pid`` and ``node_id`` say which process: a restarted replica counts afresh).
        """
        held = self._reports.get(report["replica"])
        if held is not None and _same_process(held[1], report) and \
                report.get("seq", 0) < held[1].get("seq", 0):
            return
        self._reports[report["replica"]] = (self._clock(), report)

    def forget(self, replica: str) -> None:
        """Drop a replica an ingress could not reach; its next report brings it back."""
        self._reports.pop(replica, None)

    def live(self) -> list[Report]:
        now = self._clock()
        for replica, (seen, _) in list(self._reports.items()):
            if now - seen > self.expiry_s:
                del self._reports[replica]
        return [report for _, report in sorted(self._reports.values(),
                                               key=lambda item: item[1]["replica"])]

    def place(self, model: str, device: str | None = None, node: str | None = None,
              exclude: Iterable[str] = ()) -> str | None:
        """The replica that should serve ``model``: a holder, else the one a concurrent
        request was sent to, else the one with the most free budget (``None``: none fits
        the device and node asked for)."""
        live = [r for r in self.live() if r["replica"] not in set(exclude)
                and on_node(r, node) and _serves(r, device)]
        holders = holders_of(live, model)
        if holders:
            return holders[0]["replica"]
        key = (model, device_kind(device))
        pending = self._pending.get(key)
        ids = {r["replica"] for r in live}
        if pending is not None and pending.replica in ids and \
                self._clock() - pending.at < PENDING_S:
            return pending.replica
        if not live:
            return None
        best = max(live, key=lambda r: (int(r.get("free") or 0), -len(r.get("entries") or ()),
                                        r["replica"]))
        self._pending[key] = _Placement(best["replica"], self._clock())
        return str(best["replica"])

    def copies(self, model: str, count: int, device: str | None = None,
               node: str | None = None) -> list[str]:
        """``count`` replicas for ``model``: its holders first, then the most free."""
        live = [r for r in self.live() if on_node(r, node) and _serves(r, device)]
        chosen = [r["replica"] for r in holders_of(live, model)][:count]
        rest = sorted((r for r in live if r["replica"] not in chosen),
                      key=lambda r: -int(r.get("free") or 0))
        return chosen + [r["replica"] for r in rest[:count - len(chosen)]]


def holders_of(reports: Iterable[Report], model: str) -> list[Report]:
    return [r for r in reports if any(holds(e, model) for e in r.get("entries") or ())]


def _serves(report: Report, device: str | None) -> bool:
    kind = device_kind(device)
    return kind is None or device_kind(report.get("device")) == kind


def _same_process(a: Report, b: Report) -> bool:
    return (a.get("node_id"), a.get("pid")) == (b.get("node_id"), b.get("pid"))
