"""``POST /v1/embeddings``: OpenAI's embeddings API over the cache and its batchers."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Literal

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from modelctl.daemon.app import LISTENER_KEY
from modelctl.daemon.devices import parse_device
from modelctl.daemon.images import DATA_URI_PREFIX, decode_images, refuse_other_data_uri
from modelctl.daemon.loaders import spec_for
from modelctl.daemon.state import DaemonState
from modelctl.errors import BadRequest, InvalidArgument, PayloadTooLarge

router = APIRouter(prefix="/v1", tags=["openai"])


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send user, dimensions, ...
    model: str = Field(min_length=1, max_length=512)
    input: str | list[str] = Field(description="a text, a list of texts, or data:image/...;"
                                   "base64, strings (CLIP models)")
    encoding_format: Literal["float", "base64"] = "float"
    device: str | None = Field(None, max_length=32)
    normalize: bool | None = Field(None, description="default: what the model was trained "
                                   "for (see README)")


@router.post("/embeddings", summary="Embed texts or images (OpenAI-compatible)")
async def embeddings(request: Request, body: EmbeddingsRequest) -> Response:
    state: DaemonState = request.app.state.daemon
    started = time.perf_counter()
    limits = state.settings.limits
    inputs = [body.input] if isinstance(body.input, str) else body.input
    if not inputs:
        raise InvalidArgument("input must not be empty")
    if len(inputs) > limits.max_batch_items:
        raise PayloadTooLarge(f"{len(inputs)} inputs in one request; the limit is "
                              f"{limits.max_batch_items}")
    images = [i for i, text in enumerate(inputs) if text.startswith(DATA_URI_PREFIX)]
    for text in inputs:
        if len(text) > limits.max_text_chars and not text.startswith(DATA_URI_PREFIX):
            raise PayloadTooLarge(f"a text of {len(text)} characters; the limit is "
                                  f"{limits.max_text_chars}")
        refuse_other_data_uri(text)
        if not text.isascii() and not _is_unicode(text):
            raise BadRequest("input holds a lone UTF-16 surrogate (\\ud800-\\udfff), "
                             "which is not text; tokenizers cannot take it")
    entry = await _entry_for(state, request, body)
    if images and "image" not in entry.spec.modalities:
        raise InvalidArgument(f"{body.model} embeds text only; images need a CLIP model")
    async with state.cache.lease(entry) as held:
        assert held.batcher is not None
        vectors = np.empty((len(inputs), 0), dtype=np.float32)
        tokens = [0] * len(inputs)
        if len(images) == len(inputs):
            pictures = await asyncio.to_thread(decode_images, inputs, limits)
            vectors, tokens = await held.batcher.embed("image", pictures, body.normalize)
        elif images:
            vectors, tokens = await _mixed(held.batcher, inputs, images, body.normalize, limits)
        else:
            vectors, tokens = await held.batcher.embed("text", inputs, body.normalize)
    state.metrics.embedded(entry, len(inputs), time.perf_counter() - started)
    return Response(_render(body.model, vectors, sum(tokens), body.encoding_format),
                    media_type="application/json")


def _is_unicode(text: str) -> bool:
    # JSON may carry "\\ud800"; Python keeps it in a str, UTF-8 (and every tokenizer) won't.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def _entry_for(state: DaemonState, request: Request, body: EmbeddingsRequest):  # type: ignore[no-untyped-def]
    """The ready entry to use: where it is loaded, else load it (registry names only)."""
    device = parse_device(body.device) if body.device else None
    # A copy being ejected (evicted, expired) still names the spec to reload, custom
    # models included; cache.load waits until it is freed. A ready copy comes first.
    loaded = sorted((e for e in state.loaded_entries(body.model)
                     if device is None or e.device == device),
                    key=lambda e: e.state != "ready")
    if loaded:
        entry = loaded[0]
        return await state.cache.load(entry.spec, entry.device)
    spec = spec_for(body.model, None, local_paths=request.scope.get(LISTENER_KEY) == "unix")
    if device is None:
        await state.torch_ready()
        device = state.default_device()
    return await state.cache.load(spec, device, name=body.model)


async def _mixed(batcher, inputs, images, normalize, limits):  # type: ignore[no-untyped-def]
    image_set = set(images)
    texts = [t for i, t in enumerate(inputs) if i not in image_set]
    pictures = await asyncio.to_thread(decode_images, [inputs[i] for i in images], limits)
    (text_vecs, text_tokens), (image_vecs, _) = await asyncio.gather(
        batcher.embed("text", texts, normalize), batcher.embed("image", pictures, normalize))
    vectors = np.empty((len(inputs), text_vecs.shape[1]), dtype=np.float32)
    tokens = [0] * len(inputs)
    text_rows = [i for i in range(len(inputs)) if i not in image_set]
    vectors[text_rows] = text_vecs
    vectors[images] = image_vecs
    for row, count in zip(text_rows, text_tokens, strict=True):
        tokens[row] = count
    return vectors, tokens


def _render(model: str, vectors: np.ndarray, tokens: int, encoding: str) -> bytes:
    """The response body, built directly: for large batches the floats dominate, and
    one ``json.dumps`` per row of ``tolist()`` is several times faster than pydantic."""
    parts = []
    if encoding == "base64":
        little = vectors.astype("<f4", copy=False)
        for i, row in enumerate(little):
            parts.append('{"object":"embedding","index":%d,"embedding":"%s"}'
                         % (i, base64.b64encode(row.tobytes()).decode()))
    else:
        for i, row in enumerate(vectors.tolist()):
            parts.append('{"object":"embedding","index":%d,"embedding":%s}'
                         % (i, json.dumps(row)))
    usage = '{"prompt_tokens":%d,"total_tokens":%d}' % (tokens, tokens)
    return ('{"object":"list","data":[%s],"model":%s,"usage":%s}'
            % (",".join(parts), json.dumps(model), usage)).encode()
