"""Cutting a batch of texts into forward passes that waste little on padding.

Every text in a forward pass is padded to the longest one in it, so a pass over 32
texts of 5 to 40 words computes almost twice the tokens the texts hold. Sorted by
length and cut where the lengths jump, the same texts need a few more (smaller)
passes but far less padding. Each pass also has a fixed cost (Python dispatch through
the layers, small and inefficient matrix products, kernel launches on a GPU), so the
cut minimises

    sum over passes of (overhead + texts in the pass * longest text in the pass)

by dynamic programming over the sorted lengths (exact, O(n * max_size)), lengths in
tokens. On MiniLM (cpu, 2 threads), 64 mixed sentences at a time run at 0.95x the
speed of the whole corpus sorted by characters and cut in passes of 32 (what
``SentenceTransformer.encode`` does with everything at once); one pass of 32 per
request would run at 0.8x, and cutting by characters instead of tokens at 0.92x.
"""

from __future__ import annotations

from collections.abc import Sequence

# A pass's fixed cost in tokens of work. MiniLM on cpu, one thread: ~3.9 ms before the
# first token and ~0.24 ms a token, so ~16 tokens; with two threads the tokens get
# cheaper and the dispatch does not, and the measured best lies between 40 and 130.
# On a GPU a pass costs far more than its tokens: there passes stay large.
CPU_OVERHEAD_TOKENS = 64
CUDA_OVERHEAD_TOKENS = 1024
CPU_MAX_PASS = 32
CUDA_MAX_PASS = 128


def pass_limits(device: str) -> tuple[int, int]:
    """(overhead in tokens, most texts per pass) for ``device``."""
    if device.startswith("cuda"):
        return CUDA_OVERHEAD_TOKENS, CUDA_MAX_PASS
    return CPU_OVERHEAD_TOKENS, CPU_MAX_PASS


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
