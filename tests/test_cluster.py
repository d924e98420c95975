"""modelctl on a real one-node Ray cluster with two cpu replicas, through its HTTP URL.

One deployment for the module, on the Ray head it shares with test_cluster_nodes.py
(Ray and two replicas importing torch take a minute on a busy machine); each test starts
from an empty fleet. Every replica has a cpu budget of
150 MB: one MiniLM (~91 MB) fits, two do not.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from modelctl.client import Client
from modelctl.errors import CacheManagementError
from modelctl.testing import MINILM, RAY_LOOPBACK_ENV, RayCluster, wait_for
from tests.marqo_sdk import HF_MINILM, MARQO_3, NO_CUDA, check_cpu, run_marqo

os.environ.update(RAY_LOOPBACK_ENV)  # Ray reads it when it is imported
pytest.importorskip("ray.serve")

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

# The bundled MiniLM weights under other names: distinct cache entries, same size.
COPY = {"name": MINILM, "type": "sbert", "dimensions": 384}
LONG_BATCH = [f"request {i}: " + "a long sentence that keeps the model busy " * 12
              for i in range(96)]


@pytest.fixture(scope="module")
def ray_cluster(ray_head: RayCluster) -> Iterator[RayCluster]:
    try:
        # One proxy, on the head: test_cluster_nodes.py adds nodes to this same head.
        result = ray_head.up("--cpu-replicas", "2", "--gpus", "0", "--replica-cpus", "1",
                             "--proxy-location", "HeadOnly", "--max-cpu-memory", "150MB")
        assert result["replicas"] == ["cpu-0", "cpu-1"]
        yield ray_head
    finally:
        ray_head.down()


@pytest.fixture
def fleet(ray_cluster: RayCluster) -> Iterator[Client]:
    client = ray_cluster.client()

    def emptied() -> bool:
        # A load an earlier test gave up waiting for may still land on a busy machine.
        client.eject(all=True, force=True)
        return client.list_models() == []

    wait_for(emptied, timeout=120, interval=0.5)
    yield client
    client.close()


def rows(client: Client) -> dict[tuple[str, str], dict[str, Any]]:
    """(replica, name) -> fleet entry."""
    return {(e["replica"], e["name"]): e for e in client.list_models()}


def test_load_embed_and_ls_show_where_the_model_is(ray_cluster: RayCluster,
                                                  fleet: Client) -> None:
    import openai

    loaded = json.loads(ray_cluster.at("load", MINILM, "--json", check=True).stdout)
    holder = loaded["replica"]
    assert loaded["node"] == "head" and loaded["state"] == "ready" and loaded["bytes"] > 0
    listed = json.loads(ray_cluster.at("ls", "--json", check=True).stdout)
    assert [(e["node"], e["replica"], e["device"], e["name"]) for e in listed] == \
        [("head", holder, "cpu", MINILM)]
    table = ray_cluster.at("ls", check=True).stdout
    assert "NODE" in table and "REPLICA" in table and holder in table

    sdk = openai.OpenAI(base_url=ray_cluster.url + "/v1", api_key="unused", max_retries=0)
    for _ in range(4):
        reply = sdk.embeddings.create(model=MINILM, input=["a cluster", "of caches"])
        assert [len(d.embedding) for d in reply.data] == [384, 384]
    fleet.embeddings(MINILM, "one more")
    # Request counters reach the view with the replica's next report (within a second).
    wait_for(lambda: rows(fleet)[(holder, MINILM)]["requests"] == 5, timeout=15)
    assert list(rows(fleet)) == [(holder, MINILM)], "a request loaded a second copy"

    marqo = {m["model_name"]: m["model_device"] for m in fleet.get_loaded_models()["models"]}
    assert marqo == {MINILM: "cpu"}
    metrics = fleet.metrics()
    assert f'replica="{holder}"' in metrics and 'node="head"' in metrics
    devices = fleet.devices()
    assert [n["node"] for n in devices["nodes"]] == ["head"]
    assert sorted(devices["nodes"][0]["replicas"]) == ["cpu-0", "cpu-1"]
    assert devices["cpu"]["models_bytes"] == loaded["bytes"]
    status, _, body = fleet.request_raw("GET", "/device/cuda")
    assert status == 400 and json.loads(body)["code"] == "hardware_compatability_error"


def test_concurrent_first_requests_load_once(fleet: Client) -> None:
    errors: list[BaseException] = []

    def embed() -> None:
        own = Client(fleet.url, timeout=120)
        try:
            own.embeddings(MINILM, "first")
        except BaseException as exc:
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=embed) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    wait_for(lambda: [e["requests"] for e in fleet.list_models()] == [8], timeout=15)


def test_cold_model_goes_where_there_is_room(fleet: Client) -> None:
    first = fleet.load_model(MINILM)
    second = fleet.load_model("minilm-b", properties=COPY)
    assert second["replica"] != first["replica"], "evicted while another replica had room"
    assert set(rows(fleet)) == {(first["replica"], MINILM), (second["replica"], "minilm-b")}


def test_eject_frees_every_copy_and_reports_bytes(ray_cluster: RayCluster,
                                                  fleet: Client) -> None:
    loaded = json.loads(ray_cluster.at("load", MINILM, "--copies", "2", "--json",
                                       check=True).stdout)
    assert sorted(c["replica"] for c in loaded["copies"]) == ["cpu-0", "cpu-1"]
    pinned = fleet.update_model(MINILM, pin=True)  # pins apply to every copy
    assert sorted((m["replica"], m["pinned"]) for m in pinned) == [("cpu-0", True),
                                                                   ("cpu-1", True)]
    ejected = json.loads(ray_cluster.at("eject", MINILM, "--json", check=True).stdout)
    assert sorted(e["replica"] for e in ejected["ejected"]) == ["cpu-0", "cpu-1"]
    assert all(e["bytes"] > 0 and "bytes_freed" in e for e in ejected["ejected"])
    assert ejected["bytes_freed"] == sum(e["bytes_freed"] or 0 for e in ejected["ejected"])
    assert fleet.list_models() == []
    again = ray_cluster.at("eject", MINILM)
    assert again.returncode == 1 and "not cached" in again.stderr
    status, _, _ = fleet.request_raw("DELETE", "/models", query={"model_name": MINILM})
    assert status == 404


def test_budget_evicts_per_replica(fleet: Client) -> None:
    fleet.load_model(MINILM, copies=2)
    added = fleet.load_model("minilm-b", properties=COPY)
    # Both replicas were full: the one chosen evicted its own idle MiniLM, the other kept it.
    other = ({"cpu-0", "cpu-1"} - {added["replica"]}).pop()
    assert set(rows(fleet)) == {(added["replica"], "minilm-b"), (other, MINILM)}


def test_model_in_use_is_not_evicted(fleet: Client) -> None:
    busy = fleet.load_model(MINILM)["replica"]
    fleet.load_model("minilm-c", properties=COPY)  # the other replica
    done: list[int] = []
    request = threading.Thread(target=lambda: done.append(len(
        Client(fleet.url, timeout=300).embed(MINILM, LONG_BATCH))))
    request.start()
    try:
        wait_for(lambda: rows(fleet)[(busy, MINILM)]["in_flight"], timeout=60, interval=0.02)
        try:
            placed = fleet.load_model("minilm-b", properties=COPY)
        except CacheManagementError:
            placed = None  # nothing could go: also right, as long as MiniLM stayed
        during = rows(fleet)
        assert (busy, MINILM) in during
        if placed is not None:
            assert placed["replica"] != busy
        assert during[(busy, MINILM)]["in_flight"] >= 1, "the request ended too soon to tell"
    finally:
        request.join()
    assert done == [len(LONG_BATCH)]


def test_marqo_client_against_the_cluster(ray_cluster: RayCluster, fleet: Client) -> None:
    fleet.load_model(HF_MINILM, copies=2)
    result = run_marqo(MARQO_3, ray_cluster.url, HF_MINILM)
    assert result["loaded"]["ok"] == {"models": [{"model_name": HF_MINILM,
                                                  "model_device": "cpu"}]}
    check_cpu(result)
    assert result["cuda"] == NO_CUDA
    assert result["eject_missing"]["error"]["status_code"] == 404
    assert result["eject"]["ok"]["result"] == "success"
    assert result["loaded_after"]["ok"] == {"models": []}
    assert fleet.list_models() == []
