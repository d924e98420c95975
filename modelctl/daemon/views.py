"""The bodies of the GET routes that read the daemon's state and take no parameters.

The Listener answers them itself (``FAST_GET``): they are what monitors poll, and what a
client asks a daemon it has just started (``/v1/health``, then ``ls``'s ``/v1/models``),
so they are served from the moment the socket is, before FastAPI is imported
(server.py). No web framework here, then. Each is also a FastAPI route (routes_marqo,
routes_native) calling the same function, so ``/openapi.json`` describes it and the
bytes cannot differ.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import psutil

from modelctl.daemon.devices import cpu_report, display_device
from modelctl.daemon.entry import EntryState
from modelctl.daemon.responses import dump_json, fast_get
from modelctl.units import parse_iso

if TYPE_CHECKING:
    from modelctl.daemon.state import DaemonState
    from modelctl.wire import CacheEntry, Health, MarqoCpu, MarqoModels, MarqoRoot


# -- Marqo's (docs/MARQO.md) ---------------------------------------------------------
@fast_get("/")
def root_body(state: DaemonState) -> bytes:
    body: MarqoRoot = {"message": "Welcome to modelctl, a Marqo-compatible model cache",
                       "version": state.version}
    return dump_json(body)


@fast_get("/models")
def marqo_models_body(state: DaemonState) -> bytes:
    body: MarqoModels = {"models": [
        {"model_name": e.name, "model_device": display_device(e.device)}
        for e in state.cache.list() if e.state == EntryState.READY]}
    return dump_json(body)


@fast_get("/device/cpu")
def cpu_body(state: DaemonState) -> bytes:
    vm = psutil.virtual_memory()
    body: MarqoCpu = {
        "cpu_usage_percent": f"{state.cpu.percent:.1f} %",
        "memory_used_percent": f"{vm.percent:.1f} %",
        "memory_used_gb": f"{vm.used / 1e9:.1f}",
    }
    return dump_json(body)


# -- native (docs/API.md) ------------------------------------------------------------
@fast_get("/v1/health")
def health_body(state: DaemonState) -> bytes:
    health: Health = {
        "status": "ok", "version": state.version, "pid": state.pid,
        "uptime_s": round(time.monotonic() - state.started, 3),
        "torch_ready": state.torch_is_ready, "socket": str(state.settings.socket_path),
        "http": state.http_urls[0] if state.http_urls else None,
        "listeners": list(state.http_urls),
        "preload": state.preload_status,
        "rss_bytes": cpu_report(state.cpu)["process_rss"], "idle_rss_bytes": state.idle_rss,
    }
    return dump_json(health)


@fast_get("/v1/models")
def models_body(state: DaemonState) -> bytes:
    return dump_json({"object": "list", "data": [
        openai_model(e.describe()) for e in state.cache.list()]})


def openai_model(entry: CacheEntry) -> dict[str, Any]:
    """A cache entry as an item of OpenAI's model list, with modelctl's fields after.

    ``id`` is the name the model was loaded by (what ``/v1/embeddings`` takes); the
    same model on two devices is two items with one ``id``.
    """
    loaded = entry.get("loaded_at")
    created = int(parse_iso(loaded).timestamp()) if loaded else 0
    canonical = str(entry.get("canonical_name") or "")
    owner = canonical.split("/", 1)[0] if canonical.count("/") == 1 else "modelctl"
    return {"id": entry["name"], "object": "model", "created": created, "owned_by": owner,
            **entry}
