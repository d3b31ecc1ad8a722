"""Each composite PTransform alone, with TestPipeline and assert_that."""
import apache_beam as beam
import numpy as np
from apache_beam.testing.test_pipeline import TestPipeline

TestPipeline.__test__ = False  # a Beam class, not a pytest test class
from apache_beam.testing.util import assert_that, equal_to

from conftest import write_jpeg
from transforms.decode import DecodeImages, DecodedImage
from transforms.label import ImageModelHandler, LabelImages
from transforms.models import resolve_spec
from transforms.read import ImageBytes, ReadImages


def test_read_images_reads_bytes_and_routes_missing_files_to_errors(tmp_path):
    a = write_jpeg(tmp_path / 'a.jpg')
    with TestPipeline() as p:
        out = p | beam.Create([str(a), str(tmp_path / 'missing.jpg')]) | ReadImages()
        assert_that(out.images | beam.Map(lambda i: (i.uri, len(i.data), i.content_sha256[:8])),
                    equal_to([(str(a), a.stat().st_size,
                               __import__('hashlib').sha256(a.read_bytes()).hexdigest()[:8])]),
                    label='images')
        assert_that(out.errors | beam.Map(lambda f: (f.stage, f.error)),
                    equal_to([('read', 'not_found')]), label='errors')


def test_decode_images_resizes_and_routes_garbage_to_errors(tmp_path):
    good = write_jpeg(tmp_path / 'a.jpg', size=(200, 100)).read_bytes()
    with TestPipeline() as p:
        out = (p | beam.Create([ImageBytes('a', good, 'h1'), ImageBytes('b', b'not an image', 'h2')])
               | DecodeImages((32, 48)))
        assert_that(out.decoded | beam.Map(lambda d: (d.uri, d.pixels.shape, d.width, d.height)),
                    equal_to([('a', (32, 48, 3), 200, 100)]), label='decoded')
        assert_that(out.errors | beam.Map(lambda f: (f.uri, f.stage, f.error, f.content_sha256)),
                    equal_to([('b', 'decode', 'not_an_image', 'h2')]), label='errors')


def test_label_images_runs_the_model_through_run_inference(tiny_keras_model):
    handler = ImageModelHandler(resolve_spec(str(tiny_keras_model)), batch_size=4)
    rng = np.random.default_rng(0)
    images = [DecodedImage(f'img{i}', f'h{i}', 10, 10,
                           rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)) for i in range(6)]
    with TestPipeline() as p:
        out = p | beam.Create(images) | LabelImages(handler)
        shapes = out['scores'] | beam.Map(
            lambda r: (r.example.uri, r.inference.probabilities.shape,
                       r.inference.embedding.shape,
                       bool(abs(r.inference.probabilities.sum() - 1) < 1e-4)))
        assert_that(shapes, equal_to([(f'img{i}', (1000,), (16,), True) for i in range(6)]),
                    label='scores')
        assert_that(out['errors'], equal_to([]), label='errors')


def test_the_read_stage_bounds_its_memory_by_max_inflight_bytes_not_by_max_bytes():
    # Two different limits: one per object (--max_bytes), one for what the read-ahead holds
    # (--max_inflight_bytes). The read stage once let the first overwrite the second.
    from transforms.read import ReadImages, RetryPolicy
    dofn = ReadImages(max_bytes=1000, retry=RetryPolicy(attempts=1),
                      max_inflight_bytes=5 << 20)._dofn
    assert dofn._max_inflight_bytes == 5 << 20 and dofn._max_bytes == 1000
    unbounded = ReadImages(max_bytes=1000, retry=RetryPolicy(attempts=1),
                           max_inflight_bytes=None)._dofn
    assert unbounded._max_inflight_bytes is None
