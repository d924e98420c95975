"""sentence-transformers models (Marqo's ``sbert`` family)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from modelctl.daemon.loaders.base import LoadedModel

if TYPE_CHECKING:
    from modelctl.daemon.loaders.registry import ModelSpec

# The batch size sentence-transformers itself defaults to; the batcher hands over up to
# a few hundred texts, and inside one call they run in chunks of this many.
ENCODE_BATCH_SIZE = 32


class SbertModel(LoadedModel):
    def __init__(self, spec: ModelSpec, device: str, weights: Path) -> None:
        super().__init__(spec, device)
        self.model = SentenceTransformer(str(weights), device=device, trust_remote_code=False,
                                         local_files_only=True)
        self.model.eval()
        if spec.tokens:
            self.model.max_seq_length = min(self.model.max_seq_length or spec.tokens,
                                            spec.tokens)

    @property
    def dimensions(self) -> int:
        dims = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        return int(dims() or self.spec.dimensions)

    @property
    def max_tokens(self) -> int | None:
        return int(self.model.max_seq_length) if self.model.max_seq_length else None

    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def encode_texts(self, texts: list[str], normalize: bool | None
                     ) -> tuple[np.ndarray, list[int]]:
        # normalize=None keeps what the model's own modules do (a Normalize module, or not).
        vectors = self.model.encode(texts, batch_size=ENCODE_BATCH_SIZE, convert_to_numpy=True,
                                    normalize_embeddings=bool(normalize),
                                    show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32), self._token_counts(texts)

    def _token_counts(self, texts: list[str]) -> list[int]:
        tokenizer = self.model.tokenizer
        if tokenizer is None:
            return [len(t.split()) for t in texts]
        ids = tokenizer(texts, truncation=True, max_length=self.max_tokens)["input_ids"]
        return [len(row) for row in ids]
