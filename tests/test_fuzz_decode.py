"""Fuzz: mutated image bytes never crash the decoder, nor make it blow up in memory or time.

Small valid JPEG, progressive JPEG, PNG, GIF, WebP and BMP files are flipped,
overwritten, spliced, cut and truncated by hypothesis. `decode_image` must return
pixels of exactly the requested shape, or raise `ImageError` of the decode stage
with a known class; any other exception is a bug that would lose an element.
"""
from __future__ import annotations

import datetime
import resource

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from corpus import encode, photo, png_bomb_header
from transforms.decode import ResizeRecipe, decode_image
from transforms.errors import ERROR_CLASSES, ImageError

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


def _check(data: bytes, recipe: ResizeRecipe):
    try:
        pixels, width, height = decode_image(data, SIZE, recipe=recipe, max_pixels=MAX_PIXELS)
    except ImageError as e:
        assert e.stage == 'decode' and e.error in ERROR_CLASSES, e
        assert e.message
        return
    assert isinstance(pixels, np.ndarray)
    assert pixels.shape == (*SIZE, 3) and pixels.dtype == np.uint8
    assert width >= 1 and height >= 1 and width * height <= MAX_PIXELS


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


@pytest.mark.parametrize('name', sorted(SEEDS))
def test_every_seed_decodes(name):
    pixels, width, height = decode_image(SEEDS[name], SIZE, max_pixels=MAX_PIXELS)
    assert pixels.shape == (*SIZE, 3) and width > 0 and height > 0


def test_mutated_images_decode_or_raise_image_error():
    before = _maxrss_mb()

    @settings(max_examples=150, derandomize=True, database=None,
              deadline=datetime.timedelta(seconds=5),
              suppress_health_check=[HealthCheck.too_slow])
    @given(data=mutated_images(), recipe=st.sampled_from(list(ResizeRecipe)))
    def fuzz(data, recipe):
        _check(data, recipe)

    fuzz()
    # No example held on to (or briefly needed) more than the pixel budget allows.
    assert _maxrss_mb() - before < 256


@pytest.mark.parametrize('width, height', [(60_000, 60_000), (1_000_001, 1), (1, 2_000_000),
                                           (4_294_967, 1_000)])
def test_declared_size_over_budget_is_refused_without_decoding(width, height):
    before = _maxrss_mb()
    with pytest.raises(ImageError) as info:
        decode_image(png_bomb_header(width, height), SIZE, max_pixels=MAX_PIXELS)
    assert (info.value.stage, info.value.error) == ('decode', 'too_large')
    assert _maxrss_mb() - before < 64
