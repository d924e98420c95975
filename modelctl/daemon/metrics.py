"""Prometheus metrics for ``GET /metrics``, in a registry of the daemon's own."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from modelctl.daemon.entry import Entry

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Model names are chosen by clients (custom models, failed loads): past this many, new
# names share one series, so /metrics and the daemon's memory stay bounded.
MAX_MODEL_LABELS = 200
OTHER_MODELS = "_other"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self._models: set[str] = set()
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["model", "device"]
        self.loads = Counter("modelctl_loads", "Models loaded", labels, registry=self.registry)
        self.load_failures = Counter("modelctl_load_failures", "Loads that failed", labels,
                                     registry=self.registry)
        self.load_seconds = Histogram("modelctl_load_seconds", "Time to load a model", labels,
                                      buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
                                      registry=self.registry)
        self.evictions = Counter("modelctl_evictions", "Models evicted to make room", labels,
                                 registry=self.registry)
        self.expirations = Counter("modelctl_expirations", "Models expired by keep-alive",
                                   labels, registry=self.registry)
        self.ejects = Counter("modelctl_ejects", "Models ejected on request", labels,
                              registry=self.registry)
        self.embedding_requests = Counter("modelctl_embedding_requests",
                                          "Embedding requests answered", labels,
                                          registry=self.registry)
        self.embedding_inputs = Counter("modelctl_embedding_inputs", "Inputs embedded", labels,
                                        registry=self.registry)
        self.model_calls = Counter("modelctl_model_calls",
                                   "Batches run through a model (fewer than requests when "
                                   "requests are coalesced)", labels, registry=self.registry)
        self.rejections = Counter("modelctl_queue_rejections",
                                  "Requests refused with 429 because a queue was full", labels,
                                  registry=self.registry)
        self.batch_size = Histogram("modelctl_batch_items", "Inputs per model call", labels,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
                                    registry=self.registry)
        self.batch_seconds = Histogram("modelctl_batch_seconds", "Time of one model call",
                                       labels, buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.request_seconds = Histogram("modelctl_request_seconds", "HTTP request latency",
                                         ["route", "method"], buckets=_LATENCY_BUCKETS,
                                         registry=self.registry)
        self.embedding_seconds = Histogram("modelctl_embedding_seconds",
                                           "Embedding request latency", labels,
                                           buckets=_LATENCY_BUCKETS, registry=self.registry)

    def watch(self, entries: Callable[[], Iterable[Entry]],
              budgets: Callable[[], dict[str, int]]) -> None:
        """Gauges read from the cache at scrape time, so they are never stale."""
        self.registry.register(_CacheCollector(entries, budgets))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def model_label(self, name: str) -> str:
        """``name``, or ``OTHER_MODELS`` once ``MAX_MODEL_LABELS`` names have been seen."""
        if name in self._models:
            return name
        if len(self._models) >= MAX_MODEL_LABELS:
            return OTHER_MODELS
        self._models.add(name)
        return name

    def _labels(self, entry: Entry) -> dict[str, str]:
        return {"model": self.model_label(entry.name), "device": entry.device}

    def loaded(self, entry: Entry) -> None:
        self.loads.labels(**self._labels(entry)).inc()
        if entry.load_seconds is not None:
            self.load_seconds.labels(**self._labels(entry)).observe(entry.load_seconds)

    def load_failed(self, entry: Entry) -> None:
        self.load_failures.labels(**self._labels(entry)).inc()

    def evicted(self, entry: Entry) -> None:
        self.evictions.labels(**self._labels(entry)).inc()

    def expired(self, entry: Entry) -> None:
        self.expirations.labels(**self._labels(entry)).inc()

    def ejected(self, entry: Entry) -> None:
        self.ejects.labels(**self._labels(entry)).inc()

    def embedded(self, entry: Entry, inputs: int, seconds: float) -> None:
        labels = self._labels(entry)
        self.embedding_requests.labels(**labels).inc()
        self.embedding_inputs.labels(**labels).inc(inputs)
        self.embedding_seconds.labels(**labels).observe(seconds)

    def batch(self, label: tuple[str, str], items: int, jobs: int, seconds: float) -> None:
        model, device = self.model_label(label[0]), label[1]
        self.model_calls.labels(model, device).inc()
        self.batch_size.labels(model, device).observe(items)
        self.batch_seconds.labels(model, device).observe(seconds)

    def rejected(self, label: tuple[str, str]) -> None:
        self.rejections.labels(self.model_label(label[0]), label[1]).inc()

    def request(self, route: str, method: str, seconds: float) -> None:
        self.request_seconds.labels(route, method).observe(seconds)


class _CacheCollector(Collector):
    def __init__(self, entries: Callable[[], Iterable[Entry]],
                 budgets: Callable[[], dict[str, int]]) -> None:
        self._entries = entries
        self._budgets = budgets

    def collect(self) -> Iterable[Any]:
        loaded = GaugeMetricFamily("modelctl_models_loaded", "Models in the cache, by state",
                                   labels=["device", "state"])
        # Two variants of one model are two entries: engine and precision tell them apart.
        variant = ["model", "device", "engine", "precision"]
        size = GaugeMetricFamily("modelctl_model_bytes",
                                 "Measured bytes of each model (parameters and buffers)",
                                 labels=variant)
        device_size = GaugeMetricFamily("modelctl_model_device_bytes",
                                        "Allocator bytes of each cuda model", labels=variant)
        accuracy = GaugeMetricFamily("modelctl_model_min_cosine",
                                     "Worst cosine to fp32 on the probe set, per variant",
                                     labels=variant)
        budget = GaugeMetricFamily("modelctl_budget_bytes", "Memory budget per device",
                                   labels=["device"])
        counts: dict[tuple[str, str], int] = {}
        for entry in self._entries():
            state = entry.state.value
            counts[(entry.device, state)] = counts.get((entry.device, state), 0) + 1
            labels = [entry.name, entry.device, entry.spec.engine, entry.spec.precision]
            if entry.bytes is not None:
                size.add_metric(labels, entry.bytes)
            if entry.device_bytes is not None:
                device_size.add_metric(labels, entry.device_bytes)
            measured = getattr(entry.model, "accuracy", None)
            if measured:
                accuracy.add_metric(labels, measured["min_cosine"])
        for (device, state), n in counts.items():
            loaded.add_metric([device, state], n)
        for device, value in self._budgets().items():
            budget.add_metric([device], value)
        return [loaded, size, device_size, accuracy, budget]
