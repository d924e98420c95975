"""The fleet's answers to the daemon's read routes, built from the replicas' reports.

Each function takes the live reports (``fleet.Fleet.live``) and returns the body the
same route of one daemon returns, widened to the fleet:

- ``/v1/models``: one row per (node, replica, device, model): the daemon's entry plus
  ``node``, ``node_id`` and ``replica``.
- ``/models`` (Marqo): the union of ready models, one row per (name, device).
- ``/v1/devices``: ``cpu`` summed over nodes, every GPU of the fleet in ``cuda``, and
  ``nodes`` with each node's own readings.
- ``/device/cuda`` (Marqo): every GPU of the fleet. ``device_id`` numbers them 0..N-1 in
  the order (node name, node id, the GPU's index on its node); ``node`` and
  ``node_device_id`` say which physical GPU each is.
"""

from __future__ import annotations

from typing import Any

from modelctl.cluster.fleet import Report

Body = dict[str, Any]


def fleet_entries(reports: list[Report]) -> list[dict[str, Any]]:
    rows = []
    for report in reports:
        for entry in report.get("entries") or ():
            rows.append({**entry, "node": report.get("node"), "node_id": report.get("node_id"),
                         "replica": report["replica"]})
    return rows


def marqo_models(reports: list[Report]) -> Body:
    seen: dict[tuple[str, str], None] = {}
    for entry in fleet_entries(reports):
        if entry.get("state") == "ready":
            seen[(str(entry["name"]), _marqo_device(str(entry["device"])))] = None
    return {"models": [{"model_name": name, "model_device": device} for name, device in seen]}


def _marqo_device(device: str) -> str:
    return "cuda" if device.startswith("cuda") else device


def _nodes(reports: list[Report]) -> dict[str, tuple[Report, list[Report]]]:
    """node id -> (one report with that node's cpu reading, every report from the node)."""
    nodes: dict[str, tuple[Report, list[Report]]] = {}
    for report in reports:
        node_id = str(report.get("node_id"))
        first, all_ = nodes.setdefault(node_id, (report, []))
        all_.append(report)
    return dict(sorted(nodes.items(), key=lambda item: (str(item[1][0].get("node")), item[0])))


def fleet_gpus(reports: list[Report]) -> list[dict[str, Any]]:
    """Every physical GPU once, numbered in fleet order (see the module's docstring)."""
    gpus: dict[tuple[str, str], dict[str, Any]] = {}
    for node_id, (_, node_reports) in _nodes(reports).items():
        for report in node_reports:
            devices = report.get("devices") or {}
            physical = report.get("gpu_ids") or []
            for reading in devices.get("cuda") or ():
                index = int(reading.get("index", 0))
                gpu_id = str(physical[index]) if index < len(physical) else str(index)
                row = gpus.setdefault((node_id, gpu_id), {
                    **reading, "node": report.get("node"), "node_id": node_id,
                    "node_device": f"cuda:{gpu_id}", "models_bytes": 0, "budget": 0,
                    "replicas": []})
                row["models_bytes"] += int(reading.get("models_bytes") or 0)
                row["budget"] += int(reading.get("budget") or 0)
                row["replicas"].append(report["replica"])
    ordered = sorted(gpus.values(), key=lambda g: (str(g["node"]), g["node_id"],
                                                   _number(g["node_device"])))
    for fleet_index, gpu in enumerate(ordered):
        gpu.update(index=fleet_index, device=f"{gpu['node']}/{gpu['node_device']}")
    return ordered


def _number(device: str) -> int:
    tail = device.rpartition(":")[2]
    return int(tail) if tail.isdigit() else 0


