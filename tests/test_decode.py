"""Decode: geometry of the resize recipes, modes, EXIF, draft mode."""
import io

import numpy as np
import pytest
from PIL import Image

from corpus import png_one_row
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


COLOUR = (200, 100, 50)
#: ITU-R 601 luma, what Pillow's RGB -> L uses: 0.299 R + 0.587 G + 0.114 B.
LUMA = round(0.299 * COLOUR[0] + 0.587 * COLOUR[1] + 0.114 * COLOUR[2])  # 124
GREY = (LUMA,) * 3


def _colour(mode: str, **convert) -> Image.Image:
    return Image.new('RGB', (10, 10), COLOUR).convert(mode, **convert)


def _composited(value: tuple, alpha: int) -> tuple:
    """`value` at `alpha` over a white background."""
    return tuple(v * alpha / 255 + 255 * (1 - alpha / 255) for v in value)


def _grey(array: np.ndarray) -> np.ndarray:
    """The grey level of an RGB array whose three channels must be equal."""
    assert (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all()
    return array[..., 0].astype(float)


@pytest.mark.parametrize('mode, make, expected, tolerance', [
    pytest.param('RGB', lambda: _colour('RGB'), COLOUR, 0, id='RGB'),
    pytest.param('L', lambda: _colour('L'), GREY, 1, id='L'),
    pytest.param('LA', lambda: _colour('LA'), GREY, 1, id='LA-opaque'),
    pytest.param('LA', lambda: Image.new('LA', (10, 10), (LUMA, 128)), _composited(GREY, 128),
                 1, id='LA-half-transparent'),
    pytest.param('RGBA', lambda: _colour('RGBA'), COLOUR, 0, id='RGBA-opaque'),
    pytest.param('RGBA', lambda: Image.new('RGBA', (10, 10), (*COLOUR, 128)),
                 _composited(COLOUR, 128), 1, id='RGBA-half-transparent'),
    pytest.param('CMYK', lambda: _colour('CMYK'), COLOUR, 3, id='CMYK'),
    # An adaptive palette holds the colour itself: the lookup must give it back.
    pytest.param('P', lambda: _colour('P', palette=Image.ADAPTIVE, colors=16), COLOUR, 0,
                 id='P'),
    pytest.param('PA', lambda: _colour('P', palette=Image.ADAPTIVE, colors=16).convert('PA'),
                 COLOUR, 0, id='PA-opaque'),
    pytest.param('I;16', lambda: Image.fromarray(np.full((10, 10), 40000, np.uint16)),
                 (40000 / 65535 * 255,) * 3, 1, id='I;16'),
    pytest.param('I', lambda: Image.fromarray(np.full((10, 10), 40000, np.int32)),
                 (40000 / 65535 * 255,) * 3, 1, id='I-over-255'),
    pytest.param('I', lambda: Image.fromarray(np.full((10, 10), 100, np.int32)), (100,) * 3, 0,
                 id='I-within-255'),
])
def test_every_mode_becomes_rgb(mode, make, expected, tolerance):
    im = make()
    assert im.mode == mode
    rgb = to_rgb(im)
    assert rgb.mode == 'RGB' and rgb.size == im.size
    error = np.abs(np.asarray(rgb).reshape(-1, 3).astype(float) - expected).max()
    assert error <= tolerance, (mode, np.asarray(rgb)[0, 0], expected)


def test_web_palette_colour_stays_close():
    im = _colour('P')  # the web palette, Floyd-Steinberg dithered
    pixels = np.asarray(to_rgb(im)).reshape(-1, 3).astype(float)
    # The nearest entry is (204, 102, 51); dithering mixes in neighbours 51 apart.
    assert np.abs(pixels.mean(axis=0) - COLOUR).max() <= 6
    assert np.abs(pixels - COLOUR).max() <= 51


def test_one_bit_images_become_black_and_white():
    im = _colour('1')  # Floyd-Steinberg dithering of grey LUMA
    assert im.mode == '1'
    grey = _grey(np.asarray(to_rgb(im)))
    assert set(np.unique(grey)) <= {0, 255}
    assert 0.35 <= (grey == 255).mean() <= 0.65  # about LUMA / 255 of the pixels are white


def test_palette_transparency_becomes_white():
    index = np.zeros((4, 4), np.uint8)
    index[:2] = 1
    im = Image.fromarray(index, 'P')
    im.putpalette([10, 20, 30, *COLOUR])
    im.info['transparency'] = 0
    rgb = np.asarray(to_rgb(im))
    assert (rgb[:2] == COLOUR).all() and (rgb[2:] == 255).all()


@pytest.mark.parametrize('mode, key, kept', [
    ('RGB', COLOUR, (10, 20, 30)),  # a PNG's tRNS chunk: one colour stands for transparent
    ('L', LUMA, (40, 40, 40)),
], ids=['RGB-colour-key', 'L-grey-key'])
def test_a_colour_key_png_shows_its_transparent_colour_as_white(mode, key, kept):
    im = Image.new(mode, (8, 8), key)
    im.paste(Image.new(mode, (8, 4), kept if mode == 'RGB' else kept[0]), (0, 4))
    data = _bytes(im, 'PNG', transparency=key)
    assert Image.open(io.BytesIO(data)).info['transparency'] == key  # the tRNS chunk is there
    pixels, _, _ = decode_image(data, (8, 8), recipe=ResizeRecipe.PLAIN)
    assert (pixels[:3] == 255).all()  # the keyed colour: transparent, so white like RGBA's
    assert (pixels[5:] == kept).all()  # every other colour as it is


def test_a_sixteen_bit_colour_key_never_whitens_an_opaque_pixel_that_shares_its_high_byte():
    import struct
    # Key: black. Pixel 0 is the key (transparent); pixel 1, (0, 0, 200), is opaque but
    # cut to 8 bits it reads (0, 0, 0) too. A key that cannot be told apart is dropped.
    data = png_one_row(2, struct.pack('>6H', 0, 0, 0, 0, 0, 200), 16, 2,
                       struct.pack('>3H', 0, 0, 0))
    pixels, _, _ = decode_image(data, (1, 2), recipe=ResizeRecipe.PLAIN)
    assert (pixels[0, 1] == 0).all()  # the opaque near-black pixel stays black


def test_a_two_bit_grey_key_is_scaled_like_the_pixels():
    # 2-bit grey levels 0, 1, 2, 3 (Pillow shows 0, 85, 170, 255); level 1 is transparent.
    data = png_one_row(4, bytes([0b00011011]), 2, 0, b'\x00\x01')
    pixels, _, _ = decode_image(data, (1, 4), recipe=ResizeRecipe.PLAIN)
    assert pixels[0, :, 0].tolist() == [0, 255, 170, 255]


def test_32_bit_integers_within_0_255_stay_as_they_are():
    ramp = np.arange(256, dtype=np.int32).reshape(16, 16)
    grey = _grey(np.asarray(to_rgb(Image.fromarray(ramp))))
    np.testing.assert_array_equal(grey, ramp)


def test_32_bit_integers_over_255_are_scaled_as_16_bit():
    values = np.array([[0, 1000], [40000, 65535]], np.int32)
    grey = _grey(np.asarray(to_rgb(Image.fromarray(values))))
    np.testing.assert_allclose(grey, values * 255 / 65535, atol=1)


def test_float_images_are_normalised_from_min_to_max():
    # The ramp spans [0, 1], so the normalisation range is its own min..max.
    ramp = np.linspace(-1.0, 3.0, 64, dtype=np.float32).reshape(8, 8)
    grey = _grey(np.asarray(to_rgb(Image.fromarray(ramp))))
    np.testing.assert_allclose(grey, (ramp + 1) / 4 * 255, atol=1)
    assert grey.min() == 0 and grey.max() == 255


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


def _photo_bytes(fmt: str) -> bytes:
    rng = np.random.default_rng(3)
    smooth = np.repeat(np.repeat(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), 8, 0), 8, 1)
    buf = io.BytesIO()
    Image.fromarray(smooth).save(buf, format=fmt, quality=90)
    return buf.getvalue()


