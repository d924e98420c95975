"""sentence-transformers models (Marqo's ``sbert`` family).

Texts run through the model's own modules (its tokenizer, transformer, pooling and, if
it has one, its ``Normalize``), exactly as ``SentenceTransformer.encode`` runs them, so
vectors and truncation (the model's ``max_seq_length``) are the library's. The loop is
ours for two reasons: the passes are cut by length (``padding.plan_passes``), which
matters when a batch is a mix of many clients' texts, and the attention mask of each
pass tells how many tokens each text used, without tokenizing twice.

``normalize``: ``None`` (the default) is Marqo's default, unit vectors, whether or not
the model ends in ``Normalize``. ``True`` is the same; ``False`` skips a ``Normalize``
module, so the vectors are the pooled ones (Marqo would still run that module).

Marqo's ``test`` type is this model with its vectors cut to the first ``dimensions``
values, then normalised; ``sbert_onnx`` names run here as the same weights in torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import batch_to_device

from modelctl.daemon.loaders.base import LoadedModel
from modelctl.daemon.loaders.padding import pass_limits, plan_passes

if TYPE_CHECKING:
    from modelctl.registry import ModelSpec


def _is_token_matrix(value: Any, mask: torch.Tensor) -> bool:
    """Whether ``value`` is one row of tokens per text, like the attention mask."""
    return isinstance(value, torch.Tensor) and value.shape == mask.shape


class SbertModel(LoadedModel):
    def __init__(self, spec: ModelSpec, device: str, weights: Path) -> None:
        super().__init__(spec, device)
        self.model = SentenceTransformer(str(weights), device=device, trust_remote_code=False,
                                         local_files_only=True)
        self.model.eval()
        if spec.tokens:
            # Marqo sets max_seq_length = tokens, above the model's own setting too
            # (all-MiniLM-L12-v2: 256 over its 128); only the position table bounds it.
            self.model.max_seq_length = min(spec.tokens, _positions(self.model) or spec.tokens)
        modules = list(self.model.children())
        # By class name: the class has moved between sentence-transformers versions.
        self._unnormalized = [m for m in modules if type(m).__name__ != "Normalize"]
        prompt_name = getattr(self.model, "default_prompt_name", None)
        self._prompt: str | None = (self.model.prompts.get(prompt_name) or None
                                    if prompt_name else None)
        self._overhead, self._max_pass = pass_limits(device)
        dims = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        self._dims = int(dims() or spec.dimensions)
        self._truncate = spec.truncate if spec.truncate and spec.truncate < self._dims else None

    @property
    def dimensions(self) -> int:
        return self._truncate or self._dims

    @property
    def max_tokens(self) -> int | None:
        return int(self.model.max_seq_length) if self.model.max_seq_length else None

    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def encode_texts(self, texts: list[str], normalize: bool | None
                     ) -> tuple[np.ndarray, list[int]]:
        features = self._tokenized_once(texts)
        if features is None:
            return self._encode_tokenizing_per_pass(texts, normalize)
        mask = features["attention_mask"]
        sizes = [int(n) for n in mask.sum(1).tolist()]
        order = sorted(range(len(texts)), key=sizes.__getitem__)
        normalize = self.spec.normalize if normalize is None else normalize
        vectors = np.empty((len(texts), self.dimensions), dtype=np.float32)
        with torch.inference_mode():
            for start, end in plan_passes([sizes[i] for i in order], self._overhead,
                                          self._max_pass):
                rows = order[start:end]
                width = max(sizes[i] for i in rows)
                index = torch.tensor(rows)
                # Right-padded, so the first ``width`` columns hold every token of these
                # rows: the same tensors a tokenizer call on these texts alone returns.
                part = {key: value[index, :width] if _is_token_matrix(value, mask) else value
                        for key, value in features.items()}
                embedded = self._forward(dict(batch_to_device(part, self.model.device)),
                                         normalize)
                vectors[rows] = embedded.float().cpu().numpy()
        return vectors, sizes

    def _tokenized_once(self, texts: list[str]) -> dict[str, Any] | None:
        """Every text tokenized in one call (truncated as the model does it), or ``None``
        when the tokenizer pads on the left or gives no attention mask: then passes
        cannot be cut from one padded matrix, and each pass tokenizes its own texts.

        A long text is tokenized once, not once to measure and once per pass.
        """
        tokenizer = getattr(self.model, "tokenizer", None)
        if getattr(tokenizer, "padding_side", None) != "right":
            return None
        features = self._features(texts, on_device=False)
        mask = features.get("attention_mask")
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
            return None
        return features

    def _encode_tokenizing_per_pass(self, texts: list[str], normalize: bool | None
                                    ) -> tuple[np.ndarray, list[int]]:
        sizes = self._token_lengths(texts)
        order = sorted(range(len(texts)), key=sizes.__getitem__)
        lengths = [sizes[i] for i in order]
        normalize = self.spec.normalize if normalize is None else normalize
        vectors = np.empty((len(texts), self.dimensions), dtype=np.float32)
        tokens = [0] * len(texts)
        with torch.inference_mode():
            for start, end in plan_passes(lengths, self._overhead, self._max_pass):
                rows = order[start:end]
                features = self._features([texts[i] for i in rows])
                mask = features.get("attention_mask")
                embedded = self._forward(features, normalize)
                vectors[rows] = embedded.float().cpu().numpy()
                counts = (mask.sum(1).tolist() if isinstance(mask, torch.Tensor)
                          else [len(texts[i].split()) for i in rows])
                for row, count in zip(rows, counts, strict=True):
                    tokens[row] = int(count)
        return vectors, tokens

    def _token_lengths(self, texts: list[str]) -> list[int]:
        """Tokens each text will take (truncated), to cut passes by; characters if unknown.

        Tokenizing twice (here and in each pass) costs well under 1% of a pass, and the
        exact lengths cut padding that character counts leave (their passes run ~4% faster).
        """
        tokenizer = getattr(self.model, "tokenizer", None)
        if tokenizer is not None and callable(tokenizer):
            try:
                ids = tokenizer(texts, truncation=True, max_length=self.max_tokens)["input_ids"]
                return [len(row) for row in ids]
            except (TypeError, ValueError, KeyError):
                pass  # not a text tokenizer we know how to call: characters will do
        return [len(text) // 4 + 2 for text in texts]  # ~4 characters a token

    def _features(self, texts: list[str], on_device: bool = True) -> dict[str, Any]:
        """Tokenized (and truncated) as the model's first module does it, on the device."""
        preprocess = getattr(self.model, "preprocess", None)
        if preprocess is not None:  # sentence-transformers >= 6
            features = preprocess(texts, prompt=self._prompt)
        else:
            if self._prompt:
                texts = [self._prompt + text for text in texts]
            features = self.model.tokenize(texts)
        if not on_device:
            return dict(features)
        return dict(batch_to_device(features, self.model.device))

    def _forward(self, features: dict[str, Any], normalize: bool) -> torch.Tensor:
        if not normalize:
            for module in self._unnormalized:
                features = module(features)
            return features["sentence_embedding"][:, :self.dimensions]
        embedded = self.model(features)["sentence_embedding"][:, :self.dimensions]
        if normalize:
            embedded = torch.nn.functional.normalize(embedded, p=2, dim=1)
        return embedded


def _positions(model: SentenceTransformer) -> int | None:
    """How many positions the model's transformer has (minus the padding offset some use)."""
    config = getattr(getattr(model[0], "auto_model", None), "config", None)
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int):
        return None
    # RoBERTa-style models start positions after the padding index.
    offset = (getattr(config, "pad_token_id", 0) or 0) + 1 \
        if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "mpnet") else 0
    return positions - offset
