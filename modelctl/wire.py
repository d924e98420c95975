"""The native API's JSON bodies as types, shared by the daemon that builds them and the
client and CLI that read them, so mypy checks both ends of the socket.

Keys and meanings are docs/API.md's. Standard library only: the CLI and
``modelctl.client`` import it.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class Accuracy(TypedDict):
    """A variant's vectors against fp32's on the probe set, measured at load."""

    min_cosine: float
    mean_cosine: float


class OnnxGraph(TypedDict):
    """Engine onnx: the cached graph, and whether this load exported it."""

    graph: str
    digest: str
    exported: bool


class CacheEntry(TypedDict):
    """One loaded model on one device, in one variant (``/v1/models``)."""

    name: str
    canonical_name: str
    device: str
    family: str  # Marqo's type
    source: str  # where the weights come from: hub id, directory or open_clip arch
    engine: str  # what runs it here: "torch" or "onnx"
    marqo_engine: str | None  # what Marqo runs for the name when it differs ("onnx")
    precision: str  # "fp32", "fp16", "bf16" or "int8": what runs here
    accuracy: Accuracy | None  # None for fp32 torch, the reference
    warnings: list[str]
    onnx: OnnxGraph | None
    custom: bool
    properties: dict[str, Any]  # the modelProperties it was loaded with
    dimensions: int
    modalities: list[str]
    state: str  # "loading", "ready" or "ejecting"
    bytes: int | None
    device_bytes: int | None
    loaded_at: str | None
    last_used_at: str | None
    load_seconds: float | None
    requests: int
    in_flight: int
    pinned: bool
    keep_alive: float | None
    expires_at: str | None
    # On a cluster (docs/CLUSTER.md): where this copy is, and a load's every copy.
    node: NotRequired[str | None]
    node_id: NotRequired[str | None]
    replica: NotRequired[str]
    copies: NotRequired[list[CacheEntry]]
    # OpenAI's model-object fields, in front of the rest in GET /v1/models' items.
    id: NotRequired[str]
    object: NotRequired[str]
    created: NotRequired[int]
    owned_by: NotRequired[str]
    devices: NotRequired[list[str]]  # GET /v1/models/{id}: every device it is loaded on


class EjectedModel(TypedDict):
    """One model an eject, eviction or expiry freed, and what it gave back."""

    name: str
    canonical_name: str
    device: str
    engine: str
    precision: str
    bytes: int | None
    device_bytes: int | None
    bytes_freed: int | None
    rss_freed: int | None
    device_bytes_freed: int | None
    reason: str  # "eject", "evict" or "expire"
    node: NotRequired[str | None]  # on a cluster: where the copy was
    node_id: NotRequired[str | None]
    replica: NotRequired[str]


class EjectResult(TypedDict):
    """``DELETE /v1/models``."""

    ejected: list[EjectedModel]
    bytes_freed: int


class PreloadStatus(TypedDict):
    """One preloaded model in ``/v1/health``."""

    name: str
    device: str | None
    state: str  # "loading", "ready" or "failed"
    error: str | None


class Health(TypedDict):
    """``GET /v1/health``."""

    status: str
    version: str
    pid: int
    uptime_s: float
    torch_ready: bool
    socket: str
    http: str | None
    listeners: list[str]
    preload: list[PreloadStatus]
    cluster: NotRequired[bool]  # a `modelctl cluster` URL answered
    rss_bytes: int
    idle_rss_bytes: int | None  # the daemon's RSS with torch imported and no model


class CpuReport(TypedDict):
    """The cpu in ``/v1/devices``; ``budget`` and ``models_bytes`` come from the cache."""

    device: str
    cores: int | None
    usage_percent: float
    memory_total: int
    memory_used: int
    memory_available: int
    process_rss: int
    native_precisions: list[str]
    process_idle_rss: NotRequired[int | None]
    budget: NotRequired[int]
    models_bytes: NotRequired[int]
    threads: NotRequired[int]  # torch threads of the next cpu pass
    threads_pinned: NotRequired[int | None]


class CudaReport(TypedDict):
    """One GPU in ``/v1/devices``; what NVML or torch cannot tell is ``None``."""

    device: str
    index: int
    name: str | None
    memory_total: int | None
    memory_used: int | None
    memory_free: int | None
    utilization_percent: float | None
    torch_allocated: int | None
    torch_reserved: int | None
    native_precisions: list[str]
    budget: NotRequired[int]
    models_bytes: NotRequired[int]


class DevicesReport(TypedDict):
    """``GET /v1/devices``."""

    cpu: CpuReport
    cuda: list[CudaReport]
    cuda_available: bool
    cuda_error: str | None
    nodes: NotRequired[list[dict[str, Any]]]  # on a cluster: each node's cpu, GPUs, replicas


# -- Marqo's bodies (docs/MARQO.md), exactly as its clients read them ---------------------
class MarqoRoot(TypedDict):
    """``GET /``."""

    message: str
    version: str


class MarqoModel(TypedDict):
    model_name: str
    model_device: str


class MarqoModels(TypedDict):
    """``GET /models``: ready models only, one per device."""

    models: list[MarqoModel]


class MarqoEjected(TypedDict):
    """``DELETE /models`` on success."""

    result: str
    message: str


class MarqoCpu(TypedDict):
    """``GET /device/cpu``: every value a string, as Marqo formats it."""

    cpu_usage_percent: str
    memory_used_percent: str
    memory_used_gb: str


class MarqoCudaDevice(TypedDict):
    device_id: int
    device_name: str
    memory_used: str
    total_memory: str
    utilization: str
    memory_used_percent: str


class MarqoCuda(TypedDict):
    """``GET /device/cuda``."""

    cuda_devices: list[MarqoCudaDevice]
