"""Fuzz: mutated image bytes never crash the decoder, nor make it blow up in memory or time.

Small valid JPEG, progressive JPEG, PNG, GIF, WebP and BMP files are flipped,
overwritten, spliced, cut and truncated by hypothesis. `decode_image` must return
pixels of exactly the requested shape, or raise `ImageError` of the decode stage
with a known class; any other exception is a bug that would lose an element.

Oracle: plain Pillow (`Image.open` + `load()` of the first frame). Whatever Pillow
itself rejects, `decode_image` must reject too: labeling pixels that Pillow calls
broken would put a confident label on garbage.

Memory is measured where it can fail: in a fresh interpreter that does nothing
but the decodes and reports its own peak RSS per phase (`ru_maxrss` is a high-water
mark: in the pytest process earlier tests have already raised it past any bound, and
a child inherits its parent's), with a control decode proving the probe sees memory.
"""
from __future__ import annotations

import datetime
import io
import json
import os
import pathlib
import pickle
import struct
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from corpus import encode, gif_bomb_header, jpeg_bomb_header, photo, png_bomb_header
from transforms.decode import ResizeRecipe, decode_image
from transforms.errors import ERROR_CLASSES, ImageError

ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZE = (24, 32)  # (height, width) asked of the decoder
MAX_PIXELS = 1_000_000  # a mutated header may declare any size: decoding stays under 3 MB


def _seeds() -> dict[str, bytes]:
    rgb = Image.fromarray(photo(40, 30, 0))
    frames = [Image.fromarray(photo(20, 16, s)).convert('P', palette=Image.ADAPTIVE)
              for s in range(2)]
    return {
        'jpeg': encode(rgb, 'JPEG', quality=80),
        'jpeg_progressive': encode(rgb, 'JPEG', quality=80, progressive=True),
        'png': encode(rgb, 'PNG'),
        'png_palette': encode(rgb.convert('P', palette=Image.ADAPTIVE, colors=16), 'PNG',
                              transparency=0),
        'gif_animated': encode(frames[0], 'GIF', save_all=True, append_images=frames[1:]),
        'webp': encode(rgb, 'WEBP'),
        'bmp': encode(rgb.resize((12, 9)), 'BMP'),
    }


SEEDS = _seeds()


@st.composite
def mutated_images(draw):
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(['flip', 'overwrite', 'insert', 'delete', 'truncate',
                                     'header']))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == 'flip':
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == 'overwrite':
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[at:at + len(chunk)] = chunk
        elif kind == 'insert':
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == 'delete':
            del data[at:at + draw(st.integers(1, 64))]
        elif kind == 'truncate':
            del data[at:]
        else:  # header fields (sizes, counts, lengths) live in the first bytes
            pos = draw(st.integers(0, min(len(data), 64) - 1))
            data[pos] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
    return bytes(data)


def pillow_error(data: bytes) -> BaseException | None:
    """What plain Pillow raises opening and loading `data` (first frame), or None.

    Pillow's own bomb limit is off (`MAX_IMAGE_PIXELS = None`) and truncated files
    are errors, as in production. Images declaring more than MAX_PIXELS are not
    loaded (that could need gigabytes): `decode_image` refuses them on the header,
    which `_check` verifies, so they need no oracle.
    """
    saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = None, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            im = Image.open(io.BytesIO(data))
            width, height = im.size
            if width * height > MAX_PIXELS:
                return None
            im.load()
    except Exception as e:  # noqa: BLE001 - any rejection counts
        return e
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved
    return None


def _check(data: bytes, recipe: ResizeRecipe):
    rejected = pillow_error(data)
    note(f'Pillow alone: {type(rejected).__name__}: {rejected}' if rejected
         else 'Pillow alone: loads')
    try:
        pixels, width, height = decode_image(data, SIZE, recipe=recipe, max_pixels=MAX_PIXELS)
    except ImageError as e:
        assert e.stage == 'decode' and e.error in ERROR_CLASSES, e
        assert e.message
        return
    assert rejected is None, (
        f'decode_image labeled pixels from a file Pillow rejects '
        f'({type(rejected).__name__}: {rejected})')
    assert isinstance(pixels, np.ndarray)
    assert pixels.shape == (*SIZE, 3) and pixels.dtype == np.uint8
    assert width >= 1 and height >= 1 and width * height <= MAX_PIXELS


