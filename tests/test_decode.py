"""Decode: geometry of the resize recipes, modes, EXIF, draft mode."""
import io

import numpy as np
import pytest
from PIL import Image

from transforms.decode import ResizeRecipe, crop_box, decode_image, to_rgb


def _bytes(img: Image.Image, fmt='PNG', **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _quadrants(w=400, h=200) -> Image.Image:
    """Left half red, right half blue, with a green centre square (1/4 of the height)."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (255, 0, 0)
    a[:, w // 2:] = (0, 0, 255)
    s = h // 8
    a[h // 2 - s: h // 2 + s, w // 2 - s: w // 2 + s] = (0, 255, 0)
    return Image.fromarray(a)


def test_crop_box_is_central_and_87_5_percent_of_the_shorter_side():
    assert crop_box(400, 200, 224, 224) == pytest.approx((112.5, 12.5, 287.5, 187.5))


def test_plain_resize_keeps_the_whole_image_crop_keeps_the_centre():
    data = _bytes(_quadrants())
    plain, w, h = decode_image(data, (100, 100), recipe=ResizeRecipe.PLAIN)
    crop, _, _ = decode_image(data, (100, 100), recipe=ResizeRecipe.CROP)
    assert (w, h) == (400, 200) and plain.shape == crop.shape == (100, 100, 3)
    assert plain.dtype == np.uint8
    # plain: left edge red, right edge blue; crop of the central 175x175: same sides but
    # the green square fills a bigger share of the output.
    assert tuple(plain[50, 2]) == (255, 0, 0) and tuple(plain[50, 97]) == (0, 0, 255)
    green = lambda a: np.mean((a[..., 1] > 200) & (a[..., 0] < 50))
    assert green(crop) > 1.5 * green(plain)


@pytest.mark.parametrize('mode', ['L', 'LA', 'RGBA', 'P', 'CMYK', 'I;16', 'I', 'F', '1'])
def test_every_mode_becomes_rgb(mode):
    im = Image.new('RGB', (10, 10), (200, 100, 50)).convert(mode) if mode not in ('I;16', 'I', 'F') \
        else Image.fromarray(np.full((10, 10), 40000 if mode != 'F' else 0.5,
                                     {'I;16': np.uint16, 'I': np.int32, 'F': np.float32}[mode]))
    rgb = to_rgb(im)
    assert rgb.mode == 'RGB' and rgb.size == (10, 10)


def test_sixteen_bit_grey_is_scaled_not_clipped():
    im = Image.fromarray(np.full((4, 4), 32768, np.uint16))
    value = np.asarray(to_rgb(im))[0, 0, 0]
    assert 120 <= value <= 135  # half of 65535 -> about half of 255


def test_transparent_pixels_become_white():
    im = Image.new('RGBA', (4, 4), (10, 20, 30, 0))
    assert tuple(np.asarray(to_rgb(im))[0, 0]) == (255, 255, 255)


def test_exif_rotation_is_applied_and_reported_in_width_height():
    upright = _quadrants(300, 150)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: viewers turn it 90 degrees clockwise
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    data = _bytes(stored, 'JPEG', exif=exif.tobytes(), quality=95)
    pixels, w, h = decode_image(data, (64, 64), recipe=ResizeRecipe.PLAIN)
    ref, rw, rh = decode_image(_bytes(upright, 'JPEG', quality=95), (64, 64),
                               recipe=ResizeRecipe.PLAIN)
    assert (w, h) == (rw, rh) == (300, 150)
    assert np.abs(pixels.astype(int) - ref.astype(int)).mean() < 6


def test_jpeg_draft_decode_stays_close_to_full_decode():
    rng = np.random.default_rng(0)
    smooth = (np.linspace(0, 255, 1600)[None, :, None] * np.ones((1200, 1, 3))).astype(np.uint8)
    img = Image.fromarray(np.clip(smooth + rng.normal(0, 5, smooth.shape), 0, 255).astype(np.uint8))
    data = _bytes(img, 'JPEG', quality=90)
    fast, _, _ = decode_image(data, (224, 224), recipe=ResizeRecipe.CROP)
    full = np.asarray(img.resize((224, 224), Image.BILINEAR,
                                 box=crop_box(1600, 1200, 224, 224)))
    assert np.abs(fast.astype(int) - full.astype(int)).mean() < 4
