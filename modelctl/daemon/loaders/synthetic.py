"""Marqo's models without weights: ``random`` (seeded random vectors) and ``no_model``.

``random`` is Marqo's test model: each call seeds numpy's global generator with a hash
of its input and draws ``rand(n, dimensions)``, uniform in [0, 1) and never normalised.
A call is one request: a list's seed is the integer mean of its items' hashes, so the
vectors of a text depend on the texts sent with it, exactly as in Marqo. The route
calls ``encode_request`` directly instead of batching requests together.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from modelctl.daemon.loaders.base import LoadedModel
from modelctl.errors import InvalidArgument

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

# np.random.seed is process-global: two requests must not interleave seed and draw.
_SEED_LOCK = threading.Lock()


def content_hash(item: str | Image) -> int:
    """Marqo's hash of one text, or of an image's mean pixel value (as its ``str``)."""
    if isinstance(item, str):
        data = item
    else:
        pixels: list[Any] = list(item.getdata())
        if isinstance(pixels[0], int):
            mean = functools.reduce(lambda a, b: a + b, pixels) / len(pixels)
        else:
            channel_means = [sum(p) / len(p) for p in pixels]
            mean = functools.reduce(lambda a, b: a + b, channel_means) / len(pixels)
        data = str(mean)
    return int(hashlib.sha256(data.encode("utf-8")).hexdigest(), 16) % 10**8


def random_vectors(items: list[Any], dimensions: int, *, single: bool) -> np.ndarray:
    """Marqo's ``Random.encode``: one seed for the whole call."""
    hashes = [content_hash(item) for item in items]
    seed = hashes[0] if single else sum(hashes) // len(hashes)
    with _SEED_LOCK:
        np.random.seed(seed)
        return np.random.rand(len(items), dimensions)


class RandomModel(LoadedModel):
    whole_request = True  # the route sends each request as one call (see module doc)

    @property
    def dimensions(self) -> int:
        return self.spec.dimensions

    def modules(self) -> list[torch.nn.Module]:
        return []

    def encode_request(self, items: list[Any], single: bool) -> np.ndarray:
        return random_vectors(items, self.dimensions, single=single).astype(np.float32)

    def encode_texts(self, texts: list[str], normalize: bool | None
                     ) -> tuple[np.ndarray, list[int]]:
        return self.encode_request(texts, single=False), [0] * len(texts)

    def encode_images(self, images: list[Image], normalize: bool | None) -> np.ndarray:
        return self.encode_request(images, single=False)


class NoModel(LoadedModel):
    """Marqo's ``no_model``: an index whose vectors its clients bring; it embeds nothing."""

    @property
    def dimensions(self) -> int:
        return self.spec.dimensions

    def modules(self) -> list[torch.nn.Module]:
        return []

    def encode_texts(self, texts: list[str], normalize: bool | None
                     ) -> tuple[np.ndarray, list[int]]:
        raise InvalidArgument(f"{self.spec.name} is a no_model model: it has no encoder and "
                              "cannot embed anything; its vectors come from the client")

    def encode_images(self, images: list[Image], normalize: bool | None) -> np.ndarray:
        return self.encode_texts([], normalize)[0]
