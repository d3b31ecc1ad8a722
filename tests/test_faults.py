"""Fault injection: transient store failures are retried, permanent ones become error rows,
and a model that raises on one image costs only that image.

Read faults come from a real Beam `FileSystem` registered for the `flaky://`
scheme: Beam's `FileSystems` picks it by scheme exactly as it picks GCS for
`gs://`, so the pipeline's own read stage meets the failures. Inference faults
come from a Keras model whose graph raises on one pixel pattern.
"""
from __future__ import annotations

import collections
import hashlib
import pathlib
import threading
import time

import apache_beam as beam
import google.api_core.exceptions as gapi_exceptions
import google.auth.exceptions
import numpy as np
import pytest
import requests.exceptions
import urllib3.exceptions
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.localfilesystem import LocalFileSystem
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from conftest import read_parquet_rows, write_jpeg
from pipeline.graph import build
from pipeline.launch import load_model_facts
from pipeline.options import settings_from, sinks_from
from pipeline.summary import counter_values, summarize
from transforms.decode import DecodedImage
from transforms.errors import ImageError
from transforms.label import ImageModelHandler, LabelImages, load_labeled_model
from transforms.models import resolve_spec
from transforms.read import ERRORS_TAG, RetryPolicy, classify_read_exception, read_image_bytes

# --- a flaky object store -------------------------------------------------------------


class ServiceUnavailable(Exception):
    """What an HTTP store client raises for a 503."""
    code = 503


class NotFoundResponse(Exception):
    """What an HTTP store client raises for a 404."""
    code = 404


_TRANSIENT = (lambda p: TimeoutError(f'read timed out: {p}'),
              lambda p: ConnectionResetError(f'connection reset by peer: {p}'),
              lambda p: ServiceUnavailable(f'503 Service Unavailable: {p}'))


def transient_failures(path: str) -> int:
    """How many first attempts at `path` fail transiently: 1 or 2 on ~20% of names, else 0.

    Decided by a hash of the file name (not the tmp folder), so every run of the
    tests injects the same failures.
    """
    name = pathlib.PurePosixPath(path).name
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], 'big')
    return 1 + (h >> 8) % 2 if h % 5 == 0 else 0


class FlakyFileSystem(LocalFileSystem):
    """Local files under `flaky:///abs/path`, failing the way object stores do.

    - a deterministic ~20% of paths fail their first one or two opens with a
      timeout, a connection reset or a 503, then succeed;
    - names containing `denied` fail with PermissionError, `vanished` with a 404,
      `always_503` with a 503 on every attempt.
    Every open is counted per path, so tests can check what was retried.
    """
    attempts: collections.Counter = collections.Counter()
    #: URI -> exceptions its next opens raise, in order (set by a test).
    scripted: dict[str, list[BaseException]] = {}
    _lock = threading.Lock()

    @classmethod
    def scheme(cls):
        return 'flaky'

    @staticmethod
    def local(path: str) -> str:
        return path[len('flaky://'):] if path.startswith('flaky://') else path

    def open(self, path, mime_type='application/octet-stream',
             compression_type=CompressionTypes.AUTO):
        with self._lock:
            self.attempts[path] += 1
            attempt = self.attempts[path]
            script = self.scripted.get(path)
            if script:
                raise script.pop(0)
        name = pathlib.PurePosixPath(path).name
        if 'denied' in name:
            raise PermissionError(13, 'Permission denied', path)
        if 'vanished' in name:
            raise NotFoundResponse(f'404 No such object: {path}')
        if 'always_503' in name:
            raise ServiceUnavailable(f'503 Service Unavailable: {path}')
        if attempt <= transient_failures(path):
            raise _TRANSIENT[attempt % len(_TRANSIENT)](path)
        return super().open(self.local(path), mime_type, compression_type)

    def exists(self, path):
        return super().exists(self.local(path))


def test_flaky_filesystem_is_what_beam_picks_for_its_scheme(tmp_path):
    from apache_beam.io.filesystems import FileSystems
    path = write_jpeg(tmp_path / 'x.jpg')
    fs = FileSystems.get_filesystem(f'flaky://{path}')
    assert isinstance(fs, FlakyFileSystem)


# --- the retry policy, unit by unit ------------------------------------------------------

def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    policy = RetryPolicy(attempts=7, initial_backoff_s=1.0, max_backoff_s=8.0)
    for _ in range(20):
        delays = list(policy.delays())
        assert len(delays) == 6  # one wait between each pair of attempts
        for delay, nominal in zip(delays, [1, 2, 4, 8, 8, 8]):
            assert nominal / 2 <= delay <= nominal


