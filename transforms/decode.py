"""Decode stage: image bytes -> RGB uint8 array at the model's input size.

Decisions are made by content, never by file extension. Pixels stay uint8 all the
way to the model (4x less memory and copying than float32); normalisation
happens inside the compiled model function.
"""
from __future__ import annotations

import dataclasses
import enum
import io
import math
import struct
import warnings
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError, features

from transforms.concurrency import LookaheadDoFn
from transforms.errors import Failure, ImageError
from transforms import metrics
from transforms.errors import ERRORS_TAG
from transforms.incremental import Listed
from transforms.read import ImageBytes

# Our own --max_pixels check runs before Pillow's and is the one that counts:
# Pillow's fixed limit (~179M pixels) would otherwise override a larger
# --max_pixels, and would report its own limit instead of the flag.
warnings.simplefilter('ignore', Image.DecompressionBombWarning)
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False  # explicit: a truncated file is an error, always

#: Default pixel budget: 8000 x 8000. A decoded RGB image of this size is ~192 MB.
DEFAULT_MAX_PIXELS = 64_000_000
_ORIENTATION_TAG = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}


class ResizeRecipe(str, enum.Enum):
    """How an image is fitted to the model's input.

    PLAIN stretches the whole image to the input size (TF label_image's recipe).
    CROP keeps the aspect ratio and takes the central 87.5% of the shorter side
    (resize-shorter-side-to-256 then centre-crop-224, as ImageNet evaluations do).
    """
    PLAIN = 'plain'
    CROP = 'crop'


CROP_FRACTION = 0.875


@dataclasses.dataclass
class DecodedImage:
    """Model-ready pixels plus what the output row needs about the original."""
    uri: str
    content_sha256: str
    width: int
    height: int
    pixels: np.ndarray  # (height, width, 3) uint8 at the model's input size
    source: Listed | None = None  # as listed, on incremental runs (ImageBytes.source)


# Magic numbers of formats we recognise but Pillow (without plugins) cannot decode.
_UNSUPPORTED_SIGNATURES = (
    (b'%pdf', 'PDF document'),
    (b'8bps', 'Photoshop document'),
    (b'%!ps', 'PostScript/EPS document'),
    (b'\xc5\xd0\xd3\xc6', 'EPS document'),
)
#: Formats Pillow knows but is never asked to decode: it hands EPS to Ghostscript, an
#: external program with a history of code-execution flaws, and the images are untrusted.
#: (Checked after the header is read, which runs nothing: an allow-list of formats for
#: Image.open cost 0.26 ms per JPEG, as Pillow then tries every plugin in its own order.)
NEVER_DECODED = frozenset({'EPS'})


