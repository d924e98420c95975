"""Cutting a batch of texts into forward passes that waste little on padding.

Every text in a forward pass is padded to the longest one in it, so a pass over 32
texts of 5 to 40 words computes almost twice the tokens the texts hold. Sorted by
length and cut where the lengths jump, the same texts need a few more (smaller)
passes but far less padding. Each pass also has a fixed cost (Python dispatch through
the layers, kernel launches on a GPU), so the cut minimises

    sum over passes of (overhead + texts in the pass * longest text in the pass)

by dynamic programming over the sorted lengths (exact, O(n * max_size)). Lengths are
characters, a proxy for tokens good enough to group texts by (the library sorts by the
same). On MiniLM (cpu), groups of 32 mixed sentences run 1.27x faster cut this way
than as one pass each, and reach 0.88x the speed of the whole corpus sorted at once.
"""

from __future__ import annotations

from collections.abc import Sequence

# Measured on MiniLM (cpu, 2 threads, sentences of 5 to 40 words cut into random groups
# of 32): throughput is flat from 160 to 320 characters of overhead per pass and falls
# off on both sides (no overhead: 0.55x; one pass per group: 0.8x). A pass's fixed cost
# is Python dispatch through the layers and small, inefficient matrix products.
# On a GPU a pass costs far more than its tokens, so there passes stay large.
CPU_OVERHEAD_CHARS = 256
CUDA_OVERHEAD_CHARS = 4096
CPU_MAX_PASS = 32
CUDA_MAX_PASS = 128


def pass_limits(device: str) -> tuple[int, int]:
    """(overhead in characters, most texts per pass) for ``device``."""
    if device.startswith("cuda"):
        return CUDA_OVERHEAD_CHARS, CUDA_MAX_PASS
    return CPU_OVERHEAD_CHARS, CPU_MAX_PASS


def plan_passes(lengths: Sequence[int], overhead: int, max_size: int) -> list[tuple[int, int]]:
    """``[start, end)`` slices of ``lengths`` (sorted ascending), one per forward pass."""
    n = len(lengths)
    best = [0] * (n + 1)  # best[j]: least cost of passes covering lengths[:j]
    cut = [0] * (n + 1)  # cut[j]: where the last of those passes starts
    for end in range(1, n + 1):
        longest = lengths[end - 1]
        best_cost, best_start = -1, end - 1
        for start in range(max(0, end - max_size), end):
            cost = best[start] + overhead + (end - start) * longest
            if best_cost < 0 or cost < best_cost:
                best_cost, best_start = cost, start
        best[end], cut[end] = best_cost, best_start
    passes: list[tuple[int, int]] = []
    end = n
    while end > 0:
        passes.append((cut[end], end))
        end = cut[end]
    return passes[::-1]
