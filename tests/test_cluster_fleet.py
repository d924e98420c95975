"""The fleet registry's placement and the fleet views, on reports written here (no Ray)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelctl.cluster import views
from modelctl.cluster.fleet import EXPIRY_S, Fleet
from modelctl.cluster.options import ClusterOptions, serve_config

MB = 10**6


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def report(replica: str, free: int, *entries: dict[str, Any], node: str = "n1",
           device: str = "cpu", gpus: list[dict[str, Any]] | None = None,
           gpu_ids: list[str] | None = None) -> dict[str, Any]:
    return {"replica": replica, "node": node, "node_id": f"{node}-id", "device": device,
            "free": free, "budget": 500 * MB, "entries": list(entries), "gpu_ids": gpu_ids or [],
            "devices": {"cpu": {"cores": 4, "memory_total": 1000, "memory_used": 250,
                                "budget": 500 * MB, "models_bytes": 0, "usage_percent": 10.0},
                        "cuda": gpus or []}}


def entry(name: str, state: str = "ready", device: str = "cpu") -> dict[str, Any]:
    return {"name": name, "canonical_name": name, "state": state, "device": device}


def test_a_held_model_goes_to_its_holder_and_a_cold_one_to_the_most_free() -> None:
    fleet = Fleet()
    fleet.report(report("a", 400 * MB))
    fleet.report(report("b", 100 * MB, entry("m")))
    assert fleet.place("m") == "b"
    assert fleet.place("cold") == "a"


def test_concurrent_first_requests_get_one_replica() -> None:
    fleet = Fleet()
    fleet.report(report("a", 300 * MB))
    fleet.report(report("b", 300 * MB))
    first = fleet.place("cold")
    fleet.report(report("c", 900 * MB))  # more room now, but a load is already on its way
    assert {fleet.place("cold") for _ in range(5)} == {first}
    assert fleet.place("cold", exclude=[str(first)]) != first


def test_a_silent_replica_expires_and_its_placements_with_it() -> None:
    clock = Clock()
    fleet = Fleet(clock=clock)
    fleet.report(report("a", 300 * MB, entry("m")))
    fleet.report(report("b", 100 * MB))
    clock.now = EXPIRY_S / 2
    fleet.report(report("b", 100 * MB))
    clock.now = EXPIRY_S + 0.1
    assert [r["replica"] for r in fleet.live()] == ["b"]
    assert fleet.place("m") == "b"


def test_device_and_node_narrow_the_choice() -> None:
    fleet = Fleet()
    fleet.report(report("gpu-0", 900 * MB, device="cuda:0", node="n1"))
    fleet.report(report("cpu-0", 100 * MB, node="n2"))
    assert fleet.place("m", device="cpu") == "cpu-0"
    assert fleet.place("x", device="cuda") == "gpu-0"
    assert fleet.place("y", node="n2") == "cpu-0"
    assert fleet.place("z", node="n2-") == "cpu-0"  # a node id prefix
    assert fleet.place("w", device="cuda", node="n2") is None
    assert fleet.copies("m", 2) == ["gpu-0", "cpu-0"]


def test_fleet_gpus_are_numbered_by_node_then_index() -> None:
    def gpu(used: int) -> dict[str, Any]:
        return {"device": "cuda:0", "index": 0, "name": "NVIDIA T", "memory_total": 8 * 2**30,
                "torch_allocated": used, "utilization_percent": 5.0, "budget": 10,
                "models_bytes": used}

    reports = [report("gpu-2", 0, node="b", device="cuda:0", gpus=[gpu(3)], gpu_ids=["0"]),
               report("gpu-1", 0, node="a", device="cuda:0", gpus=[gpu(2)], gpu_ids=["1"]),
               report("gpu-0", 0, node="a", device="cuda:0", gpus=[gpu(1)], gpu_ids=["0"]),
               report("gpu-3", 0, node="a", device="cuda:0", gpus=[gpu(4)], gpu_ids=["0"])]
    numbered = [(g["index"], g["device"], g["models_bytes"], g["replicas"])
                for g in views.fleet_gpus(reports)]
    assert numbered == [(0, "a/cuda:0", 5, ["gpu-0", "gpu-3"]), (1, "a/cuda:1", 2, ["gpu-1"]),
                        (2, "b/cuda:0", 3, ["gpu-2"])]
    marqo = views.marqo_cuda(reports)
    assert [(g["device_id"], g["node"], g["node_device_id"]) for g in marqo] == \
        [(0, "a", 0), (1, "a", 1), (2, "b", 0)]
    devices = views.fleet_devices(reports)
    assert [n["node"] for n in devices["nodes"]] == ["a", "b"]
    assert devices["cpu"]["cores"] == 8


def test_marqo_models_is_the_union_of_ready_copies() -> None:
    reports = [report("a", 0, entry("m"), entry("x", state="loading")),
               report("b", 0, entry("m"), entry("g", device="cuda:0"))]
    assert views.marqo_models(reports) == {"models": [
        {"model_name": "m", "model_device": "cpu"}, {"model_name": "g", "model_device": "cuda"}]}
    assert [(r["replica"], r["name"]) for r in views.fleet_entries(reports)] == \
        [("a", "m"), ("a", "x"), ("b", "m"), ("b", "g")]


def test_metrics_are_labelled_by_replica_and_node() -> None:
    prometheus_parser = pytest.importorskip("prometheus_client.parser")
    text = ('# HELP modelctl_loads_total Loads\n# TYPE modelctl_loads_total counter\n'
            'modelctl_loads_total{model="m",device="cpu"} 2.0\nmodelctl_up 1.0\n')
    merged = views.merge_metrics([(report("a", 0), text), (report("b", 0, node="n2"), text)])
    samples = [(s.name, s.labels, s.value) for family in
               prometheus_parser.text_string_to_metric_families(merged)
               for s in family.samples]
    assert ("modelctl_loads_total", {"replica": "b", "node": "n2", "model": "m",
                                     "device": "cpu"}, 2.0) in samples
    assert ("modelctl_up", {"replica": "a", "node": "n1"}, 1.0) in samples
    assert merged.count("# TYPE modelctl_loads_total") == 1


def test_serve_config_round_trips_through_the_application_args() -> None:
    yaml = pytest.importorskip("yaml")
    options = ClusterOptions(http_host="0.0.0.0", http_port=9000, gpus=2, replicas_per_gpu=2,
                             cpu_replicas=1, max_cuda_memory=8 * 2**30)
    config = yaml.safe_load(serve_config(options))
    assert config["http_options"] == {"host": "0.0.0.0", "port": 9000}
    app = config["applications"][0]
    assert app["import_path"] == "modelctl.cluster.app:build"
    rebuilt = ClusterOptions.from_args({**app["args"], "http_host": "0.0.0.0",
                                        "http_port": 9000})
    assert rebuilt == options
    assert [r for r, _ in rebuilt.replica_ids()] == ["gpu-0", "gpu-1", "gpu-2", "gpu-3",
                                                      "cpu-0"]
    with pytest.raises(ValueError, match="unknown"):
        ClusterOptions.from_args({"gpu": 1})


def test_ray_is_the_version_the_extra_pins() -> None:
    """modelctl uses only Ray Serve's public API, tested against this version: moving to
    another is a change to the `ray` extra, made with the `ray` tests run again."""
    ray = pytest.importorskip("ray")
    pins = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert f'ray = ["ray[serve]=={ray.__version__}"]' in pins


def test_a_reading_that_arrives_late_does_not_undo_a_later_one() -> None:
    """Serve's handles keep no order: the periodic reading taken before an eject can
    arrive after the one the eject sent. A restarted replica (another pid) counts
    afresh."""
    fleet = Fleet()
    before_eject = {**report("r1", 0, entry("m")), "pid": 7, "seq": 4}
    after_eject = {**report("r1", 100 * MB), "pid": 7, "seq": 5}
    fleet.report(after_eject)
    fleet.report(before_eject)
    assert [r["entries"] for r in fleet.live()] == [[]]
    restarted = {**report("r1", 100 * MB, entry("n")), "pid": 8, "seq": 1}
    fleet.report(restarted)
    assert [e["name"] for r in fleet.live() for e in r["entries"]] == ["n"]