class TooManyRequests(Exception):
    """What an HTTP store client raises for a 429, with the code on the response."""
    status_code = 429


@pytest.mark.parametrize('make_error', [*_TRANSIENT, lambda p: TooManyRequests(f'429: {p}')])
def test_transient_failure_is_retried_then_read(tmp_path, make_error):
    path = write_jpeg(tmp_path / 'x.jpg')
    uri = f'flaky://{path}'
    FlakyFileSystem.scripted[uri] = [make_error(uri), make_error(uri)]
    sleeps, retries = [], []
    image = read_image_bytes(uri, max_bytes=1 << 20,
                             retry=RetryPolicy(attempts=3, initial_backoff_s=0.2),
                             on_retry=lambda: retries.append(1), sleep=sleeps.append)
    assert image.data == path.read_bytes() and image.uri == uri
    assert FlakyFileSystem.attempts[uri] == 3
    assert len(retries) == 2 and len(sleeps) == 2
    assert 0.1 <= sleeps[0] <= 0.2 and 0.2 <= sleeps[1] <= 0.4


@pytest.mark.parametrize('name, expected', [
    ('denied.jpg', 'permission_denied'),
    ('vanished.jpg', 'not_found'),
])
def test_permanent_failure_is_not_retried(tmp_path, name, expected):
    path = write_jpeg(tmp_path / name)
    uri = f'flaky://{path}'
    sleeps = []
    with pytest.raises(ImageError) as info:
        read_image_bytes(uri, max_bytes=1 << 20, sleep=sleeps.append)
    assert (info.value.stage, info.value.error) == ('read', expected)
    assert sleeps == [] and FlakyFileSystem.attempts[uri] == 1


def test_transient_failure_that_never_ends_gives_up_after_the_attempts(tmp_path):
    path = write_jpeg(tmp_path / 'always_503.jpg')
    uri = f'flaky://{path}'
    sleeps = []
    with pytest.raises(ImageError) as info:
        read_image_bytes(uri, max_bytes=1 << 20, retry=RetryPolicy(attempts=4),
                         sleep=sleeps.append)
    assert (info.value.stage, info.value.error) == ('read', 'read_failed')
    assert 'gave up after 4 attempts' in info.value.message and '503' in info.value.message
    assert len(sleeps) == 3 and FlakyFileSystem.attempts[uri] == 4


# --- what real client libraries raise -----------------------------------------------------

_URI = 'gs://bucket/photos/cat.jpg'
#: (exception, expected error class, or None where the failure is transient and retried)
REAL_READ_EXCEPTIONS = [
    (gapi_exceptions.ServiceUnavailable(f'503 GET {_URI}: backend unavailable'), None),
    (gapi_exceptions.TooManyRequests('429 rate limit exceeded'), None),
    (gapi_exceptions.InternalServerError('500 backend error'), None),
    (gapi_exceptions.GatewayTimeout('504 gateway timeout'), None),
    (gapi_exceptions.BadGateway('502 bad gateway'), None),
    (gapi_exceptions.NotFound(f'404 No such object: {_URI}'), 'not_found'),
    (gapi_exceptions.Forbidden('403 caller does not have storage.objects.get access'),
     'permission_denied'),
    (requests.exceptions.ConnectionError('Connection aborted.'), None),
    (requests.exceptions.ReadTimeout('HTTPSConnectionPool: Read timed out. (read timeout=60)'),
     None),
    (requests.exceptions.ChunkedEncodingError(
        'Connection broken: IncompleteRead(512 bytes read, 1024 more expected)'), None),
    (urllib3.exceptions.ProtocolError(
        'Connection aborted.', ConnectionResetError(104, 'Connection reset by peer')), None),
    (google.auth.exceptions.TransportError(
        'HTTPSConnectionPool(host=oauth2.googleapis.com): Read timed out'), None),
    (TimeoutError('timed out'), None),
    (ConnectionResetError(104, 'Connection reset by peer'), None),
    (FileNotFoundError(2, 'No such file or directory', '/data/cat.jpg'), 'not_found'),
    (PermissionError(13, 'Permission denied', '/data/cat.jpg'), 'permission_denied'),
    (IsADirectoryError(21, 'Is a directory', '/data/photos'), 'not_a_file'),
    (BeamIOError('Open operation failed', {
        '/data/cat.jpg': FileNotFoundError(2, 'No such file or directory', '/data/cat.jpg')}),
     'not_found'),
]