# --- peak memory, measured in a fresh interpreter --------------------------------------

_PEAK_RSS_PROBE = r'''
import json, pickle, re, sys
from transforms.decode import ResizeRecipe, decode_image
from transforms.errors import ImageError


def status_mb(field):
    with open('/proc/self/status') as f:
        return int(re.search(field + r':\s+(\d+) kB', f.read()).group(1)) / 1024


def reset_peak():
    # Linux >= 4.0: writing 5 sets this process's VmHWM back to its current RSS.
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        return False
    return True


report = {}
for phase, jobs in pickle.load(sys.stdin.buffer):
    start_mb = status_mb('VmRSS') if reset_peak() else status_mb('VmHWM')
    outcomes = []
    for data, size, recipe, max_pixels in jobs:
        try:
            decode_image(data, size, recipe=ResizeRecipe(recipe), max_pixels=max_pixels)
            outcomes.append('ok')
        except ImageError as e:
            outcomes.append(e.error)
    report[phase] = {'growth_mb': status_mb('VmHWM') - start_mb, 'outcomes': outcomes}
print(json.dumps(report))
'''


def peak_rss_growth(phases: list[tuple[str, list[tuple]]]) -> dict[str, dict]:
    """Run each phase's decodes, in order, in a new interpreter: how far each raised RSS.

    A phase is (name, [(data, size, recipe, max_pixels), ...]); the report gives,
    per phase, its decode outcomes and `growth_mb`, its peak RSS over the RSS it
    started at. The first phase should be a warm-up (one decode of each format,
    which loads the codecs and fills Pillow's and numpy's caches).

    Why not `ru_maxrss`: on Linux a child's ru_maxrss starts at its parent's peak
    (the signal struct keeps it across fork and exec), so it would report the pytest
    process's high-water mark again. VmHWM in /proc/self/status belongs to the new
    address space, and writing 5 to /proc/self/clear_refs resets it between phases
    (where that is not allowed, a phase counts only how far it exceeded earlier ones).
    """
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))}
    proc = subprocess.run([sys.executable, '-c', _PEAK_RSS_PROBE], input=pickle.dumps(phases),
                          capture_output=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors='replace')[-4000:]
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def _warmup_phase() -> tuple[str, list[tuple]]:
    return 'warmup', [(data, SIZE, recipe.value, MAX_PIXELS)
                      for data in SEEDS.values() for recipe in ResizeRecipe]


# --- tests ------------------------------------------------------------------------------

@pytest.mark.parametrize('name', sorted(SEEDS))
def test_every_seed_decodes(name):
    assert pillow_error(SEEDS[name]) is None
    pixels, width, height = decode_image(SEEDS[name], SIZE, max_pixels=MAX_PIXELS)
    assert pixels.shape == (*SIZE, 3) and width > 0 and height > 0


def test_mutated_images_decode_or_raise_image_error():
    examples: list[tuple] = []

    @settings(max_examples=150, derandomize=True, database=None,
              deadline=datetime.timedelta(seconds=5),
              suppress_health_check=[HealthCheck.too_slow])
    @given(data=mutated_images(), recipe=st.sampled_from(list(ResizeRecipe)))
    def fuzz(data, recipe):
        examples.append((data, SIZE, recipe.value, MAX_PIXELS))
        _check(data, recipe)

    fuzz()
    # Same inputs again in a fresh interpreter: no example held on to (or briefly
    # needed) much more than the pixel budget allows.
    report = peak_rss_growth([_warmup_phase(), ('fuzz', examples)])
    growth = report['fuzz']['growth_mb']
    assert growth < 128, f'decoding the fuzz examples raised peak RSS by {growth:.0f} MB'
    assert len(report['fuzz']['outcomes']) == len(examples) >= 50


# --- a PNG whose compressed pixel data is damaged ---------------------------------------

