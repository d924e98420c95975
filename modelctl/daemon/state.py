"""The daemon's shared state: settings, the cache, devices, metrics and torch's warm-up.

torch takes seconds to import, so the daemon answers ``ls`` and ``/device/cpu`` before
it is ready; anything that needs torch awaits ``torch_ready()`` first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

from modelctl import __version__
from modelctl.config import PreloadItem, Settings, set_compute_environment
from modelctl.daemon.budget import Budgets
from modelctl.daemon.cache import ModelCache
from modelctl.daemon.devices import CpuSampler, Nvml, cuda_device_count, parse_device
from modelctl.daemon.entry import Entry
from modelctl.daemon.images import PixelGate
from modelctl.daemon.loaders import ModelSpec, precision, spec_for
from modelctl.daemon.metrics import Metrics
from modelctl.daemon.threads import ThreadGovernor
from modelctl.daemon.warmup import ImportThread
from modelctl.errors import ApiError
from modelctl.registry import lookup
from modelctl.wire import PreloadStatus

log = logging.getLogger("modelctl.daemon")

# Present wherever an NVIDIA GPU can be used (the driver's device nodes; WSL's /dev/dxg).
_NVIDIA_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia/gpus",
                        "/dev/dxg")


def _import_torch() -> None:
    set_compute_environment()  # OpenMP reads it once, when torch loads it
    # Loader libraries too: the first load should not pay for them.
    import open_clip  # noqa: F401
    import sentence_transformers  # noqa: F401
    import torch  # noqa: F401  (the import itself is the work)


def _own_rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


class DaemonState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.version = __version__
        self.pid = os.getpid()
        self.started = time.monotonic()
        self.metrics = Metrics()
        self.nvml = Nvml()
        self.cpu = CpuSampler()
        self.budgets = Budgets(settings.max_cpu_memory, settings.max_cuda_memory, self.nvml)
        self.cache = ModelCache(self.budgets, self.metrics, offline=settings.offline,
                                default_keep_alive=settings.keep_alive,
                                torch_ready=self.torch_ready, cache_dir=settings.cache_dir,
                                threads=ThreadGovernor(settings.threads))
        self._torch: asyncio.Future[None] | None = None
        self.metrics.watch(self.cache.list, self.known_budgets)  # calls known_budgets now
        self.pixel_gate = PixelGate(settings.limits.max_inflight_pixels)
        self.preload_status: list[PreloadStatus] = []
        self.http_urls: list[str] = []
        self.open_listener: Callable[[str, int, str | None], Awaitable[str]] | None = None
        self.close_listener: Callable[[str], Awaitable[None]] | None = None
        self._said_warming_up = False
        self.idle_rss: int | None = None  # RSS once torch is imported, before any model

    def start(self, imports: ImportThread | None = None) -> None:
        """Start background work; call once the socket is bound and the loop runs.

        torch is imported in ``imports``, after what was submitted to it before (the
        daemon's web app, server.py), else in a thread of its own.
        """
        self.cpu.start()
        self.cache.start()
        imports = imports or ImportThread("torch-import")
        self._torch = imports.submit(_import_torch)
        self._torch.add_done_callback(self._torch_done)
        imports.start()
        if self.settings.preload:
            asyncio.get_running_loop().create_task(self._preload(self.settings.preload))

    def _torch_done(self, future: asyncio.Future[None]) -> None:
        if future.cancelled():
            return
        if future.exception() is not None:
            log.error("importing torch failed: %s", future.exception())
        else:
            # Loads wait for torch, so no model is in memory yet: this is the daemon's own
            # footprint, which `devices` and `daemon status` show beside the models'.
            self.idle_rss = _own_rss()
            log.info("torch ready after %.2fs", time.monotonic() - self.started)

    @property
    def torch_is_ready(self) -> bool:
        return self._torch is not None and self._torch.done() and not self._torch.exception()

    async def torch_ready(self) -> None:
        assert self._torch is not None, "DaemonState.start() was not called"
        if not self._torch.done() and not self._said_warming_up:
            # Said once: the first request that needs torch may wait seconds for it.
            self._said_warming_up = True
            log.info("a request waits for torch to finish importing (%.1fs since start)",
                     time.monotonic() - self.started)
        await asyncio.shield(self._torch)

    def default_device(self) -> str:
        if self.settings.default_device:
            return parse_device(self.settings.default_device)
        return "cuda:0" if cuda_device_count() else "cpu"

    def known_budgets(self) -> dict[str, int]:
        devices = {"cpu"} | {e.device for e in self.cache.list()}
        if self.torch_is_ready:
            devices |= {f"cuda:{i}" for i in range(cuda_device_count())}
        out = {}
        for device in sorted(devices):
            try:
                out[device] = self.budgets.budget(device)
            except Exception:  # a GPU that vanished must not break /metrics
                continue
        return out

    def variant(self, spec: ModelSpec, engine: str | None = None,
                precision_: str | None = None) -> ModelSpec:
        """``spec`` as the variant asked for; what is not given, Marqo's precision for
        it (an ``fp16/*`` name, ``properties.precision``), else the daemon's default."""
        engine, chosen = precision.choose(engine, precision_ or precision.marqo_precision(spec),
                                          self.settings.engine, self.settings.precision)
        return replace(spec, engine=engine, precision=chosen)

    def spec_name(self, name: str) -> str:
        """The cache key name for what a client calls ``name`` (loaded name or alias)."""
        for entry in self.cache.list():
            if name in (entry.name, entry.spec.name):
                return entry.spec.name
        spec = lookup(name)
        return spec.name if spec is not None else name

    def loaded_entries(self, name: str) -> list[Entry]:
        return self.cache.find(self.spec_name(name))

    def _device_before_torch(self) -> str | None:
        """The default device if it is known without torch, else ``None``.

        Preloads enter the cache (and ``ls``, as loading) at once when their device is
        known; whether CUDA works needs torch, unless this machine has no NVIDIA driver.
        """
        if self.settings.default_device:
            return parse_device(self.settings.default_device)
        if self.torch_is_ready:
            return self.default_device()
        if not any(Path(p).exists() for p in _NVIDIA_DEVICE_FILES):
            return "cpu"
        return None

    async def _preload(self, items: tuple[PreloadItem, ...]) -> None:
        # Every item is in preload_status (/v1/health) before the first load starts.
        statuses: list[PreloadStatus] = [
            {"name": item.name, "device": item.device, "state": "loading", "error": None}
            for item in items]
        self.preload_status.extend(statuses)
        await asyncio.gather(*(self._preload_one(item, status)
                               for item, status in zip(items, statuses, strict=True)))

    async def _preload_one(self, item: PreloadItem, status: PreloadStatus) -> None:
        """Load one preload item; a failure is logged and kept in ``status``, never fatal."""
        try:
            spec = self.variant(spec_for(item.name, item.properties, local_paths=True))
            device = parse_device(item.device) if item.device else self._device_before_torch()
            if device is None:
                await self.torch_ready()
                device = self.default_device()
            status["device"] = device
            await self.cache.load(spec, device, name=item.name)
            status["state"] = "ready"
        except ApiError as exc:
            status.update({"state": "failed", "error": exc.message})
            log.error("preloading %s failed: %s", item.name, exc.message)
        except Exception as exc:
            status.update({"state": "failed", "error": f"{type(exc).__name__}: {exc}"})
            log.exception("preloading %s failed", item.name)

    async def close(self) -> None:
        self.cpu.stop()
        await self.cache.close()

