"""transformers models plus pooling (Marqo's ``hf`` family: e5, bge, ...).

As Marqo: texts truncated at ``tokens`` (128 unless given), padded per pass, pooled by
``poolingMethod`` (``mean`` over the attention mask, or ``cls``: the first token); with no
``poolingMethod``, the model's own ``1_Pooling/config.json`` decides (cls when it says
``pooling_mode_cls_token``), else mean. Unit vectors unless asked otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from modelctl.daemon.loaders.base import LoadedModel
from modelctl.daemon.loaders.padding import pass_limits, plan_passes

if TYPE_CHECKING:
    from modelctl.registry import ModelSpec


# transformers' stand-in for "no limit set" is 1e30; anything this big is not a limit.
_UNSET_LIMIT = 10**6


def _token_limit(tokenizer: Any, model: Any) -> int:
    """Tokens the model can take: the tokenizer's ``model_max_length`` when set, and never
    more than the model has position embeddings for (a tokenizer saved without the
    former would otherwise let a long text index past the latter: a crash, not a vector).
    """
    limits = []
    declared = getattr(tokenizer, "model_max_length", None)
    if isinstance(declared, int) and 0 < declared < _UNSET_LIMIT:
        limits.append(declared)
    positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        # RoBERTa-style embeddings number positions from padding_idx + 1.
        offset = getattr(getattr(model, "embeddings", None), "padding_idx", None)
        limits.append(positions - (offset + 1 if isinstance(offset, int) else 0))
    return min(limits) if limits else 512


class HfModel(LoadedModel):
    def __init__(self, spec: ModelSpec, device: str, weights: Path) -> None:
        super().__init__(spec, device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(weights), trust_remote_code=False,
                                                       local_files_only=True)
        self.model = AutoModel.from_pretrained(str(weights), trust_remote_code=False,
                                               local_files_only=True).to(device)
        self.model.eval()
        self._max_tokens = min(_token_limit(self.tokenizer, self.model), spec.tokens or 8192,
                               8192)
        self.pooling = spec.pooling or pooling_of(weights)
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
        # Tokenized once, truncated to the model's max tokens as the tokenizer does it;
        # the token counts cut the passes (padding.py), and are what ``usage`` reports.
        encoded = self.tokenizer(texts, truncation=True, max_length=self._max_tokens)
        tokens = [len(ids) for ids in encoded["input_ids"]]
        order = sorted(range(len(texts)), key=tokens.__getitem__)
        vectors = np.empty((len(texts), self.dimensions), dtype=np.float32)
        with torch.inference_mode():
            for start, end in plan_passes([tokens[i] for i in order], self._overhead,
                                          self._max_pass):
                rows = order[start:end]
                padded = self.tokenizer.pad({key: [encoded[key][i] for i in rows]
                                             for key in encoded.keys()}, return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in padded.items()}
                hidden = self.model(**batch).last_hidden_state
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    weights = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                if normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                vectors[rows] = pooled.float().cpu().numpy()
        return vectors, tokens


def pooling_of(weights: Path) -> str:
    """The pooling a sentence-transformers export declares, as Marqo reads it."""
    try:
        config = json.loads((weights / "1_Pooling" / "config.json").read_text())
    except (OSError, ValueError):
        return "mean"
    return "cls" if isinstance(config, dict) and config.get("pooling_mode_cls_token") else "mean"