def _png_chunks(png: bytes):
    pos = 8
    while pos < len(png):
        (length,) = struct.unpack('>I', png[pos:pos + 4])
        yield png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]
        pos += 12 + length


def damaged_idat_png(damage) -> bytes:
    """A good PNG whose IDAT data `damage(bytearray)` edits, with every chunk CRC valid.

    Only the zlib stream is broken: signature, IHDR, chunk lengths, CRCs and IEND
    are all as a good file has them.
    """
    png = encode(Image.fromarray(photo(64, 48, 5)), 'PNG')
    out = bytearray(png[:8])
    for kind, body in _png_chunks(png):
        if kind == b'IDAT':
            body = bytearray(body)
            damage(body)
            body = bytes(body)
        out += struct.pack('>I', len(body)) + kind + body
        out += struct.pack('>I', zlib.crc32(kind + body) & 0xFFFFFFFF)
    return bytes(out)


def _bad_block_type(idat: bytearray):
    idat[2] |= 0b110  # first deflate block header (after the 2-byte zlib header): BTYPE=11


def _garbage_mid_stream(idat: bytearray):
    at = len(idat) // 2
    idat[at:at + 16] = b'\xff' * 16


def _garbage_near_end(idat: bytearray):
    at = len(idat) * 9 // 10
    idat[at:at + 16] = b'\xff' * 16


@pytest.mark.parametrize('damage', [_bad_block_type, _garbage_mid_stream, _garbage_near_end])
def test_png_with_damaged_idat_stream_is_an_error(damage):
    """Regression: the PNG EXIF lookup loaded the image and swallowed the decoder's
    error, and the second load() then 'succeeded' with partly decoded pixels."""
    data = damaged_idat_png(damage)
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and data.endswith(
        struct.pack('>I', 0) + b'IEND' + struct.pack('>I', zlib.crc32(b'IEND')))
    rejected = pillow_error(data)
    assert isinstance(rejected, OSError) and 'broken data stream' in str(rejected)
    with pytest.raises(ImageError) as info:
        decode_image(data, SIZE, max_pixels=MAX_PIXELS)
    assert info.value.stage == 'decode' and info.value.error in ('truncated', 'corrupt'), \
        info.value


# --- images that declare a huge size ----------------------------------------------------

DECLARED = {
    'png_60000x60000': png_bomb_header(60_000, 60_000),
    'png_1000001x1': png_bomb_header(1_000_001, 1),
    'png_1x2000000': png_bomb_header(1, 2_000_000),
    'png_4294967x1000': png_bomb_header(4_294_967, 1_000),
    'gif_65535x65535': gif_bomb_header(65_535, 65_535),
    'jpeg_65000x65000': jpeg_bomb_header(65_000, 65_000),
}
#: A genuine 4000x4000 image, decoded under a budget that allows it: Pillow holds it
#: as 64 MB of pixels, so the probe must see its peak RSS jump.
CONTROL_SIDE = 4000


@pytest.fixture(scope='module')
def declared_size_report() -> dict[str, dict]:
    control = encode(Image.new('RGB', (CONTROL_SIDE, CONTROL_SIDE)), 'PNG')
    return peak_rss_growth(
        [_warmup_phase()]
        + [(name, [(data, SIZE, 'crop', MAX_PIXELS)]) for name, data in DECLARED.items()]
        + [('control', [(control, SIZE, 'crop', CONTROL_SIDE ** 2)])])


@pytest.mark.parametrize('name', sorted(DECLARED))
def test_declared_size_over_budget_is_refused_without_decoding(name, declared_size_report):
    phase = declared_size_report[name]
    assert phase['outcomes'] == ['too_large']
    growth = phase['growth_mb']
    assert growth < 64, f'refusing {name} raised peak RSS by {growth:.0f} MB'


def test_peak_rss_probe_sees_a_real_decode(declared_size_report):
    """The bound above can fail: a decode that does allocate shows up in the probe."""
    control = declared_size_report['control']
    assert control['outcomes'] == ['ok']
    growth = control['growth_mb']
    assert growth > 32, f'decoding a {CONTROL_SIDE}x{CONTROL_SIDE} image showed only ' \
                        f'{growth:.0f} MB'
