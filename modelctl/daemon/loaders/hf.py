"""transformers models plus pooling (Marqo's ``hf`` family: e5, bge, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from modelctl.daemon.loaders.base import LoadedModel
from modelctl.daemon.loaders.padding import pass_limits, plan_passes

if TYPE_CHECKING:
    from modelctl.daemon.loaders.registry import ModelSpec


class HfModel(LoadedModel):
    def __init__(self, spec: ModelSpec, device: str, weights: Path) -> None:
        super().__init__(spec, device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(weights), trust_remote_code=False,
                                                       local_files_only=True)
        self.model = AutoModel.from_pretrained(str(weights), trust_remote_code=False,
                                               local_files_only=True).to(device)
        self.model.eval()
        limit = getattr(self.tokenizer, "model_max_length", None) or 512
        self._max_tokens = min(limit, spec.tokens or limit, 8192)
        self._overhead, self._max_pass = pass_limits(device)

    @property
    def dimensions(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def max_tokens(self) -> int | None:
        return self._max_tokens

    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def encode_texts(self, texts: list[str], normalize: bool | None
                     ) -> tuple[np.ndarray, list[int]]:
        # e5/bge and their kin are trained for cosine similarity: unit vectors by default.
        normalize = self.spec.normalize if normalize is None else normalize
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        lengths = [len(texts[i]) for i in order]
        vectors = np.empty((len(texts), self.dimensions), dtype=np.float32)
        tokens = [0] * len(texts)
        with torch.inference_mode():
            for start, end in plan_passes(lengths, self._overhead, self._max_pass):
                rows = order[start:end]
                # Truncated to the model's max tokens, as the tokenizer does it.
                batch = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                       max_length=self._max_tokens, return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in batch.items()}
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"]
                if self.spec.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    weights = mask.unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                if normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                vectors[rows] = pooled.float().cpu().numpy()
                for row, count in zip(rows, mask.sum(1).tolist(), strict=True):
                    tokens[row] = int(count)
        return vectors, tokens
