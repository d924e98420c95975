"""Device strings, and what the machine says about its devices (psutil, NVML, torch).

Probes never fail a report: a field the hardware or driver cannot give is ``None``
(gpustat's rule). torch is imported only once the daemon's warm-up has done it.
"""

from __future__ import annotations

import re
import sys
import threading
from dataclasses import dataclass
from typing import Any

import psutil

from modelctl.errors import HardwareCompatibilityError, InvalidArgument
from modelctl.wire import CpuReport, CudaReport

_DEVICE_RE = re.compile(r"^\s*(cpu|cuda)(?::(\d{1,3}))?\s*$", re.IGNORECASE)
NO_CUDA_MESSAGE = "CUDA is not available on this instance"


def parse_device(text: str) -> str:
    """Canonical device: ``cpu``, ``cuda:N``. ``CUDA`` and ``cuda:0`` are the same device."""
    match = _DEVICE_RE.match(text or "")
    if not match:
        raise InvalidArgument(f"invalid device {text!r}: use cpu, cuda or cuda:N")
    kind, index = match.group(1).lower(), match.group(2)
    if kind == "cpu":
        if index is not None:
            raise InvalidArgument(f"invalid device {text!r}: cpu takes no index")
        return "cpu"
    return f"cuda:{int(index or 0)}"


def display_device(device: str) -> str:
    """What Marqo calls a device in its answers: ``cuda:0`` is shown as ``cuda``."""
    return "cuda" if device == "cuda:0" else device


def cuda_device_count() -> int:
    """Visible CUDA devices as torch sees them (honours ``CUDA_VISIBLE_DEVICES``)."""
    import torch  # already imported by the daemon's warm-up; this is a dict lookup

    try:
        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # a broken driver install is "no CUDA", not a crash
        return 0


def check_device_present(device: str) -> None:
    """Raise ``HardwareCompatibilityError`` for a cuda device this machine lacks."""
    if device == "cpu":
        return
    count = cuda_device_count()
    if count == 0:
        raise HardwareCompatibilityError(NO_CUDA_MESSAGE)
    index = int(device.split(":")[1])
    if index >= count:
        raise HardwareCompatibilityError(
            f"device {device} is not present: this machine has {count} CUDA device(s), "
            f"cuda:0 to cuda:{count - 1}")


class CpuSampler:
    """Keeps a fresh CPU-usage sample, so ``/device/cpu`` answers at once.

    Marqo blocks each request for a second in ``psutil.cpu_percent(interval=1)``; a
    background thread sampling once a second gives the same number without the wait.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.percent = psutil.cpu_percent(interval=None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.percent = psutil.cpu_percent(interval=None)


@dataclass
class GpuReading:
    index: int
    name: str | None
    memory_total: int | None
    memory_used: int | None
    memory_free: int | None
    utilization_percent: float | None


class Nvml:
    """NVML behind one lock; each query that fails gives ``None`` for that field."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ok: bool | None = None
        self._pynvml: Any = None

    def _init(self) -> bool:
        if self._ok is None:
            try:
                import pynvml

                pynvml.nvmlInit()
                self._pynvml = pynvml
                self._ok = True
            except Exception:
                self._ok = False
        return self._ok

    def read(self, torch_index: int) -> GpuReading:
        """NVML's view of the GPU torch calls ``cuda:torch_index``."""
        with self._lock:
            if not self._init():
                return GpuReading(torch_index, None, None, None, None, None)
            nv = self._pynvml
            handle = self._handle(torch_index)
            if handle is None:
                return GpuReading(torch_index, None, None, None, None, None)
            name = _query(lambda: nv.nvmlDeviceGetName(handle))
            if isinstance(name, bytes):
                name = name.decode()
            mem = _query(lambda: nv.nvmlDeviceGetMemoryInfo(handle))
            util = _query(lambda: nv.nvmlDeviceGetUtilizationRates(handle))
            return GpuReading(
                torch_index, name,
                int(mem.total) if mem is not None else None,
                int(mem.used) if mem is not None else None,
                int(mem.free) if mem is not None else None,
                float(util.gpu) if util is not None else None)

    def _handle(self, torch_index: int) -> Any:
        nv = self._pynvml
        # CUDA_VISIBLE_DEVICES renumbers devices for torch but not for NVML: map the
        # torch index to the GPU's UUID through torch, then ask NVML for that UUID.
        torch = sys.modules.get("torch")
        uuid = None
        if torch is not None:
            props = _query(lambda: torch.cuda.get_device_properties(torch_index))
            raw = getattr(props, "uuid", None) if props is not None else None
            if raw is not None:
                uuid = str(raw)
                uuid = uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"
        if uuid is not None:
            handle = _query(lambda: nv.nvmlDeviceGetHandleByUUID(uuid))
            if handle is not None:
                return handle
        return _query(lambda: nv.nvmlDeviceGetHandleByIndex(torch_index))


def _query(fn: Any) -> Any:
    try:
        return fn()
    except Exception:
        return None


def torch_memory(index: int) -> tuple[int | None, int | None]:
    """(allocated, reserved) bytes of this process's torch allocator on ``cuda:index``."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None, None
    return (_query(lambda: int(torch.cuda.memory_allocated(index))),
            _query(lambda: int(torch.cuda.memory_reserved(index))))


def cpu_report(sampler: CpuSampler) -> CpuReport:
    vm = psutil.virtual_memory()
    return {
        "device": "cpu",
        "cores": psutil.cpu_count(),
        "usage_percent": sampler.percent,
        "memory_total": int(vm.total),
        "memory_used": int(vm.used),
        "memory_available": int(vm.available),
        "process_rss": int(psutil.Process().memory_info().rss),
    }


def cuda_reports(nvml: Nvml) -> list[CudaReport]:
    reports: list[CudaReport] = []
    for index in range(cuda_device_count()):
        reading = nvml.read(index)
        allocated, reserved = torch_memory(index)
        name = reading.name
        total = reading.memory_total
        if name is None or total is None:
            torch = sys.modules["torch"]
            props = _query(lambda i=index, t=torch: t.cuda.get_device_properties(i))
            name = name or getattr(props, "name", None)
            total = total or getattr(props, "total_memory", None)
        reports.append({
            "device": f"cuda:{index}", "index": index, "name": name,
            "memory_total": total, "memory_used": reading.memory_used,
            "memory_free": reading.memory_free,
            "utilization_percent": reading.utilization_percent,
            "torch_allocated": allocated, "torch_reserved": reserved,
        })
    return reports
