"""Marqo's model-cache and device routes, exactly as docs/MARQO.md describes them."""

from __future__ import annotations

import sys
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from modelctl.daemon import views
from modelctl.daemon.devices import (
    NO_CUDA_MESSAGE,
    cuda_device_count,
    display_device,
    parse_device,
    torch_memory,
)
from modelctl.daemon.routing import daemon_state, json_body, json_bytes
from modelctl.daemon.state import DaemonState
from modelctl.errors import (
    HardwareCompatibilityError,
    InvalidArgument,
    ModelNotInCache,
    Unprocessable,
)
from modelctl.wire import (
    MarqoCuda,
    MarqoCudaDevice,
    MarqoEjected,
)

router = APIRouter(tags=["marqo"])


@router.get("/", summary="Version (read by Marqo's 3.x client)")
async def root(request: Request) -> Response:
    return json_body(views.root_body(daemon_state(request)))


@router.get("/models", summary="Loaded models (Marqo)")
async def get_models(request: Request) -> Response:
    return json_body(views.marqo_models_body(daemon_state(request)))


@router.delete("/models", summary="Eject a model (Marqo)", responses={
    404: {"description": "not loaded on that device"},
    422: {"description": "model_name missing"}})
async def delete_models(request: Request,
                        model_name: str | None = Query(None),
                        model_device: str | None = Query(None)) -> Response:
    if model_name is None:
        raise Unprocessable.missing("query", "model_name")
    state = daemon_state(request)
    if model_device is None:
        return await _eject_everywhere(state, model_name)
    not_found = ModelNotInCache(
        f"The model_name `{model_name}` device `{model_device}` is not cached or found")
    try:
        device = parse_device(model_device)
    except InvalidArgument:
        raise not_found from None  # Marqo does not validate the device here: 404
    if not model_name:
        raise not_found
    try:
        await state.cache.eject(state.spec_name(model_name), device)
    except ModelNotInCache:
        raise not_found from None
    body: MarqoEjected = {"result": "success",
                          "message": eject_message(model_name, [model_device])}
    return json_bytes(body)


async def _eject_everywhere(state: DaemonState, model_name: str) -> Response:
    not_found = ModelNotInCache(f"The model_name `{model_name}` is not cached or found")
    if not model_name:
        raise not_found
    try:
        ejected = await state.cache.eject(state.spec_name(model_name), None)
    except ModelNotInCache:
        raise not_found from None
    devices = [display_device(e["device"]) for e in ejected]
    body: MarqoEjected = {"result": "success", "message": eject_message(model_name, devices)}
    return json_bytes(body)


def eject_message(model_name: str, devices: list[str]) -> str:
    """Marqo's success message; for several devices, modelctl's plural form (docs/MARQO.md)."""
    where = (f"device `{devices[0]}`" if len(devices) == 1
             else "devices " + ", ".join(f"`{d}`" for d in devices))
    return f"successfully eject model_name `{model_name}` from {where}"


@router.get("/device/cpu", summary="CPU and memory use (Marqo)")
async def device_cpu(request: Request) -> Response:
    return json_body(views.cpu_body(daemon_state(request)))


@router.get("/device/cuda", summary="CUDA devices (Marqo)", responses={
    400: {"description": "no CUDA on this machine"}})
async def device_cuda(request: Request) -> Response:
    state = daemon_state(request)
    await state.torch_ready()
    count = cuda_device_count()
    if count == 0:
        raise HardwareCompatibilityError(NO_CUDA_MESSAGE)
    torch: Any = sys.modules["torch"]
    devices: list[MarqoCudaDevice] = []
    for index in range(count):
        reading = state.nvml.read(index)
        allocated, _ = torch_memory(index)
        total = torch.cuda.get_device_properties(index).total_memory
        name = reading.name or torch.cuda.get_device_name(index)
        util = reading.utilization_percent
        devices.append({
            "device_id": index,
            "device_name": name,
            "memory_used": f"{(allocated or 0) / 2**30:.1f} GiB",
            "total_memory": f"{total / 2**30:.1f} GiB",
            "utilization": f"{util:.1f} %" if util is not None else "N/A",
            "memory_used_percent": f"{(allocated or 0) / total * 100:.1f} %",
        })
    body: MarqoCuda = {"cuda_devices": devices}
    return json_bytes(body)
