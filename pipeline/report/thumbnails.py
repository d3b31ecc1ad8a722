"""Thumbnails for the contact sheet, through the pipeline's own read and decode.

The report reads images the way the job did (`transforms.read` over Beam's
FileSystems, so `gs://` works; `transforms.decode` with its EXIF handling,
pixel limit and JPEG draft mode), so an image the report cannot show fails for
the same reason, with the same error class, as it would in a run. A failure is
a grey tile with its reason, never a crash: the images may have changed or
vanished since the run.
"""
from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import io
from typing import Sequence

from PIL import Image

from transforms.decode import DEFAULT_MAX_PIXELS, ResizeRecipe, decode_image
from transforms.errors import ImageError
from transforms.read import DEFAULT_MAX_BYTES, RetryPolicy, read_image_bytes

#: Thumbnail edge in pixels. 500 tiles at ~4 KB each keep the page at a few MB.
THUMB_SIZE = 112
JPEG_QUALITY = 70
#: The report is interactive: fewer, shorter retries than a job.
REPORT_RETRY = RetryPolicy(attempts=2, initial_backoff_s=0.2)


@dataclasses.dataclass(frozen=True)
class Thumbnail:
    """A tile's picture: a data: URI, or why there is none."""
    uri: str
    data_uri: str | None
    reason: str | None = None


def encode_jpeg(pixels) -> str:
    """RGB pixels -> a base64 JPEG data: URI (no file, no request)."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format='JPEG', quality=JPEG_QUALITY, optimize=True)
    return 'data:image/jpeg;base64,' + base64.b64encode(buf.getvalue()).decode('ascii')


def thumbnail(uri: str, size: int = THUMB_SIZE, *, max_bytes: int = DEFAULT_MAX_BYTES,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> Thumbnail:
    """One image's square thumbnail (central crop), or the reason it cannot be made."""
    try:
        image = read_image_bytes(uri, max_bytes=max_bytes, retry=REPORT_RETRY)
        pixels = decode_image(image.data, (size, size), recipe=ResizeRecipe.CROP,
                              max_pixels=max_pixels).pixels
        return Thumbnail(uri, encode_jpeg(pixels))
    except ImageError as e:
        return Thumbnail(uri, None, f'{e.stage}/{e.error}: {e.message}')
    except Exception as e:  # noqa: BLE001 - a tile, never a crashed report
        return Thumbnail(uri, None, f'{type(e).__name__}: {e}')


def thumbnails(uris: Sequence[str], size: int = THUMB_SIZE, threads: int = 8) -> list[Thumbnail]:
    """Thumbnails in the order of `uris`; reads overlap (object stores are latency-bound)."""
    if not uris:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(lambda u: thumbnail(u, size), uris))
