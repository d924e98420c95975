"""``POST /v1/embeddings``: OpenAI's embeddings API over the cache and its batchers.

The request is OpenAI's (``model``, ``input``, ``encoding_format``; other fields OpenAI
clients send, like ``user`` or ``dimensions``, are ignored) plus ``device`` and
``normalize``. Limits are checked before any work: inputs per request and characters
per text (413, and 400 for an empty list); image bytes and pixels in ``images.py``.
A full queue answers 429. The body is rendered by hand (below): for the sizes
embeddings come in, that is most of the time a request spends outside the model.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from modelctl.daemon.devices import parse_device
from modelctl.daemon.entry import Entry
from modelctl.daemon.images import (
    DATA_URI_PREFIX,
    PendingImage,
    check_decodable,
    probe_images,
    refuse_other_data_uri,
)
from modelctl.daemon.loaders import spec_for
from modelctl.daemon.routing import daemon_state, via_socket
from modelctl.daemon.state import DaemonState
from modelctl.errors import (
    BadRequest,
    ClientGone,
    InternalError,
    InvalidArgument,
    PayloadTooLarge,
)

if TYPE_CHECKING:
    from modelctl.config import Limits
    from modelctl.daemon.batcher import Batcher
    from modelctl.daemon.loaders.base import LoadedModel
    from modelctl.registry import ModelSpec

router = APIRouter(prefix="/v1", tags=["openai"])
T = TypeVar("T")

# Rendering floats costs ~70 us a row: past this many rows it runs in a thread, so one
# big request does not hold up every other client's replies.
RENDER_INLINE_ROWS = 64


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send user, dimensions, ...
    model: str = Field(min_length=1, max_length=512)
    input: str | list[str] = Field(description="a text, a list of texts, or data:image/...;"
                                   "base64, strings (CLIP models)")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: JSON numbers; base64: little-endian float32 bytes")
    device: str | None = Field(None, max_length=32)
    normalize: bool | None = Field(None, description="default: what the model was trained "
                                   "for (see README)")
    precision: str | None = Field(None, max_length=8, description="the variant to use; "
                                  "default: the one loaded, else the daemon's default")
    engine: str | None = Field(None, max_length=8)
    input_type: Literal["query", "document"] | None = Field(
        None, description="query or document: put the model's text_query_prefix or "
        "text_chunk_prefix before each text (e5, bge, ...); absent: texts as given")


@router.post("/embeddings", summary="Embed texts or images (OpenAI-compatible)")
async def embeddings(request: Request, body: EmbeddingsRequest) -> Response:
    state = daemon_state(request)
    started = time.perf_counter()
    limits = state.settings.limits
    inputs = [body.input] if isinstance(body.input, str) else body.input
    images = _check_limits(inputs, limits)
    entry = await _entry_for(state, request, body)
    if images and "image" not in entry.spec.modalities:
        raise InvalidArgument(f"{body.model} embeds text only; images need a CLIP model")
    inputs = with_prefix(entry.spec, inputs, images, body.input_type)
    # Images are checked from their headers: a request over the pixel limits is refused
    # before anything is decoded.
    pending = (await asyncio.to_thread(probe_images, [inputs[i] for i in images], limits,
                                       images) if images else [])
    async with state.pixel_gate.reserve(sum(image.pixels for image in pending)):
        if pending:
            await asyncio.to_thread(check_decodable, pending)
        vectors, tokens = await until_disconnected(
            request, _embed(state, entry, inputs, images, pending, body.normalize,
                            single=isinstance(body.input, str)))
    if body.encoding_format == "float" and len(inputs) > RENDER_INLINE_ROWS:
        content = await asyncio.to_thread(render, body.model, vectors, sum(tokens), "float")
    else:
        content = render(body.model, vectors, sum(tokens), body.encoding_format)
    state.metrics.embedded(entry, len(inputs), time.perf_counter() - started)
    return Response(content, media_type="application/json")


def with_prefix(spec: ModelSpec, inputs: list[str], images: list[int],
                input_type: str | None) -> list[str]:
    """Texts with the model's query or document prefix (Marqo's text_query_prefix and
    text_chunk_prefix); images and requests without ``input_type`` as given."""
    prefix = {"query": spec.query_prefix, "document": spec.chunk_prefix}.get(input_type or "")
    if not prefix:
        return inputs
    skip = set(images)
    return [text if i in skip else prefix + text for i, text in enumerate(inputs)]


async def _whole_request(model: LoadedModel, inputs: list[str], images: list[int],
                         pending: list[PendingImage], *, single: bool,
                         ) -> tuple[np.ndarray, list[int]]:
    """A model whose vectors depend on the whole call (Marqo's ``random``): one call per
    request, never batched with other requests."""
    items: list[Any] = list(inputs)
    if images:
        pictures = await asyncio.to_thread(lambda: [image.rgb() for image in pending])
        for row, picture in zip(images, pictures, strict=True):
            items[row] = picture
    return model.encode_request(items, single), [0] * len(items)


async def _embed(state: DaemonState, entry: Entry, inputs: list[str], images: list[int],
                 pending: list[PendingImage], normalize: bool | None, *, single: bool,
                 ) -> tuple[np.ndarray, list[int]]:
    limits = state.settings.limits
    async with state.cache.lease(entry) as held:
        # The lease covers the queued and batched work: eject waits for it.
        assert held.batcher is not None and held.model is not None
        batcher, queue = held.batcher, limits.max_queue_items
        if held.model.whole_request:
            return await _whole_request(held.model, inputs, images, pending, single=single)
        if not images:
            return await batcher.embed("text", inputs, normalize, max_queue=queue)
        if len(images) == len(inputs):
            return await batcher.embed("image", pending, normalize, max_queue=queue)
        return await _mixed(batcher, inputs, images, pending, normalize, queue)


async def until_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """``work``'s result, or cancel it when the client goes away first.

    The body has been read, so the next ASGI message is ``http.disconnect``: while it has
    not come the client still waits. A cancelled request's queued inputs leave its
    model's queue (batcher.py), so abandoned work holds up no one.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if not task.done() or task.cancelled():
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ClientGone()
    return task.result()


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _check_limits(inputs: list[str], limits: Limits) -> list[int]:
    """The positions of image inputs; 400/413 for a request over the limits."""
    if not inputs:
        raise InvalidArgument("input must not be empty")
    if len(inputs) > limits.max_batch_items:
        raise PayloadTooLarge(f"{len(inputs)} inputs in one request; the limit is "
                              f"{limits.max_batch_items}")
    images = []
    for index, text in enumerate(inputs):
        if text.startswith(DATA_URI_PREFIX):
            images.append(index)  # bounded by bytes and pixels when decoded
        elif len(text) > limits.max_text_chars:
            raise PayloadTooLarge(f"input {index}: a text of {len(text)} characters; the "
                                  f"limit is {limits.max_text_chars}")
        else:
            refuse_other_data_uri(text)
            if not text.isascii() and not _is_unicode(text):
                raise BadRequest(f"input {index} holds a lone UTF-16 surrogate "
                                 "(\\ud800-\\udfff), which is not text; tokenizers "
                                 "cannot take it")
    return images


def _is_unicode(text: str) -> bool:
    # JSON may carry "\\ud800"; Python keeps it in a str, UTF-8 (and every tokenizer) won't.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def _entry_for(state: DaemonState, request: Request, body: EmbeddingsRequest) -> Entry:
    """The ready entry to use: where it is loaded, else load it (registry names only)."""
    device = parse_device(body.device) if body.device else None
    # Several variants loaded and none named: the daemon's default variant if it is one
    # of them, else the first loaded.
    loaded = await state.cache.use_loaded(
        state.spec_name(body.model), device, engine=body.engine, precision=body.precision,
        prefer=(state.settings.engine, state.settings.precision))
    if loaded is not None:
        return loaded
    spec = state.variant(spec_for(body.model, None,
                                  local_paths=via_socket(request)),
                         body.engine, body.precision)
    if device is None:
        await state.torch_ready()
        device = state.default_device()
    return await state.cache.load(spec, device, name=body.model)


async def _mixed(batcher: Batcher, inputs: list[str], images: list[int],
                 pictures: list[PendingImage], normalize: bool | None, queue: int,
                 ) -> tuple[np.ndarray, list[int]]:
    """Texts and images in one request: each kind batched with its own, then interleaved."""
    image_set = set(images)
    text_rows = [i for i in range(len(inputs)) if i not in image_set]
    (text_vecs, text_tokens), (image_vecs, _) = await asyncio.gather(
        batcher.embed("text", [inputs[i] for i in text_rows], normalize, max_queue=queue),
        batcher.embed("image", pictures, normalize, max_queue=queue))
    vectors = np.empty((len(inputs), text_vecs.shape[1]), dtype=np.float32)
    vectors[text_rows] = text_vecs
    vectors[images] = image_vecs
    tokens = [0] * len(inputs)
    for row, count in zip(text_rows, text_tokens, strict=True):
        tokens[row] = count
    return vectors, tokens


@functools.lru_cache(maxsize=16)
def _row_template(dimensions: int) -> str:
    # One %-format of the whole row: a quarter faster than formatting each number.
    return ",".join(["%.9g"] * dimensions)


def render(model: str, vectors: np.ndarray, tokens: int, encoding: str) -> bytes:
    """The response body, built directly rather than through pydantic and ``json.dumps``.

    base64 is OpenAI's: the little-endian float32 bytes of each vector. Floats are
    written with 9 significant digits, which round-trip any float32 exactly, in less
    than half the bytes (and half the time) of ``json.dumps`` of the float64s.
    """
    if not np.isfinite(vectors).all():
        # JSON has no NaN; a model that makes them is broken, and the client should know.
        raise InternalError(f"{model} produced NaN or infinite values")
    parts = []
    if encoding == "base64":
        little = vectors.astype("<f4", copy=False)
        for i, row in enumerate(little):
            data = base64.b64encode(row.tobytes()).decode()
            parts.append(f'{{"object":"embedding","index":{i},"embedding":"{data}"}}')
    else:
        template = _row_template(vectors.shape[1])
        for i, row in enumerate(vectors.tolist()):
            numbers = template % tuple(row)
            parts.append(f'{{"object":"embedding","index":{i},"embedding":[{numbers}]}}')
    usage = f'{{"prompt_tokens":{tokens},"total_tokens":{tokens}}}'
    data = ",".join(parts)
    return (f'{{"object":"list","data":[{data}],"model":{json.dumps(model)},'
            f'"usage":{usage}}}').encode()
