"""Memory budgets per device, and the choice of what to evict to make room.

Defaults, when no budget is configured:

- cpu: half the machine's RAM. Models are most of a model server's memory, but the
  processes that call it, the OS's page cache and the activations of a batch need the
  rest; half is what a person sharing the machine would pick, and unlike Marqo's fixed
  4 GB it scales with the machine.
- cuda: 90% of each GPU's memory (the budget is per GPU). GPUs run little else, and a
  batch's activations and the CUDA context need the remaining tenth.

Budgets are a policy; what is really free is a fact. A load must also fit in what the
device has left: on cuda what NVML reports free (other processes share the GPU) plus
what our own allocator holds cached; on cpu what the kernel reports available. When
either is short, idle models are evicted the same way.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import psutil

from modelctl.daemon.devices import Nvml, display_device
from modelctl.daemon.entry import EntryState
from modelctl.errors import CacheManagementError
from modelctl.units import format_bytes

if TYPE_CHECKING:
    from modelctl.daemon.entry import Entry

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

    def free(self, device: str) -> int | None:
        """What a new model could really use on ``device`` now, or ``None`` if unknown."""
        if device == "cpu":
            return int(psutil.virtual_memory().available)
        free = self.nvml.read(_index(device)).memory_free
        if free is None:
            return None
        # Blocks our allocator caches count as used for NVML but are ours to reuse.
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            index = _index(device)
            free += int(torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index))
        return free

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

    def shortfall(self, device: str, needed: int, held: Sequence[Entry]) -> int:
        """Bytes that must be freed on ``device`` before ``needed`` more fit (<= 0: fits).

        ``held`` are the models that count against the budget.
        """
        short = sum(e.held_bytes for e in held) + needed - self.budget(device)
        if needed > 0:
            free = self.free(device)
            if free is not None:
                short = max(short, needed - free)
        return short

    def choose_victims(self, device: str, needed: int, others: Sequence[Entry],
                       for_name: str, *, strict: bool = True) -> list[Entry]:
        """The fewest idle, unpinned models (least recently used first) whose eviction
        makes ``needed`` bytes fit.

        All or nothing: when evicting every candidate would still not make room, raise
        409 naming what holds the memory (``strict``), or return ``[]``, so that nothing
        is evicted for a load that cannot happen.
        """
        shortfall = self.shortfall(device, needed, others)
        if shortfall <= 0:
            return []
        idle = sorted((e for e in others
                       if e.state == EntryState.READY and not e.pinned and e.leases == 0),
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
        if not strict:
            return []
        raise CacheManagementError(self._no_room_message(device, needed, others, for_name))

    def _no_room_message(self, device: str, needed: int, others: Sequence[Entry],
                         for_name: str) -> str:
        budget = self.budget(device)
        used = sum(e.held_bytes for e in others)
        holders = ", ".join(
            f"{e.name} ({format_bytes(e.held_bytes)}"
            f"{', pinned' if e.pinned else ''}{', in use' if e.leases else ''}"
            f"{', loading' if e.state == EntryState.LOADING else ''})"
            for e in sorted(others, key=lambda e: -e.held_bytes)) or "no model"
        free = self.free(device)
        if used + needed <= budget and free is not None and needed > free:
            where = "free on the GPU (NVML)" if device != "cpu" else "of RAM available"
            limit = (f"only {format_bytes(free)} {where}; models of this daemon hold "
                     f"{format_bytes(used)}: {holders}")
            hint = "free memory outside modelctl, or eject a model"
        else:
            limit = (f"budget {format_bytes(budget)}, {format_bytes(used)} held by: "
                     f"{holders}")
            hint = (f"eject or unpin a model, or raise the budget "
                    f"(MODELCTL_MAX_{'CPU' if device == 'cpu' else 'CUDA'}_MEMORY)")
        return (f"not enough memory on {display_device(device)} for {for_name} (needs about "
                f"{format_bytes(needed)}; {limit}); only idle, unpinned models are evicted, "
                f"and evicting all of them would not make room; {hint}")


def _index(device: str) -> int:
    return int(device.split(":")[1]) if ":" in device else 0
