"""Images sent as ``data:image/...;base64,`` strings, decoded within fixed bounds.

The server never fetches URLs: an image is the bytes in the request or nothing.

Only the formats a CLIP model needs are decoded (``ALLOWED_FORMATS``): Pillow's other
plugins include parsers nobody here needs and one (EPS) that hands the file to
Ghostscript. Every other format, and every file Pillow cannot read, is a 400.

Memory is bounded three ways, all before anything is decoded: each image's encoded
bytes and pixels (read from its header; this also stops decompression bombs, a small
PNG that inflates to gigapixels), the pixels of one request together, and the pixels
of every request in flight (``PixelGate``: a request that would pass it waits for
room). Images are decoded one at a time, when a forward pass needs them
(``PendingImage.rgb``), so what a request holds is its encoded bytes until then.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import re
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelctl.errors import BadRequest, PayloadTooLarge

if TYPE_CHECKING:
    from PIL.Image import Image

    from modelctl.config import Limits

DATA_URI_PREFIX = "data:image/"
# Pillow format names: what photographs and screenshots come as. TIFF, ICO, PSD and the
# rest are left out on purpose; convert them to PNG on the client's side.
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
# RFC 2397's ``data:<type>/<subtype>[;params],``: a string that starts so is a file, not text.
_DATA_URI = re.compile(r"data:([a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+)[^,\s]*,", re.IGNORECASE)


def refuse_other_data_uri(text: str) -> None:
    """400 for a data URI of anything but an image: embedding its base64 as text is
    never what the sender meant."""
    if text.startswith(("data:", "DATA:", "Data:")) and not text.startswith(DATA_URI_PREFIX):
        match = _DATA_URI.match(text)
        if match:
            raise BadRequest(f"an input is a data: URI of type {match.group(1)[:100]}; only "
                             "data:image/<type>;base64, URIs are accepted (as images, by "
                             "CLIP models), and texts are sent as plain strings")


@dataclass(frozen=True, eq=False)
class PendingImage:
    """An image checked from its header, decoded only when a forward pass needs it."""

    data: bytes
    index: int
    pixels: int
    max_pixels: int

    def rgb(self) -> Image:
        """The decoded image in RGB; 400/413 if the file turns out not to be readable."""
        return _decode(self.data, self.index, self.max_pixels)


def as_rgb(image: Any) -> Image:
    """An RGB image from a ``PendingImage`` (decoded now) or an image already decoded."""
    return image.rgb() if isinstance(image, PendingImage) else image


def probe_images(uris: list[str], limits: Limits, positions: list[int] | None = None,
                 ) -> list[PendingImage]:
    """Check ``uris`` from their headers (format, bytes, pixels, and the pixels of all of
    them together) without decoding any; 400/413 naming the first that is not acceptable."""
    images = [_probe(uri, limits, index) for uri, index in
              zip(uris, positions if positions is not None else range(len(uris)), strict=True)]
    total = sum(image.pixels for image in images)
    if total > limits.max_request_pixels:
        raise PayloadTooLarge(
            f"the images of this request hold {total} pixels together; the limit is "
            f"{limits.max_request_pixels} per request (MODELCTL_MAX_REQUEST_PIXELS); send "
            "fewer or smaller images per request")
    return images


def check_decodable(images: list[PendingImage]) -> None:
    """Decode each image once, one at a time, and drop it: a file that would fail in a
    forward pass (which other clients' inputs share) fails its own request instead."""
    for image in images:
        image.rgb()


def _probe(uri: str, limits: Limits, index: int) -> PendingImage:
    header, sep, payload = uri.partition(",")
    if not sep or not header.startswith(DATA_URI_PREFIX) or not header.endswith(";base64"):
        raise BadRequest(f"input {index}: images must be data:image/<type>;base64,<data>")
    if len(payload) * 3 // 4 > limits.max_image_bytes:
        raise PayloadTooLarge(f"input {index}: image over {limits.max_image_bytes} bytes")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"input {index}: invalid base64 in image data") from None
    with _pillow_errors(index, limits.max_image_pixels) as pil:
        image = pil.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        width, height = image.size
        image.close()
    if width * height > limits.max_image_pixels:
        raise PayloadTooLarge(f"input {index}: {width}x{height} pixels; the limit is "
                              f"{limits.max_image_pixels} per image")
    return PendingImage(data, index, width * height, limits.max_image_pixels)


def _decode(data: bytes, index: int, max_pixels: int) -> Image:
    with _pillow_errors(index, max_pixels) as pil:
        image = pil.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        image.load()
        return image.convert("RGB")
    raise AssertionError("unreachable")  # _pillow_errors re-raises every error


@contextlib.contextmanager
def _pillow_errors(index: int, max_pixels: int) -> Any:
    """Pillow, with its decompression-bomb checks at ``max_pixels``; its errors as ours."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    with warnings.catch_warnings():
        # PIL only warns between MAX_IMAGE_PIXELS and twice that; make both an error.
        warnings.simplefilter("error", PILImage.DecompressionBombWarning)
        PILImage.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield PILImage
        except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning):
            raise PayloadTooLarge(f"input {index}: image over {max_pixels} pixels") from None
        except UnidentifiedImageError:
            raise BadRequest(f"input {index}: not an image in an accepted format "
                             f"({', '.join(ALLOWED_FORMATS)})") from None
        except MemoryError:
            raise PayloadTooLarge(f"input {index}: image too large to decode") from None
        except Exception as exc:
            # A damaged file reaches Pillow's parsers in many ways (struct.error,
            # IndexError, ZeroDivisionError, ...): each is the file's fault, not ours.
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise BadRequest(f"input {index}: not a readable image ({reason})") from None


class PixelGate:
    """Pixels of the images that requests in flight may hold, across all requests.

    A request reserves its images' pixels before they are decoded and returns them when
    its vectors are done; one that would pass ``limit`` waits (first come, first served)
    rather than failing, since the room comes back as other requests finish.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def reserve(self, pixels: int) -> AsyncIterator[None]:
        pixels = min(pixels, self.limit)  # a request alone always fits eventually
        async with self._changed:
            await self._changed.wait_for(lambda: self.held + pixels <= self.limit)
            self.held += pixels
        try:
            yield
        finally:
            async with self._changed:
                self.held -= pixels
                self._changed.notify_all()
