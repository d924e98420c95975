"""modelctl on a simulated multi-node Ray cluster: the shared head (conftest.py) and two
nodes with one logical GPU each, all processes of this machine
(``ray.cluster_utils.Cluster``).

Each node's replica is placed by its GPU resource but runs models on cpu (there is no
real GPU here); what is tested is the fleet across nodes: node names in the views,
eject on one node or all, and a node going away.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from modelctl.client import Client
from modelctl.testing import MINILM, RAY_LOOPBACK_ENV, RayCluster, wait_for

os.environ.update(RAY_LOOPBACK_ENV)  # Ray reads it when it is imported
pytest.importorskip("ray.serve")

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def nodes(ray_head: RayCluster) -> Iterator[RayCluster]:
    """The shared Ray head (conftest.py) with two GPU nodes added for this module."""
    try:
        ray_head.add_node("gpu-a", num_cpus=2, num_gpus=1)
        ray_head.add_node("gpu-b", num_cpus=2, num_gpus=1)
        # One proxy, on the head: the simulated nodes share this machine's ports.
        result = ray_head.up("--replica-cpus", "1", "--proxy-location", "HeadOnly",
                             "--max-cpu-memory", "400MB")
        assert result["replicas"] == ["gpu-0", "gpu-1"], "the cluster's 2 GPUs, one each"
        yield ray_head
    finally:
        ray_head.down()
        for name in list(ray_head.nodes):  # a test may have removed one already
            ray_head.remove_node(name)


@pytest.fixture
def fleet(nodes: RayCluster) -> Iterator[Client]:
    client = nodes.client()
    client.eject(all=True, force=True)
    yield client
    client.close()


def placement(client: Client) -> set[tuple[str, str, str]]:
    return {(e["node"], e["replica"], e["name"]) for e in client.list_models()}


def test_replicas_spread_over_the_gpu_nodes(nodes: RayCluster, fleet: Client) -> None:
    loaded = json.loads(nodes.at("load", MINILM, "--copies", "2", "--json",
                                 check=True).stdout)
    assert {(c["node"], c["replica"]) for c in loaded["copies"]} == \
        {("gpu-a", "gpu-0"), ("gpu-b", "gpu-1")} or \
        {(c["node"], c["replica"]) for c in loaded["copies"]} == \
        {("gpu-a", "gpu-1"), ("gpu-b", "gpu-0")}
    devices = json.loads(nodes.at("devices", "--json", check=True).stdout)
    assert [n["node"] for n in devices["nodes"]] == ["gpu-a", "gpu-b"]
    table = nodes.at("devices", check=True).stdout
    assert "gpu-a/cpu" in table and "gpu-b/cpu" in table
    status = json.loads(nodes.cli("cluster", "status", "--address", nodes.address, "--json",
                                  check=True, timeout=120).stdout)
    assert status["application"] == "RUNNING"
    assert {r["node"] for r in status["replicas"]} == {"gpu-a", "gpu-b"}


def test_eject_on_one_node_then_everywhere(nodes: RayCluster, fleet: Client) -> None:
    fleet.load_model(MINILM, copies=2)
    one = json.loads(nodes.at("eject", MINILM, "--node", "gpu-a", "--json",
                              check=True).stdout)
    assert [e["node"] for e in one["ejected"]] == ["gpu-a"]
    assert {n for n, _, _ in placement(fleet)} == {"gpu-b"}
    fleet.load_model(MINILM, node="gpu-a")
    assert {n for n, _, _ in placement(fleet)} == {"gpu-a", "gpu-b"}
    every = nodes.at("eject", MINILM, check=True).stdout
    assert "gpu-a" in every and "gpu-b" in every and "freed" in every
    assert placement(fleet) == set()


def test_a_node_going_away_leaves_the_view_and_the_routing(nodes: RayCluster,
                                                           fleet: Client) -> None:
    fleet.load_model(MINILM, copies=2)
    nodes.remove_node("gpu-a")
    wait_for(lambda: {n for n, _, _ in placement(fleet)} == {"gpu-b"}, timeout=60)
    before = {e["replica"]: e["requests"] for e in fleet.list_models()}
    for _ in range(6):
        assert len(fleet.embed(MINILM, ["still served"])[0]) == 384
    (survivor,) = before
    wait_for(lambda: {e["replica"]: e["requests"] for e in fleet.list_models()} ==
             {survivor: before[survivor] + 6}, timeout=15)
