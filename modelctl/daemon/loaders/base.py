"""What every loaded model offers the cache and the batcher, whatever its family."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np

from modelctl.errors import InvalidArgument

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

    from modelctl.registry import ModelSpec


class LoadedModel(ABC):
    """A model in memory on one device. Methods are called from one worker thread at a time."""

    # True for a model whose vectors depend on the whole call (Marqo's ``random``): the
    # route calls ``encode_request`` once per request instead of batching requests.
    whole_request = False

    def __init__(self, spec: ModelSpec, device: str) -> None:
        self.spec = spec
        self.device = device

    @property
    @abstractmethod
    def dimensions(self) -> int: ...

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.spec.modalities

    @property
    def max_tokens(self) -> int | None:
        return self.spec.tokens

    @abstractmethod
    def modules(self) -> list[torch.nn.Module]:
        """The torch modules that hold this model's weights."""

    @abstractmethod
    def encode_texts(self, texts: list[str], normalize: bool | None
                     ) -> tuple[np.ndarray, list[int]]:
        """Float32 vectors ``(len(texts), dimensions)`` and the tokens each text used."""

    def encode_images(self, images: list[Image], normalize: bool | None) -> np.ndarray:
        raise InvalidArgument(f"{self.spec.name} is a {self.spec.family} model and embeds "
                              "text only; images need a CLIP model")

    def encode_request(self, items: list[Any], single: bool) -> np.ndarray:
        raise NotImplementedError

    def release(self) -> None:
        """Drop every reference this object holds to tensors, so eject can free them."""
        for attr in list(vars(self)):
            if attr not in ("spec", "device"):
                setattr(self, attr, None)

    def measure_bytes(self) -> int:
        """Bytes of parameters and buffers, each storage counted once."""
        seen: set[Any] = set()
        total = 0
        for module in self.modules():
            for tensor in list(module.parameters()) + list(module.buffers()):
                try:
                    key = tensor.untyped_storage().data_ptr()
                    size = tensor.untyped_storage().nbytes()
                except (RuntimeError, NotImplementedError):
                    key, size = id(tensor), tensor.numel() * tensor.element_size()
                if key in seen:
                    continue
                seen.add(key)
                total += size
        return total
