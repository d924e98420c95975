"""Images sent as ``data:image/...;base64,`` strings, decoded within fixed bounds.

The server never fetches URLs: an image is the bytes in the request or nothing. Size is
bounded before decoding (encoded bytes) and while decoding (pixels, which also stops
decompression bombs: a small PNG that inflates to gigapixels).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from typing import TYPE_CHECKING

from modelctl.errors import BadRequest, PayloadTooLarge

if TYPE_CHECKING:
    from PIL.Image import Image

    from modelctl.config import Limits

DATA_URI_PREFIX = "data:image/"
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


def decode_images(uris: list[str], limits: Limits) -> list[Image]:
    """RGB images for ``uris``; 400/413 naming the first input that is not acceptable."""
    return [decode_image(uri, limits, index) for index, uri in enumerate(uris)]


def decode_image(uri: str, limits: Limits, index: int = 0) -> Image:
    from PIL import Image as PILImage

    header, sep, payload = uri.partition(",")
    if not sep or not header.startswith(DATA_URI_PREFIX) or not header.endswith(";base64"):
        raise BadRequest(f"input {index}: images must be data:image/<type>;base64,<data>")
    if len(payload) * 3 // 4 > limits.max_image_bytes:
        raise PayloadTooLarge(f"input {index}: image over {limits.max_image_bytes} bytes")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"input {index}: invalid base64 in image data") from None
    with warnings.catch_warnings():
        # PIL only warns between MAX_IMAGE_PIXELS and twice that; make both an error.
        warnings.simplefilter("error", PILImage.DecompressionBombWarning)
        PILImage.MAX_IMAGE_PIXELS = limits.max_image_pixels
        try:
            image = PILImage.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limits.max_image_pixels:
                raise PayloadTooLarge(f"input {index}: {width}x{height} pixels; the limit is "
                                      f"{limits.max_image_pixels}")
            image.load()
            return image.convert("RGB")
        except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning):
            raise PayloadTooLarge(f"input {index}: image over {limits.max_image_pixels} "
                                  "pixels") from None
        except PayloadTooLarge:
            raise
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise BadRequest(f"input {index}: not a readable image ({exc})") from None