def _exception_id(error: BaseException) -> str:
    module = type(error).__module__
    return type(error).__name__ if module == 'builtins' else f'{module}.{type(error).__name__}'


@pytest.mark.parametrize('error, expected', [
    pytest.param(error, expected, id=_exception_id(error))
    for error, expected in REAL_READ_EXCEPTIONS])
def test_real_client_exception_is_classified(error, expected):
    result = classify_read_exception(error)
    name = _exception_id(error)
    if expected is None:
        assert result is None, f'{name} is transient, but classified as permanent: {result}'
    else:
        assert isinstance(result, ImageError), f'{name} classified as transient'
        assert (result.stage, result.error) == ('read', expected), f'{name}: {result}'


# --- the whole pipeline over a flaky store ------------------------------------------------

def permanent_path(permanent: dict, marker: str) -> pathlib.Path:
    (path,) = [p for p in permanent if marker in p.name]
    return path


def test_pipeline_retries_transient_reads_and_labels_every_image(tmp_path, mobilenet_v2_quant):
    images = tmp_path / 'images'
    good = [write_jpeg(images / f'photo_{i:02d}.jpg', size=(64 + i, 48), seed=i)
            for i in range(40)]
    permanent = {
        write_jpeg(images / 'denied_1.jpg', seed=101): 'permission_denied',
        write_jpeg(images / 'denied_2.jpg', seed=102): 'permission_denied',
        write_jpeg(images / 'vanished.jpg', seed=103): 'not_found',
        write_jpeg(images / 'always_503.jpg', seed=104): 'read_failed',
    }
    missing = images / 'never_uploaded.jpg'
    uris = {p: f'flaky://{p}' for p in [*good, *permanent, missing]}
    manifest = tmp_path / 'manifest.txt'
    manifest.write_text('\n'.join(uris.values()) + '\n')

    flaky_good = [p for p in good if transient_failures(uris[p])]
    expected_retries = sum(transient_failures(uris[p]) for p in good) + 3  # always_503: 4 tries
    assert len(flaky_good) == 8 and expected_retries == 15  # one image in five, fixed by name
    assert transient_failures(uris[missing]) == 0  # its one attempt meets "not found"

    out = tmp_path / 'out'
    options = PipelineOptions(['--input', str(manifest), '--output', str(out),
                               '--model', str(mobilenet_v2_quant), '--read_retries', '4',
                               '--run_id', 'flaky-run'])
    settings = settings_from(options)
    facts = load_model_facts(settings)
    p = beam.Pipeline(options=options)
    build(p, settings, facts, sinks_from(options, settings, local=True),
          retry=RetryPolicy(attempts=4, initial_backoff_s=0.01))
    start = time.monotonic()
    result = p.run()
    result.wait_until_finish()
    summary = summarize(counter_values(result), run_id=settings.run_id, model=facts.spec.name,
                        model_id=facts.model_id, seconds=time.monotonic() - start, outputs={})

    labels = {r['uri']: r for r in read_parquet_rows(out, 'labels')}
    errors = {r['uri']: r for r in read_parquet_rows(out, 'errors')}
    # Every good image labeled once, from its true bytes; nothing else labeled.
    assert set(labels) == {uris[p] for p in good}
    for path in good:
        assert labels[uris[path]]['content_sha256'] == hashlib.sha256(
            path.read_bytes()).hexdigest()
    # Permanent failures are error rows of the read stage.
    expected_errors = {uris[p]: e for p, e in permanent.items()} | {uris[missing]: 'not_found'}
    assert {u: (r['stage'], r['error']) for u, r in errors.items()} == {
        u: ('read', e) for u, e in expected_errors.items()}
    assert 'gave up after 4 attempts' in errors[uris[permanent_path(permanent, 'always_503')]][
        'message']

    # Retries: exactly the transient failures, counted in the metrics and the summary.
    assert summary.read_retries == expected_retries > 0
    for path in flaky_good:
        assert FlakyFileSystem.attempts[uris[path]] == transient_failures(uris[path]) + 1
    # Not-found and permission failures are never retried.
    for path, error in permanent.items():
        if error != 'read_failed':
            assert FlakyFileSystem.attempts[uris[path]] == 1
    assert FlakyFileSystem.attempts[uris[missing]] == 1
    assert summary.inputs == summary.labeled + summary.errors == len(uris)
    assert summary.errors_by_class == {'read/permission_denied': 2, 'read/not_found': 2,
                                       'read/read_failed': 1}


