"""The native ``/v1`` API (docs/API.md): models, registry, devices, health, listeners."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from modelctl.daemon import views
from modelctl.daemon.devices import cpu_report, cuda_device_count, cuda_reports, parse_device
from modelctl.daemon.loaders import offline_available, spec_for
from modelctl.daemon.loaders import precision as precision_module
from modelctl.daemon.metrics import CONTENT_TYPE
from modelctl.daemon.routing import daemon_state, json_body, json_bytes, via_socket
from modelctl.errors import InvalidArgument, ModelNotInCache, NotFound
from modelctl.registry import REGISTRY, list_registry
from modelctl.units import parse_keep_alive
from modelctl.wire import DevicesReport, EjectResult

router = APIRouter(prefix="/v1", tags=["native"])
metrics_router = APIRouter(tags=["native"])


def _keep_alive(value: float | str | None) -> float | None | str:
    """``"default"`` when not given; seconds, or ``None`` for never."""
    if value is None:
        return "default"
    try:
        return parse_keep_alive(value)
    except ValueError as exc:
        raise InvalidArgument(f"keep_alive: {exc}") from None


class LoadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=512, description="registry name, alias, "
                      "custom name (with properties) or local directory (socket only)")
    device: str | None = Field(None, max_length=32, description="cpu, cuda or cuda:N")
    pin: bool | None = None
    keep_alive: float | str | None = Field(None, description="seconds, or 30s/10m/1h; "
                                           "-1 never")
    properties: dict[str, Any] | None = Field(None, description="Marqo's modelProperties")
    precision: str | None = Field(None, max_length=8, description="fp32 (default), fp16 "
                                  "(cuda), bf16, int8 (engine onnx)")
    engine: str | None = Field(None, max_length=8, description="torch (default) or onnx")


class UpdateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=512)
    device: str | None = Field(None, max_length=32)
    pin: bool | None = None
    keep_alive: float | str | None = None


class ListenerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    port: int = Field(ge=0, le=65535)
    host: str = Field("127.0.0.1", max_length=255)
    api_key: str | None = Field(None, max_length=1024)


@router.get("/health", summary="Liveness and version")
async def health(request: Request) -> Response:
    return json_body(views.health_body(daemon_state(request)))


@router.get("/models", summary="Loaded models: OpenAI's model list, with full detail")
async def list_models(request: Request) -> Response:
    return json_body(views.models_body(daemon_state(request)))


@router.get("/models/{model_id:path}", summary="One loaded model, as OpenAI's model object")
async def get_model(request: Request, model_id: str) -> Response:
    state = daemon_state(request)
    entries = state.loaded_entries(model_id)
    if not entries:
        raise ModelNotInCache(f"The model_name `{model_id}` is not cached or found")
    # The copy used last stands for the model; `devices` lists every copy's device.
    entry = max(entries, key=lambda e: e.last_used)
    # `id` is the id asked for (an alias or the canonical name), as OpenAI's API answers.
    return json_bytes({**views.openai_model(entry.describe()), "id": model_id,
                       "devices": sorted(e.device for e in entries)})


@router.post("/models", summary="Load a model (waits for the load; single-flight)")
async def load_model(request: Request, body: LoadRequest) -> Response:
    state = daemon_state(request)
    on_socket = via_socket(request)
    spec = state.variant(spec_for(body.name, body.properties, local_paths=on_socket,
                                  url_downloads=on_socket or state.settings.allow_url_downloads),
                         body.engine, body.precision)
    if body.device:
        device = parse_device(body.device)
    else:
        await state.torch_ready()
        device = state.default_device()
    entry = await state.cache.load(spec, device, name=body.name, pin=body.pin,
                                   keep_alive=_keep_alive(body.keep_alive))
    return json_bytes(entry.describe())


@router.patch("/models", summary="Pin, unpin or change keep-alive of a loaded model")
async def update_model(request: Request, body: UpdateRequest) -> Response:
    state = daemon_state(request)
    device = parse_device(body.device) if body.device else None
    entries = [e for e in state.loaded_entries(body.name)
               if device is None or e.device == device]
    if not entries:
        raise ModelNotInCache(f"The model_name `{body.name}` is not cached or found")
    keep_alive = _keep_alive(body.keep_alive)
    for entry in entries:
        if body.pin is not None:
            entry.pinned = body.pin
        if keep_alive != "default":
            entry.keep_alive = keep_alive  # type: ignore[assignment]
    state.cache.wake()
    return json_bytes({"models": [e.describe() for e in entries]})


@router.delete("/models", summary="Eject a model (or all) and report bytes freed")
async def eject_model(request: Request, name: str | None = Query(None, max_length=512),
                      device: str | None = Query(None, max_length=32),
                      all: bool = Query(False), force: bool = Query(False),
                      precision: str | None = Query(None, max_length=8),
                      engine: str | None = Query(None, max_length=8)) -> Response:
    """Every variant of ``name`` unless ``precision``/``engine`` narrow it."""
    state = daemon_state(request)
    canonical_device = parse_device(device) if device else None
    if precision is not None or engine is not None:
        precision_module.choose(engine, precision, "torch", "fp32")  # validates both
    if all:
        ejected = await state.cache.eject_all(canonical_device, force=force)
    elif not name:
        raise InvalidArgument("name is required (or all=true)")
    else:
        ejected = await state.cache.eject(state.spec_name(name), canonical_device, force=force,
                                          engine=engine, precision=precision)
    result: EjectResult = {"ejected": ejected,
                           "bytes_freed": sum(e["bytes_freed"] or 0 for e in ejected)}
    return json_bytes(result)


@router.get("/registry", summary="Known model names")
async def registry(request: Request, offline: bool = Query(
        True, description="say whether each model's weights are on this machine "
        "(false: faster, available_offline is null)")) -> Response:
    rows = list_registry()
    if not offline:
        return json_bytes({"models": [{**row, "available_offline": None, "weights": None}
                                      for row in rows]})

    def with_offline() -> list[dict[str, Any]]:
        for row in rows:
            row["available_offline"], row["weights"] = offline_available(REGISTRY[row["name"]])
        return rows

    return json_bytes({"models": await asyncio.to_thread(with_offline)})


@router.get("/devices", summary="cpu and cuda devices: memory, use, budgets")
async def devices(request: Request) -> Response:
    state = daemon_state(request)
    held: dict[str, int] = {}
    for entry in state.cache.list():
        held[entry.device] = held.get(entry.device, 0) + entry.held_bytes
    cpu = cpu_report(state.cpu)
    cpu.update({"budget": state.budgets.budget("cpu"), "models_bytes": held.get("cpu", 0),
                "threads": state.cache.threads.threads(),
                "threads_pinned": state.settings.threads,
                "process_idle_rss": state.idle_rss})
    await state.torch_ready()
    cuda = await asyncio.to_thread(cuda_reports, state.nvml)
    for report in cuda:
        report.update({"budget": state.budgets.budget(report["device"]),
                       "models_bytes": held.get(report["device"], 0)})
    available = cuda_device_count() > 0
    answer: DevicesReport = {"cpu": cpu, "cuda": cuda, "cuda_available": available,
                             "cuda_error": None if available else
                             "CUDA is not available on this instance"}
    return json_bytes(answer)


@router.post("/listeners", summary="Open a TCP listener on the running daemon (socket only)")
async def add_listener(request: Request, body: ListenerRequest) -> Response:
    state = daemon_state(request)
    if not via_socket(request):
        raise InvalidArgument("listeners can be opened only over the Unix socket")
    if state.open_listener is None:
        raise InvalidArgument("this daemon cannot open listeners")
    url = await state.open_listener(body.host, body.port, body.api_key)
    return json_bytes({"url": url})


@router.delete("/listeners", summary="Close a TCP listener; the daemon keeps running "
                                    "(socket only)")
async def close_listener(request: Request, port: int = Query(ge=1, le=65535),
                         host: str | None = Query(None, max_length=255)) -> Response:
    state = daemon_state(request)
    if not via_socket(request):
        raise InvalidArgument("listeners can be closed only over the Unix socket")
    if state.close_listener is None:
        raise InvalidArgument("this daemon cannot close listeners")
    matching = [url for url in state.http_urls if urlsplit(url).port == port
                and (host is None or urlsplit(url).hostname == host.strip("[]"))]
    if not matching:
        where = f"{host}:{port}" if host else f"port {port}"
        raise NotFound(f"the daemon has no listener on {where}; it listens on "
                       f"{', '.join(state.http_urls) or 'its Unix socket only'} "
                       "(`modelctl daemon status` lists its listeners)")
    for url in matching:
        await state.close_listener(url)
    return json_bytes({"closed": matching, "listeners": list(state.http_urls)})


@metrics_router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> Response:
    return Response(daemon_state(request).metrics.render(), media_type=CONTENT_TYPE)
