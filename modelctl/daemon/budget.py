"""Memory budgets per device, and the choice of what to evict to make room.

Defaults, when no budget is configured: half the machine's RAM for cpu models (the rest
is for the processes that use them and the OS), and 90% of each GPU's memory for cuda
models (activations of a batch need the rest). On cuda a load must also fit in what
NVML reports free, since other processes share the GPU.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import psutil

from modelctl.daemon.devices import Nvml, display_device
from modelctl.errors import CacheManagementError
from modelctl.units import format_bytes

if TYPE_CHECKING:
    from modelctl.daemon.cache import Entry

CPU_SHARE = 0.5
CUDA_SHARE = 0.9


class Budgets:
    def __init__(self, max_cpu: int | None, max_cuda: int | None, nvml: Nvml) -> None:
        self.max_cpu = max_cpu
        self.max_cuda = max_cuda
        self.nvml = nvml

    def budget(self, device: str) -> int:
        if device == "cpu":
            if self.max_cpu is not None:
                return self.max_cpu
            return int(psutil.virtual_memory().total * CPU_SHARE)
        if self.max_cuda is not None:
            return self.max_cuda
        total = self.nvml.read(_index(device)).memory_total
        if total is None:
            torch = sys.modules["torch"]
            total = torch.cuda.get_device_properties(_index(device)).total_memory
        return int(total * CUDA_SHARE)

    def allocated(self, device: str) -> int | None:
        """Bytes the torch allocator holds on a cuda device (``None`` on cpu)."""
        if device == "cpu":
            return None
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available():
            return None
        torch.cuda.synchronize(_index(device))
        return int(torch.cuda.memory_allocated(_index(device)))

    def release_cached(self, device: str) -> None:
        """Return the allocator's cached blocks to the driver, so NVML sees them free."""
        if device == "cpu":
            return
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            with torch.cuda.device(_index(device)):
                torch.cuda.empty_cache()

    def choose_victims(self, device: str, needed: int, others: Sequence[Entry],
                       for_name: str) -> list[Entry]:
        """The fewest idle, unpinned models (least recently used first) whose eviction
        makes ``needed`` bytes fit; raise 409 naming the holders if none would."""
        budget = self.budget(device)
        used = sum(e.held_bytes for e in others)
        shortfall = used + needed - budget
        if device != "cpu":
            free = self.nvml.read(_index(device)).memory_free
            if free is not None:
                shortfall = max(shortfall, needed - free)
        if shortfall <= 0:
            return []
        idle = sorted((e for e in others
                       if e.state == "ready" and not e.pinned and e.leases == 0),
                      key=lambda e: e.last_used)
        victims: list[Entry] = []
        freed = 0
        for entry in idle:
            if freed >= shortfall:
                break
            victims.append(entry)
            freed += entry.held_bytes
        if freed >= shortfall:
            return victims
        holders = ", ".join(
            f"{e.name} ({format_bytes(e.held_bytes)}"
            f"{', pinned' if e.pinned else ''}{', in use' if e.leases else ''}"
            f"{', loading' if e.state == 'loading' else ''})"
            for e in sorted(others, key=lambda e: -e.held_bytes)) or "nothing"
        raise CacheManagementError(
            f"not enough memory on {display_device(device)} for {for_name} "
            f"(needs about {format_bytes(needed)}; budget {format_bytes(budget)}, "
            f"{format_bytes(used)} held by: {holders}); eject a model or raise the budget "
            f"(MODELCTL_MAX_{'CPU' if device == 'cpu' else 'CUDA'}_MEMORY)")


def _index(device: str) -> int:
    return int(device.split(":")[1]) if ":" in device else 0