def fleet_devices(reports: list[Report]) -> Body:
    nodes = []
    cpu_total: dict[str, Any] = {"device": "cpu", "cores": 0, "usage_percent": None,
                                 "memory_total": 0, "memory_used": 0, "memory_available": 0,
                                 "models_bytes": 0, "budget": 0}
    usages = []
    gpus = fleet_gpus(reports)
    for node_id, (first, node_reports) in _nodes(reports).items():
        cpu = dict((first.get("devices") or {}).get("cpu") or {})
        cpu["models_bytes"] = sum(int(((r.get("devices") or {}).get("cpu") or {})
                                      .get("models_bytes") or 0) for r in node_reports)
        cpu["budget"] = sum(int(((r.get("devices") or {}).get("cpu") or {})
                                .get("budget") or 0) for r in node_reports)
        for key in ("cores", "memory_total", "memory_used", "memory_available",
                    "models_bytes", "budget"):
            cpu_total[key] += int(cpu.get(key) or 0)
        if cpu.get("usage_percent") is not None:
            usages.append(float(cpu["usage_percent"]))
        nodes.append({"node": first.get("node"), "node_id": node_id, "cpu": cpu,
                      "cuda": [g for g in gpus if g["node_id"] == node_id],
                      "replicas": [r["replica"] for r in node_reports]})
    cpu_total["usage_percent"] = sum(usages) / len(usages) if usages else None
    return {"cpu": cpu_total, "cuda": gpus, "cuda_available": bool(gpus),
            "cuda_error": None if gpus else "no GPU in this cluster's replicas",
            "nodes": nodes}


def marqo_cpu(reports: list[Report]) -> Body:
    cpu = fleet_devices(reports)["cpu"]
    total = cpu["memory_total"] or 1
    return {"cpu_usage_percent": f"{cpu['usage_percent'] or 0.0:.1f} %",
            "memory_used_percent": f"{cpu['memory_used'] / total * 100:.1f} %",
            "memory_used_gb": f"{cpu['memory_used'] / 1e9:.1f}"}


def marqo_cuda(reports: list[Report]) -> list[dict[str, Any]]:
    """Marqo's ``cuda_devices`` rows for every GPU of the fleet (empty: none)."""
    rows = []
    for gpu in fleet_gpus(reports):
        total = int(gpu.get("memory_total") or 0)
        used = int(gpu.get("torch_allocated") or 0)
        util = gpu.get("utilization_percent")
        rows.append({
            "device_id": gpu["index"], "device_name": gpu.get("name") or "-",
            "memory_used": f"{used / 2**30:.1f} GiB", "total_memory": f"{total / 2**30:.1f} GiB",
            "utilization": f"{util:.1f} %" if util is not None else "N/A",
            "memory_used_percent": f"{used / total * 100 if total else 0.0:.1f} %",
            "node": gpu["node"], "node_device_id": _number(gpu["node_device"]),
        })
    return rows


def merge_metrics(texts: list[tuple[Report, str]]) -> str:
    """Every replica's Prometheus text as one, each sample labelled with its replica
    and node (the families' HELP and TYPE lines once)."""
    meta: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for report, text in texts:
        labels = f'replica="{_escape(report["replica"])}",node="{_escape(report.get("node"))}"'
        family = ""
        for line in text.splitlines():
            if line.startswith("# "):
                parts = line.split(" ", 3)
                family = parts[2] if len(parts) > 2 else family
                if line not in meta.setdefault(family, []):
                    meta[family].append(line)
            elif line.strip():
                samples.setdefault(family, []).append(_labelled(line, labels))
    out = []
    for family in dict.fromkeys([*meta, *samples]):
        out.extend(meta.get(family, []))
        out.extend(samples.get(family, []))
    return "\n".join(out) + "\n"


def _labelled(line: str, labels: str) -> str:
    name_end = min(i for i in (line.find("{"), line.find(" ")) if i >= 0) \
        if ("{" in line or " " in line) else len(line)
    if line[name_end:name_end + 1] == "{":
        inner = line[name_end + 1:]
        sep = "" if inner.startswith("}") else ","
        return f"{line[:name_end]}{{{labels}{sep}{inner}"
    return f"{line[:name_end]}{{{labels}}}{line[name_end:]}"


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