def _zero_padded(data: bytes) -> int:
    """How many zero bytes end `data` when they are a cut-short file's unwritten rest (a
    preallocated download, an interrupted upload): at least 256 and a sixteenth of it."""
    least = max(256, len(data) // 16)
    if len(data) < least or data[-256:].count(0) < 256:
        return 0
    zeros = len(data) - len(data.rstrip(b'\x00'))
    return zeros if zeros >= least else 0
_MARKUP_STARTS = (b'<svg', b'<?xml', b'<!--', b'<!doctype svg')


_HEIF_BRANDS = {b'heic', b'heix', b'heim', b'heis', b'hevc', b'hevx', b'mif1', b'msf1'}
_AVIF_BRANDS = {b'avif', b'avis'}


def _ftyp_brands(data: bytes) -> set[bytes]:
    """Major and compatible brands of an ISO-BMFF (HEIF/AVIF) file, or an empty set."""
    if data[4:8] != b'ftyp':
        return set()
    end = min(struct.unpack('>I', data[:4])[0], len(data), 256)
    return {data[8:12]} | {data[i:i + 4] for i in range(16, end - 3, 4)}


def _is_avif(data: bytes) -> bool:
    return bool(_ftyp_brands(data) & _AVIF_BRANDS)


def _unsupported_kind(data: bytes) -> str | None:
    """A format we recognise but cannot decode; None for non-images (HTML, XML errors...)."""
    head = data[:2048].lstrip().lower()
    for magic, name in _UNSUPPORTED_SIGNATURES:
        if head.startswith(magic):
            return name
    # An SVG is markup whose root is <svg>; an HTML page or an XML error body from a
    # store (<Error><Code>AccessDenied...) is not an image at all.
    if head.startswith(_MARKUP_STARTS) and b'<svg' in head and b'<html' not in head:
        return 'SVG image'
    brands = _ftyp_brands(data)
    if brands & (_HEIF_BRANDS | _AVIF_BRANDS) and not (
            _is_avif(data) and features.check('avif')):
        return f'{data[8:12].decode("latin-1")} (HEIF/AVIF) image'
    return None


def _image_kind(data: bytes) -> str | None:
    """The format that `data` starts like, among those this installation decodes."""
    for magic, name in ((b'\xff\xd8', 'JPEG'), (b'\x89PNG\r\n\x1a\n', 'PNG'),
                        (b'GIF87a', 'GIF'), (b'GIF89a', 'GIF'), (b'BM', 'BMP'),
                        (b'II*\x00', 'TIFF'), (b'MM\x00*', 'TIFF')):
        if data.startswith(magic):
            return name
    if data[:4] == b'RIFF' and data[8:12] == b'WEBP':
        return 'WEBP'
    if _is_avif(data) and features.check('avif'):
        return 'AVIF'
    return None


def _ends_early(data: bytes, kind: str | None) -> bool:
    """Whether a damaged file of format `kind` lacks its end (so it was cut short)."""
    tail = data.rstrip(b'\x00')
    if kind == 'JPEG':
        return not tail.endswith(b'\xff\xd9')
    if kind == 'PNG':
        return b'IEND' not in data[-64:]
    if kind == 'GIF':
        return not tail.endswith(b';')
    if kind == 'BMP':
        return len(data) < 6 or struct.unpack('<I', data[2:6])[0] > len(data)
    if kind == 'WEBP':
        return len(data) < 12 or struct.unpack('<I', data[4:8])[0] + 8 > len(data)
    return False


def _damaged(data: bytes, message: str, kind: str | None = None) -> ImageError:
    """A decoder failure on a known format: `truncated` if the file lacks its end, else
    `corrupt`."""
    kind = kind or _image_kind(data)
    if _ends_early(data, kind):
        return ImageError('decode', 'truncated', f'{kind} data ends early: {message}')
    return ImageError('decode', 'corrupt', message)


def crop_box(width: int, height: int, out_w: int, out_h: int,
             fraction: float = CROP_FRACTION) -> tuple[float, float, float, float]:
    """The central box, with the output's aspect ratio, covering `fraction` of the shorter fit."""
    scale = min(width / out_w, height / out_h) * fraction
    box_w, box_h = out_w * scale, out_h * scale
    left, top = (width - box_w) / 2, (height - box_h) / 2
    return left, top, left + box_w, top + box_h


def _draft_request(width: int, height: int, out_w: int, out_h: int,
                   recipe: ResizeRecipe) -> tuple[int, int]:
    """The smallest decode size that still covers the output after the recipe."""
    if recipe is ResizeRecipe.PLAIN:
        return out_w, out_h
    # The crop box must still be >= the output after the decoder's downscale.
    s = 1.0 / (min(width / out_w, height / out_h) * CROP_FRACTION)
    return math.ceil(width * s), math.ceil(height * s)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparency is composited onto white.

    Transparency is an alpha band, or a PNG/GIF colour key (`info['transparency']`: a
    palette index, a grey level or an RGB colour that stands for transparent).
    """
    keyed = 'transparency' in im.info and im.mode in ('RGB', 'L', 'P')
    if im.mode == 'RGB' and not keyed:
        return im
    if im.mode in ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I', 'F'):
        arr = np.asarray(im, dtype=np.float32)  # float32: a max_pixels image stays < 300 MB
        top = 65535.0 if im.mode.startswith('I;16') or arr.max(initial=0) > 255 else 255.0
        if im.mode == 'F':  # float data has no fixed range: stretch its own min..max
            lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 1.0)
            arr, top = arr - lo, max(hi - lo, 1e-12)
        gray = np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert('RGB')
    if im.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La') or keyed:
        rgba = im.convert('RGBA')
        background = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert('RGB')
    return im.convert('RGB')


def _fit_colour_key(im: Image.Image, data: bytes) -> None:
    """Make a PNG's colour key comparable with the 8-bit pixels Pillow hands over.

    Pillow keeps the tRNS key in the file's own bit depth (byte 24, in IHDR) while it
    scales 2- and 4-bit grey up to 0..255 and cuts 16-bit samples to their high byte.
    A low-bit grey key is scaled the same way; a 16-bit key cannot be matched exactly
    against cut samples (a near-black opaque pixel would turn white), so it is dropped
    and such pixels keep their stored colour.
    """
    if 'transparency' not in im.info or im.mode not in ('RGB', 'L') or len(data) < 25:
        return
    depth = data[24]
    if depth in (2, 4) and im.mode == 'L':
        im.info['transparency'] = im.info['transparency'] * (255 // ((1 << depth) - 1))
    elif depth != 8:
        del im.info['transparency']


class Decoded(NamedTuple):
    """decode_image's result: model-ready pixels and the image's displayed size."""
    pixels: np.ndarray  # (height, width, 3) uint8 at the requested size
    width: int          # original width, after EXIF rotation
    height: int


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1 = upright). A broken EXIF block must not lose the image."""
    try:
        return int(im.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - only EXIF parsing runs here; pixels are loaded apart
        return 1


def decode_image(data: bytes, size: tuple[int, int], *,
                 recipe: ResizeRecipe = ResizeRecipe.CROP,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """Bytes -> pixels (h, w, 3) uint8 at `size`=(h, w), with the original width and height.

    Raises ImageError(stage='decode') with a stable class for every bad input.
    """
    out_h, out_w = size
    if not data:
        raise ImageError('decode', 'empty_file', 'the object has 0 bytes')
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as e:
        kind = _unsupported_kind(data)
        if kind:
            raise ImageError('decode', 'unsupported_format',
                             f'{kind}: no decoder for it is installed') from e
        kind = _image_kind(data)
        if kind:
            raise _damaged(data, f'{kind} signature, but the decoder cannot read its '
                           'header', kind) from e
        raise ImageError('decode', 'not_an_image',
                         f'not a recognised image format (starts with {data[:8]!r})') from e
    except (OSError, ValueError, SyntaxError, struct.error) as e:
        raise _damaged(data, f'{type(e).__name__}: {e}') from e

    stored_w, stored_h = im.size
    if stored_w <= 0 or stored_h <= 0:
        raise ImageError('decode', 'corrupt', f'image declares size {stored_w}x{stored_h}')
    if stored_w * stored_h > max_pixels:
        raise ImageError('decode', 'too_large',
                         f'{stored_w}x{stored_h} = {stored_w * stored_h} pixels is over '
                         f'--max_pixels={max_pixels}')
    fmt = im.format
    if fmt in NEVER_DECODED:
        raise ImageError('decode', 'unsupported_format',
                         f'{fmt} image: never decoded here (Pillow would run Ghostscript on it)')
    # Formats without an end marker decode a zero-filled rest as flat grey, then label it.
    if fmt in ('WEBP', 'AVIF') and (zeros := _zero_padded(data)):
        raise ImageError('decode', 'truncated', f'{fmt} data ends in {zeros} zero bytes (the '
                         'rest of a file cut short, never written)')
    try:
        if fmt == 'JPEG':
            # JPEG's EXIF was parsed at open: read it before decoding, because draft
            # mode must know which way up the output will be.
            orientation = _orientation(im)
            swap = orientation in _SWAPS_AXES
            shown_w, shown_h = (stored_h, stored_w) if swap else (stored_w, stored_h)
            req_w, req_h = _draft_request(shown_w, shown_h, out_w, out_h, recipe)
            im.draft('RGB' if im.mode in ('RGB', 'YCbCr') else None,
                     (req_h, req_w) if swap else (req_w, req_h))
        im.load()  # first frame of animations; decoder errors surface here
        if fmt != 'JPEG':
            orientation = _orientation(im)  # after load: reading it may load the image
        if orientation in _SWAPS_AXES:
            stored_w, stored_h = stored_h, stored_w
        if orientation != 1:
            im = ImageOps.exif_transpose(im)
        if fmt == 'PNG':
            _fit_colour_key(im, data)
        im = to_rgb(im)
        if recipe is ResizeRecipe.PLAIN:
            im = im.resize((out_w, out_h), Image.BILINEAR)
        else:
            im = im.resize((out_w, out_h), Image.BILINEAR,
                           box=crop_box(im.width, im.height, out_w, out_h))
        pixels = np.asarray(im, dtype=np.uint8)
    except OSError as e:
        msg = str(e)
        if 'truncated' in msg or 'premature end' in msg.lower():
            raise ImageError('decode', 'truncated', msg) from e
        # 'broken data stream' is a decoder error: a cut-short file or a damaged one.
        raise _damaged(data, f'{type(e).__name__}: {msg}', fmt) from e
    except (ValueError, SyntaxError, IndexError, TypeError, EOFError, MemoryError,
            struct.error) as e:
        raise _damaged(data, f'{type(e).__name__}: {e}', fmt) from e
    if pixels.shape != (out_h, out_w, 3):  # defensive: never hand the model a bad shape
        raise ImageError('decode', 'corrupt', f'decoded to shape {pixels.shape}')
    return Decoded(pixels, stored_w, stored_h)


class _DecodeDoFn(LookaheadDoFn):
    def __init__(self, size: tuple[int, int], recipe: ResizeRecipe, max_pixels: int,
                 *, threads: int, lookahead: int, max_inflight_bytes: int | None = None):
        super().__init__(threads=threads, lookahead=lookahead,
                         max_inflight_bytes=max_inflight_bytes)
        self._size = size
        self._recipe = recipe
        self._max_pixels = max_pixels
        self._decoded = metrics.counter(metrics.DECODED)

    def element_bytes(self, image: ImageBytes) -> int:
        return len(image.data)

    def result_bytes(self, result) -> int:
        return result.pixels.nbytes if isinstance(result, DecodedImage) else 0

    def work(self, image: ImageBytes) -> DecodedImage | Failure:
        try:
            d = decode_image(image.data, self._size, recipe=self._recipe,
                             max_pixels=self._max_pixels)
        except ImageError as e:
            return Failure.from_error(image.uri, e, image.content_sha256, image.source)
        except Exception as e:  # noqa: BLE001 - never lose an element
            return Failure(uri=image.uri, stage='decode', error='corrupt',
                           message=f'unexpected {type(e).__name__}: {e}',
                           content_sha256=image.content_sha256, source=image.source)
        return DecodedImage(uri=image.uri, content_sha256=image.content_sha256,
                            width=d.width, height=d.height, pixels=d.pixels,
                            source=image.source)

    def outputs(self, result):
        if isinstance(result, Failure):
            yield beam.pvalue.TaggedOutput(ERRORS_TAG, result)
        else:
            self._decoded.inc()
            yield result


class DecodeImages(beam.PTransform):
    """ImageBytes -> DecodedImage at `size` (h, w); undecodable -> `errors` output."""

    def __init__(self, size: tuple[int, int], *, recipe: ResizeRecipe = ResizeRecipe.CROP,
                 max_pixels: int = DEFAULT_MAX_PIXELS, threads: int = 2, lookahead: int = 64,
                 max_inflight_bytes: int | None = None):
        super().__init__()
        self._dofn = _DecodeDoFn(tuple(size), ResizeRecipe(recipe), max_pixels,
                                 threads=threads, lookahead=lookahead,
                                 max_inflight_bytes=max_inflight_bytes)

    def expand(self, images):
        return images | 'DecodeResize' >> beam.ParDo(self._dofn).with_outputs(
            ERRORS_TAG, main='decoded')
