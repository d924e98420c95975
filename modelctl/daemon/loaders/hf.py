"""transformers models plus pooling (Marqo's ``hf`` family: e5, bge, ...).

As Marqo: texts truncated at ``tokens`` (128 unless given), padded per pass, pooled by
``poolingMethod`` (``mean`` over the attention mask, or ``cls``: the first token); with no
``poolingMethod``, the model's own ``1_Pooling/config.json`` decides (cls when it says
``pooling_mode_cls_token``), else mean. Unit vectors unless asked otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from modelctl.daemon.loaders.base import LoadedModel
from modelctl.daemon.loaders.padding import pass_limits, plan_passes

if TYPE_CHECKING:
    from modelctl.registry import ModelSpec


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
