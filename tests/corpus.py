"""A generated corpus of good, odd and hostile inputs, with the outcome each must have.

`build_corpus(root)` writes every case under `root` (a tmp dir) with Pillow and
numpy and returns a list of `Case`s: the URI as a manifest lists it, and either
'ok' (one labels row) or (stage, error class) (one errors row). Nothing here is
copied from the shared assets; a case built from a real photo re-encodes it into
`root`.
"""
from __future__ import annotations

import dataclasses
import io
import pathlib
import struct
import zlib
from typing import Union

import numpy as np
from PIL import Image

OK = 'ok'
Expected = Union[str, tuple[str, str]]

#: The --max_pixels the corpus run uses: large enough for every good case
#: (the biggest is 4000x3), far below the bomb headers' declared sizes.
CORPUS_MAX_PIXELS = 20_000_000
#: The --max_bytes the corpus run uses; the `oversized` case is just over it.
CORPUS_MAX_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    uri: str
    expected: Expected
    #: How many times the manifest lists the URI (duplicates are labeled once).
    listed: int = 1

    @property
    def ok(self) -> bool:
        return self.expected == OK


# --- pixel and byte helpers ---------------------------------------------------------

def photo(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A photo-like RGB array: smooth gradients plus noise, deterministic per seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / max(w - 1, 1), yy * 255 / max(h - 1, 1),
                     np.full((h, w), rng.integers(0, 255))], axis=-1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def encode(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + kind + data + struct.pack(
        '>I', zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb_header(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR declaring width x height, with a tiny IDAT.

    Decoding it would need width*height*3 bytes; it must be refused on its header.
    """
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b'\x00' * 64)
    return (b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', ihdr) + _png_chunk(b'IDAT', idat)
            + _png_chunk(b'IEND', b''))


def png_one_row(width: int, row: bytes, depth: int, colour_type: int, trns: bytes) -> bytes:
    """A one-row PNG with a tRNS chunk, written by hand: Pillow writes neither 16-bit RGB
    nor 2-bit grey colour keys."""
    ihdr = struct.pack('>IIBBBBB', width, 1, depth, colour_type, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', ihdr) + _png_chunk(b'tRNS', trns)
            + _png_chunk(b'IDAT', zlib.compress(b'\x00' + row)) + _png_chunk(b'IEND', b''))


def gif_bomb_header(width: int, height: int) -> bytes:
    """A GIF whose logical screen and single frame declare width x height."""
    small = encode(Image.new('P', (1, 1)), 'GIF')
    # Logical screen size at offset 6; image descriptor size after the 0x2C marker.
    data = bytearray(small)
    data[6:10] = struct.pack('<HH', width, height)
    at = data.index(b'\x2c', 13)
    data[at + 5:at + 9] = struct.pack('<HH', width, height)
    return bytes(data)


def jpeg_bomb_header(width: int, height: int) -> bytes:
    """A small JPEG whose SOF0 frame header is rewritten to declare width x height."""
    data = bytearray(encode(Image.fromarray(photo(16, 16)), 'JPEG', quality=90))
    at = data.index(b'\xff\xc0')
    data[at + 5:at + 9] = struct.pack('>HH', height, width)
    return bytes(data)


def exif_rotated(pixels: np.ndarray, fmt: str, **params) -> bytes:
    """`pixels` stored turned 90 degrees, with EXIF orientation 6 saying how to turn it back.

    Orientation 6 means "rotate 90 degrees clockwise to view", so the stored
    pixels are the upright ones rotated 90 degrees counter-clockwise.
    """
    stored = Image.fromarray(np.rot90(pixels, k=1))  # counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(stored, fmt, exif=exif.tobytes(), **params)


def _cmyk_jpeg() -> bytes:
    return encode(Image.fromarray(photo(80, 60, 3)).convert('CMYK'), 'JPEG', quality=90)


def _png16() -> bytes:
    ramp = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)
    return encode(Image.fromarray(ramp), 'PNG')


def _palette_png_transparent() -> bytes:
    im = Image.fromarray(photo(60, 40, 4)).convert('P', palette=Image.ADAPTIVE, colors=32)
    return encode(im, 'PNG', transparency=0)


def _animated_gif() -> bytes:
    frames = [Image.fromarray(photo(48, 32, s)).convert('P', palette=Image.ADAPTIVE)
              for s in range(3)]
    return encode(frames[0], 'GIF', save_all=True, append_images=frames[1:], duration=80,
                  loop=0)


def _truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[:int(len(data) * keep)]


def _jpeg_bad_sof(jpeg: bytes) -> bytes:
    """A complete JPEG whose frame header declares 7-bit samples (not a JPEG precision)."""
    data = bytearray(jpeg)
    data[data.index(b'\xff\xc0') + 4] = 7
    return bytes(data)


def _jpeg_broken_scan(jpeg: bytes) -> bytes:
    """A complete JPEG (end marker intact) with a run of invalid markers in its scan data."""
    data = bytearray(jpeg)
    mid = len(data) // 2
    for i in range(mid, mid + 200):
        data[i] = 0xFF if i % 2 == 0 else 0xD5
    return bytes(data)


def _png_bad_crc(png: bytes) -> bytes:
    """A complete PNG with one IHDR byte flipped, so the chunk's CRC no longer matches."""
    data = bytearray(png)
    data[18] ^= 0xFF  # inside IHDR's width field
    return bytes(data)


SVG = (b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" '
       b'width="100" height="100"><circle cx="50" cy="50" r="40" fill="red"/></svg>\n')
SVG_BARE = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'
PDF = (b'%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n'
       b'2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n')
HTML = (b'<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>'
        b'<body><h1>Not Found</h1></body></html>\n')
TEXT = b'this is not an image, just a text file that someone named photo.jpg\n'
# An ISO-BMFF ftyp box with the HEIC brand, then junk: what an iPhone photo starts with.
FAKE_HEIC = (b'\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic' + b'\x00\x00\x00\x08mdat'
             + bytes(range(200)))


def build_corpus(root: pathlib.Path) -> list[Case]:
    """Write every case under `root`; return them, one per distinct URI."""
    root.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def add(name: str, filename: str, data: bytes, expected: Expected, listed: int = 1):
        path = root / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        cases.append(Case(name, str(path), expected, listed))

    rgb = Image.fromarray(photo(120, 90, 1))
    jpeg = encode(rgb, 'JPEG', quality=90)
    png = encode(rgb, 'PNG')

    # Good: every format and mode the decoder must handle.
    add('jpeg', 'good/baseline.jpg', jpeg, OK)
    add('jpeg_progressive', 'good/progressive.jpg',
        encode(Image.fromarray(photo(120, 90, 2)), 'JPEG', quality=85, progressive=True), OK)
    add('jpeg_cmyk', 'good/cmyk.jpg', _cmyk_jpeg(), OK)
    add('jpeg_grayscale', 'good/gray.jpg', encode(rgb.convert('L'), 'JPEG'), OK)
    add('jpeg_exif_rotated', 'good/exif_rotated.jpg',
        exif_rotated(photo(96, 64, 5), 'JPEG', quality=95), OK)
    add('jpeg_no_extension', 'good/jpeg_without_extension',
        encode(Image.fromarray(photo(64, 64, 6)), 'JPEG'), OK)
    add('jpeg_upper_extension', 'good/UPPER.JPEG',
        encode(Image.fromarray(photo(64, 64, 7)), 'JPEG'), OK)
    add('png_named_jpg', 'good/really_a_png.jpg', png, OK)
    add('jpeg_named_png', 'good/really_a_jpeg.png', jpeg, OK)
    add('png_rgb', 'good/rgb.png', encode(Image.fromarray(photo(70, 50, 8)), 'PNG'), OK)
    add('png_16bit', 'good/sixteen_bit.png', _png16(), OK)
    add('png_palette_transparency', 'good/palette_transparent.png',
        _palette_png_transparent(), OK)
    add('png_rgba', 'good/rgba.png',
        encode(Image.fromarray(photo(50, 50, 9)).convert('RGBA'), 'PNG'), OK)
    add('png_la', 'good/la.png', encode(rgb.convert('LA'), 'PNG'), OK)
    add('png_1bit', 'good/bilevel.png', encode(rgb.convert('1'), 'PNG'), OK)
    add('png_1x1', 'good/one_pixel.png', encode(Image.new('RGB', (1, 1), (200, 30, 30)), 'PNG'),
        OK)
    add('jpeg_4000x3', 'good/wide_4000x3.jpg',
        encode(Image.fromarray(photo(4000, 3, 10)), 'JPEG'), OK)
    add('png_3x2000', 'good/tall_3x2000.png', encode(Image.fromarray(photo(3, 2000, 11)), 'PNG'),
        OK)
    add('gif_animated', 'good/animated.gif', _animated_gif(), OK)
    add('gif_still', 'good/still.gif', encode(rgb.convert('P', palette=Image.ADAPTIVE), 'GIF'),
        OK)
    add('bmp', 'good/image.bmp', encode(Image.fromarray(photo(40, 30, 12)), 'BMP'), OK)
    add('tiff_lzw', 'good/image.tiff',
        encode(Image.fromarray(photo(40, 30, 13)), 'TIFF', compression='tiff_lzw'), OK)
    add('tiff_cmyk', 'good/cmyk.tif',
        encode(Image.fromarray(photo(40, 30, 14)).convert('CMYK'), 'TIFF'), OK)
    add('webp_lossy', 'good/lossy.webp', encode(Image.fromarray(photo(64, 48, 15)), 'WEBP'), OK)
    add('webp_lossless_alpha', 'good/alpha.webp',
        encode(Image.fromarray(photo(64, 48, 16)).convert('RGBA'), 'WEBP', lossless=True), OK)
    add('unicode_name', 'good/ünïcødé 画像 ✓.jpg',
        encode(Image.fromarray(photo(60, 60, 17)), 'JPEG'), OK)
    add('spaces_in_name', 'good/name with  spaces .png',
        encode(Image.fromarray(photo(60, 60, 18)), 'PNG'), OK)
    add('duplicate_uri', 'good/listed_twice.jpg',
        encode(Image.fromarray(photo(60, 60, 19)), 'JPEG'), OK, listed=2)

    # Hostile or broken: each must become exactly one classified error row.
    add('empty', 'bad/empty.jpg', b'', ('read', 'empty_file'))
    add('truncated_jpeg', 'bad/truncated.jpg', _truncated(jpeg), ('decode', 'truncated'))
    add('truncated_png', 'bad/truncated.png', _truncated(png), ('decode', 'truncated'))
    add('truncated_gif', 'bad/truncated.gif',
        _truncated(encode(rgb.convert('P', palette=Image.ADAPTIVE), 'GIF')),
        ('decode', 'truncated'))
    add('truncated_webp', 'bad/truncated.webp', _truncated(encode(rgb, 'WEBP')),
        ('decode', 'truncated'))
    add('truncated_bmp', 'bad/truncated.bmp', _truncated(encode(rgb, 'BMP')),
        ('decode', 'truncated'))
    add('jpeg_soi_only', 'bad/soi_only.jpg', b'\xff\xd8\xff', ('decode', 'truncated'))
    add('jpeg_bad_frame_header', 'bad/bad_sof.jpg', _jpeg_bad_sof(jpeg), ('decode', 'corrupt'))
    add('jpeg_broken_scan', 'bad/broken_scan.jpg', _jpeg_broken_scan(jpeg),
        ('decode', 'corrupt'))
    add('png_bad_crc', 'bad/bad_crc.png', _png_bad_crc(png), ('decode', 'corrupt'))
    add('png_zero_width', 'bad/zero_width.png', png_bomb_header(0, 10), ('decode', 'corrupt'))
    add('random_bytes', 'bad/random.jpg', np.random.default_rng(0).bytes(4096),
        ('decode', 'not_an_image'))
    add('text_named_jpg', 'bad/photo.jpg', TEXT, ('decode', 'not_an_image'))
    add('html_named_jpg', 'bad/error_page.jpg', HTML, ('decode', 'not_an_image'))
    add('svg', 'bad/drawing.svg', SVG, ('decode', 'unsupported_format'))
    add('svg_named_png', 'bad/drawing.png', SVG_BARE, ('decode', 'unsupported_format'))
    add('pdf', 'bad/document.pdf', PDF, ('decode', 'unsupported_format'))
    add('fake_heic', 'bad/iphone.heic', FAKE_HEIC, ('decode', 'unsupported_format'))
    add('bomb_png', 'bad/bomb.png', png_bomb_header(50_000, 50_000), ('decode', 'too_large'))
    add('bomb_png_moderate', 'bad/bomb_moderate.png', png_bomb_header(6_000, 6_000),
        ('decode', 'too_large'))
    add('bomb_gif', 'bad/bomb.gif', gif_bomb_header(30_000, 30_000), ('decode', 'too_large'))
    add('bomb_jpeg', 'bad/bomb.jpg', jpeg_bomb_header(40_000, 40_000), ('decode', 'too_large'))
    add('oversized_file', 'bad/oversized.png', b'\x89PNG\r\n\x1a\n' + bytes(CORPUS_MAX_BYTES),
        ('read', 'too_large'))

    directory = root / 'bad' / 'a_directory.jpg'
    directory.mkdir(parents=True, exist_ok=True)
    cases.append(Case('directory', str(directory), ('read', 'not_a_file')))
    cases.append(Case('missing', str(root / 'bad' / 'does not exist.jpg'), ('read', 'not_found')))
    dangling = root / 'bad' / 'dangling_link.jpg'
    dangling.symlink_to(root / 'bad' / 'gone.jpg')
    cases.append(Case('dangling_symlink', str(dangling), ('read', 'not_found')))
    return cases


def write_manifest(path: pathlib.Path, cases: list[Case]) -> pathlib.Path:
    """A .txt manifest listing every case (duplicates as often as `listed` says)."""
    lines = ['# imagelabel robustness corpus']
    for case in cases:
        lines.extend([case.uri] * case.listed)
    path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
    return path