# --- a model that raises on one image --------------------------------------------------

POISON = 7  # an image whose every pixel is 7 makes the model raise


@pytest.fixture(scope='module')
def poisoned_model(tmp_path_factory):
    """A small Keras classifier (10 classes) whose graph fails on an all-7 image."""
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package='imagelabel_tests')
    class PoisonGuard(keras.layers.Layer):
        """Identity, except that it asserts no image in the batch is all POISON."""

        def call(self, x):
            # The runtime feeds [-1, 1] pixels (the 'inception' preprocessing).
            poison = POISON / 127.5 - 1.0
            hit = tf.reduce_all(tf.abs(x - poison) < 1e-4, axis=[1, 2, 3])
            check = tf.debugging.Assert(tf.logical_not(tf.reduce_any(hit)),
                                        ['poisoned image in batch'])
            with tf.control_dependencies([check]):
                return tf.identity(x)

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = PoisonGuard()(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation='relu')(x)
    x = keras.layers.GlobalAveragePooling2D(name='avg_pool')(x)
    outputs = keras.layers.Dense(10, activation='softmax', name='predictions')(x)
    root = tmp_path_factory.mktemp('poisoned')
    path = root / 'poisoned.keras'
    keras.Model(inputs, outputs).save(path)
    labels = root / 'labels.txt'
    labels.write_text('\n'.join(f'class_{i}' for i in range(10)) + '\n')
    return resolve_spec(str(path), labels=str(labels))


def _decoded(i: int, pixels: np.ndarray) -> DecodedImage:
    return DecodedImage(uri=f'mem://image_{i}.png', content_sha256=f'{i:064x}', width=32,
                        height=32, pixels=pixels)


def test_poisoned_image_fails_alone_and_its_batch_mates_are_labeled(poisoned_model):
    rng = np.random.default_rng(0)
    images = [_decoded(i, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for i in range(8)]
    poisoned = 5
    images[poisoned] = _decoded(poisoned, np.full((32, 32, 3), POISON, np.uint8))

    # What each healthy image scores when the model sees it alone.
    model = load_labeled_model(poisoned_model, batch_size=4, precision='float32', threads=None,
                               recipe='crop')
    alone = {im.uri: model.predict(im.pixels[None])[0][0] for i, im in enumerate(images)
             if i != poisoned}
    with pytest.raises(Exception, match='poisoned image in batch'):
        model.predict(images[poisoned].pixels[None])

    def matches_alone(results):
        assert len(results) == len(alone)
        for result in results:
            np.testing.assert_allclose(result.inference.probabilities, alone[result.example.uri],
                                       rtol=1e-5, atol=1e-6)
            assert result.inference.embedding.shape == (8,)

    handler = ImageModelHandler(poisoned_model, batch_size=4)
    p = BeamTestPipeline()
    out = (p | beam.Create(images, reshuffle=False) | LabelImages(handler))
    scores, errors = out['scores'], out[ERRORS_TAG]
    assert_that(scores | 'ScoredUris' >> beam.Map(lambda r: r.example.uri),
                equal_to(sorted(alone)), label='BatchMatesLabeled')
    assert_that(scores, matches_alone, label='ScoresAsIfAlone')
    assert_that(errors | beam.Map(lambda f: (f.uri, f.stage, f.error, f.content_sha256)),
                equal_to([(images[poisoned].uri, 'inference', 'model_error',
                           images[poisoned].content_sha256)]), label='OnlyPoisonFails')
    assert_that(errors | 'Messages' >> beam.Map(lambda f: 'poisoned image in batch' in f.message),
                equal_to([True]), label='MessageHasModelError')
    result = p.run()
    result.wait_until_finish()
    metrics = result.metrics().query(beam.metrics.MetricsFilter().with_namespace('imagelabel'))
    counters = {c.key.metric.name: c.committed for c in metrics['counters']}
    sizes = [d.committed for d in metrics['distributions']
             if d.key.metric.name == 'inference_request_batch_size']
    # How the runner splits the eight images into bundles (so into batches) is its own
    # business; what holds for any split: the one batch holding the poisoned image, and
    # only it, was retried image by image; every image went to the model once in a
    # batch; and no batch was over --batch_size.
    assert counters['inference_batches_retried'] == 1
    assert counters['num_inferences'] == len(images)
    assert len(sizes) == 1 and sizes[0].sum == len(images) and 1 <= sizes[0].max <= 4
