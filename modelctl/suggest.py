""""Did you mean ...?": the names closest to a word that matched none (stdlib only).

Shared by the CLI (command names) and the registry (model names). A case-insensitive
match comes first; then near spellings, as difflib scores them.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_names(word: str, names: Iterable[str], limit: int = 3) -> list[str]:
    """The names most like ``word``, best first; ``[]`` when none is close."""
    by_lower: dict[str, str] = {}
    for name in names:
        by_lower.setdefault(name.lower(), name)
    lowered = word.lower()
    if lowered in by_lower:
        return [by_lower[lowered]]
    found = difflib.get_close_matches(lowered, list(by_lower), n=limit, cutoff=0.6)
    if not found:
        # "minilm-l6-v2" for "sentence-transformers/all-MiniLM-L6-v2": the last part alone.
        tails = {name.rsplit("/", 1)[-1]: name for name in by_lower}
        found = [tails[t] for t in difflib.get_close_matches(
            lowered.rsplit("/", 1)[-1], list(tails), n=limit, cutoff=0.75)]
    return [by_lower[name] for name in found]


def did_you_mean(word: str, names: Iterable[str]) -> str:
    """``" (did you mean 'X'?)"``-style text to append, or ``""``."""
    found = close_names(word, names)
    # "hf/all-MiniLM-L6-v2" beside "all-MiniLM-L6-v2" is the same model twice.
    found = [n for n in found if not any(n != m and n.endswith("/" + m) for m in found)]
    if not found:
        return ""
    return "did you mean " + " or ".join(repr(name) for name in found) + "?"
