"""``GET /metrics``: Prometheus text that prometheus-client parses, whose gauges show the
cache and whose counters move with loads, embeddings, evictions, expirations and ejects.

The budget daemon (conftest.py), whose 250 MB cpu budget holds two of its ~91 MB
open_clip checkpoints; a third evicts one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelctl.errors import ApiError
from modelctl.testing import Daemon

BUDGET = 250 * 10**6


class Scrape:
    """One scrape, parsed: ``scrape["modelctl_loads_total", model="a"]``."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def value(self, name: str, **labels: str) -> float:
        found = [s.value for s in self.samples
                 if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
        return float(sum(found))


@pytest.fixture
def d(budget_daemon: Daemon) -> Iterator[Daemon]:
    """The budget daemon, empty before and after each test."""
    budget_daemon.client.eject(all=True, force=True)
    yield budget_daemon
    budget_daemon.client.eject(all=True, force=True)


def scrape(d: Daemon) -> Scrape:
    status, headers, body = d.client.request_raw("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    return Scrape(body.decode())


def test_families_and_types(d: Daemon) -> None:
    s = scrape(d)
    kinds = {name: f.type for name, f in s.families.items() if name.startswith("modelctl_")}
    for counter in ("modelctl_loads", "modelctl_evictions", "modelctl_expirations",
                    "modelctl_ejects", "modelctl_embedding_requests", "modelctl_load_failures"):
        assert kinds[counter] == "counter", counter
    for histogram in ("modelctl_load_seconds", "modelctl_embedding_seconds",
                      "modelctl_request_seconds"):
        assert kinds[histogram] == "histogram", histogram
    for gauge in ("modelctl_models_loaded", "modelctl_model_bytes", "modelctl_budget_bytes"):
        assert kinds[gauge] == "gauge", gauge
    assert s.value("modelctl_budget_bytes", device="cpu") == BUDGET


def test_counters_follow_the_cache(d: Daemon,
                                   budget_checkpoints: dict[str, dict[str, Any]]) -> None:
    clip = budget_checkpoints["small"]
    c = d.client
    s0 = scrape(d)

    def delta(name: str, **labels: str) -> float:
        return scrape(d).value(name, **labels) - s0.value(name, **labels)

    c.load_model("m-a", "cpu", properties=clip)
    c.load_model("m-b", "cpu", properties=clip)
    s1 = scrape(d)
    assert delta("modelctl_loads_total", model="m-a", device="cpu") == 1
    assert s1.value("modelctl_models_loaded", device="cpu", state="ready") == 2
    size = s1.value("modelctl_model_bytes", model="m-a", device="cpu")
    assert size == c.list_models()[0]["bytes"] and 5 * 10**7 < size < 1.2 * 10**8
    assert s1.value("modelctl_load_seconds_count", model="m-a", device="cpu") >= 1

    c.embed("m-a", ["one"])
    c.embed("m-a", ["two", "three"])
    c.embeddings("m-a", "four")
    assert delta("modelctl_embedding_requests_total", model="m-a", device="cpu") == 3
    assert delta("modelctl_embedding_inputs_total", model="m-a", device="cpu") == 4
    assert delta("modelctl_embedding_seconds_count", model="m-a", device="cpu") == 3
    assert delta("modelctl_embedding_seconds_sum", model="m-a", device="cpu") > 0

    c.load_model("m-c", "cpu", properties=clip)  # the budget holds two: m-b (LRU) goes
    assert delta("modelctl_evictions_total", model="m-b", device="cpu") == 1
    assert delta("modelctl_evictions_total", model="m-a", device="cpu") == 0

    c.eject("m-a", "cpu")
    assert delta("modelctl_ejects_total", model="m-a", device="cpu") == 1

    c.load_model("m-d", "cpu", properties=clip, keep_alive=0.2)
    deadline = time.monotonic() + 15
    while any(m["name"] == "m-d" for m in c.list_models()):
        assert time.monotonic() < deadline, "m-d did not expire"
        time.sleep(0.05)
    assert delta("modelctl_expirations_total", model="m-d", device="cpu") == 1
    assert delta("modelctl_ejects_total", model="m-d", device="cpu") == 0

    with pytest.raises(ApiError):
        c.load_model("m-e", "cpu", properties={**clip, "localpath": "/no/such.pt"})
    assert delta("modelctl_load_failures_total", model="m-e", device="cpu") == 1

    s2 = scrape(d)
    assert s2.value("modelctl_models_loaded", device="cpu", state="ready") == 1  # m-c
    assert s2.value("modelctl_model_bytes", model="m-a", device="cpu") == 0  # gone
    # Every HTTP request is timed, by route template.
    assert s2.value("modelctl_request_seconds_count", route="/v1/models", method="POST") >= 5
