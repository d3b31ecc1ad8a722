"""InterpreterPool: a batch spread over several LiteRT interpreters gives exactly what one
interpreter gives, whatever the layout and however many callers share the pool."""
from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest

from transforms.decode import ResizeRecipe, decode_image
from transforms.models import ModelSpec
from transforms.models.interpreters import InterpreterPool, Layout, choose_layout
from transforms.models.litert import TFLiteRuntime

QUANT_V2 = 'models/mobilenet_v2_1.0_224_quant.tflite'


@pytest.mark.parametrize('interpreters, threads, cores, expected', [
    (None, None, 2, Layout(2, 1)),   # nothing given: one single-threaded interpreter per core
    (None, None, 16, Layout(16, 1)),
    (None, 1, 8, Layout(1, 1)),      # threads given: one interpreter (--model_threads 1 on
    (None, 4, 2, Layout(1, 4)),      # Dataflow stays one thread per SDK process)
    (3, None, 8, Layout(3, 2)),      # interpreters given: the cores shared out
    (4, None, 2, Layout(4, 1)),
    (1, 2, 2, Layout(1, 2)),         # both given: as asked
])
def test_the_layout_fills_what_the_user_left_out_from_the_core_count(
        interpreters, threads, cores, expected):
    assert choose_layout(interpreters, threads, cores) == expected


@pytest.fixture(scope='module')
def photos(assets):
    paths = sorted((assets / 'images').glob('*.jpg'))[:3] or sorted(
        (assets / 'imagenet_sample' / 'images').glob('*.JPEG'))[:3]
    pixels = [decode_image(p.read_bytes(), (224, 224), recipe=ResizeRecipe.CROP).pixels
              for p in paths]
    # 11 images: not a multiple of any interpreter count, so slices are uneven
    return np.stack([pixels[i % len(pixels)] for i in range(11)])


def _runtime(assets, **kw) -> TFLiteRuntime:
    spec = ModelSpec(name='v2', format='tflite', path=str(assets / QUANT_V2))
    return TFLiteRuntime(spec, **kw)


def test_several_interpreters_give_exactly_what_one_gives(assets, photos):
    one = _runtime(assets, interpreters=1, threads=1).predict(photos)
    for layout in ({'interpreters': 2, 'threads': 1}, {'interpreters': 3, 'threads': 1},
                   {'interpreters': 1, 'threads': 2}):
        got = _runtime(assets, **layout).predict(photos)
        np.testing.assert_array_equal(got.probabilities, one.probabilities, err_msg=str(layout))
        np.testing.assert_array_equal(got.embeddings, one.embeddings, err_msg=str(layout))
    assert len({int(np.argmax(p)) for p in one.probabilities}) > 1  # different photos differ


def test_callers_sharing_one_pool_at_once_each_get_their_own_images(assets, photos):
    runtime = _runtime(assets, interpreters=2, threads=1)
    alone = [runtime.predict(photos[i:i + 4]).probabilities for i in range(0, 8, 2)]
    with concurrent.futures.ThreadPoolExecutor(4) as callers:
        together = list(callers.map(lambda i: runtime.predict(photos[i:i + 4]).probabilities,
                                    range(0, 8, 2)))
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a, b)


def test_a_failing_image_fails_the_batch_and_leaves_the_pool_usable(assets, photos):
    runtime = _runtime(assets, interpreters=2, threads=1)
    pool: InterpreterPool = runtime._pool

    def one(interp, i):
        if i == 5:
            raise RuntimeError('image 5 is bad')

    with pytest.raises(RuntimeError, match='image 5 is bad'):
        pool.run(9, one)
    seen = []
    pool.run(9, lambda interp, i: seen.append(i))
    assert sorted(seen) == list(range(9))  # every interpreter went back to the pool


def test_the_pools_rows_are_the_interpreters_own_outputs_dequantized_exactly(assets, photos):
    from ai_edge_litert.interpreter import Interpreter
    from transforms.models.litert import expose_penultimate
    content = expose_penultimate((assets / QUANT_V2).read_bytes()).content
    pool = InterpreterPool(content, Layout(2, 1))
    inp, outs = pool.first.get_input_details()[0], pool.first.get_output_details()
    rows = pool.invoke_each(len(photos), lambda i: photos[i][np.newaxis], inp, outs)

    plain = Interpreter(model_content=content)
    plain.allocate_tensors()
    assert all(o['dtype'] == np.uint8 for o in outs)  # both outputs quantized: dequantized here
    for i, image in enumerate(photos):
        plain.set_tensor(inp['index'], image[np.newaxis])
        plain.invoke()
        for o, row in zip(outs, rows):
            scale, zero = o['quantization']
            expected = (plain.get_tensor(o['index']).astype(np.float32) - zero) * scale
            np.testing.assert_array_equal(row[i], expected.reshape(-1))