@pytest.mark.parametrize('fmt', ['WEBP', 'AVIF'])
def test_a_webp_or_avif_cut_short_and_zero_filled_is_truncated_not_labeled(fmt):
    from PIL import features
    from transforms.errors import ImageError
    if fmt == 'AVIF':
        assert features.check('avif'), 'this Pillow decodes AVIF: its test must run'
    data = _photo_bytes(fmt)
    decode_image(data, (32, 32))  # whole: fine
    decode_image(data + bytes(16), (32, 32))  # a few zero bytes of padding: still fine
    cut = data[:len(data) // 2] + bytes(len(data) - len(data) // 2)
    with pytest.raises(ImageError) as e:
        decode_image(cut, (32, 32))
    assert (e.value.error, e.value.stage) == ('truncated', 'decode')


def test_an_eps_file_is_an_unsupported_format_never_handed_to_ghostscript(monkeypatch):
    from PIL import EpsImagePlugin
    from transforms.errors import ImageError

    def ghostscript(*_a, **_k):
        raise AssertionError('Ghostscript was run on an untrusted file')
    monkeypatch.setattr(EpsImagePlugin, 'Ghostscript', ghostscript)
    eps = (b'%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n'
           b'newpath 0 0 moveto 10 10 lineto stroke\n%%EOF\n')
    with pytest.raises(ImageError) as e:
        decode_image(eps, (32, 32))
    assert e.value.error == 'unsupported_format' and 'EPS' in e.value.message
