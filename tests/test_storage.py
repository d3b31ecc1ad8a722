"""Reads from gs:// at scale: one storage client per reader, and retries that do not multiply.

Against the real GCS emulator. Faults come from a small HTTP proxy on 127.0.0.1
in front of it, which answers 503 for chosen objects and counts every request,
so "requested at most --read_retries times" is counted on the wire.
"""
from __future__ import annotations

import collections
import http.client
import http.server
import io
import os
import threading
import urllib.parse

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms import metrics, storage
from transforms.errors import ERRORS_TAG
from transforms.listing import ListImages
from transforms.read import ReadImages, RetryPolicy, read_image_bytes
from transforms.storage import ObjectReader, read_at_most, split_gcs

TestPipeline.__test__ = False
BUCKET = 'imagelabel-test'


class FaultProxy(http.server.ThreadingHTTPServer):
    """Forwards to the emulator; objects whose name holds 'always_503' get 503 every time,
    'twice_503' the first two times. Counts media GETs per object name."""

    def __init__(self, upstream: str):
        self.upstream = urllib.parse.urlparse(upstream)
        self.gets: collections.Counter = collections.Counter()
        self.lock = threading.Lock()
        super().__init__(('127.0.0.1', 0), _ProxyHandler)
        self.url = f'http://127.0.0.1:{self.server_address[1]}'
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args):
        pass

    def _forward(self):
        server: FaultProxy = self.server
        name = urllib.parse.unquote(urllib.parse.urlparse(self.path).path).rsplit('/', 1)[-1]
        media = 'alt=media' in self.path
        if media:
            with server.lock:
                server.gets[name] += 1
                n = server.gets[name]
            if 'always_503' in name or ('twice_503' in name and n <= 2):
                body = b'{"error": {"code": 503, "message": "backend unavailable"}}'
                self.send_response(503)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
        length = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(length) if length else None
        conn = http.client.HTTPConnection(server.upstream.hostname, server.upstream.port,
                                          timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() != 'host'}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ('transfer-encoding', 'content-length', 'connection'):
                self.send_header(k, v)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward


@pytest.fixture()
def proxy(cloud, monkeypatch):
    server = FaultProxy(cloud.gcs.url)
    monkeypatch.setenv('STORAGE_EMULATOR_HOST', server.url)
    yield server
    server.shutdown()


def test_an_object_that_always_answers_503_is_requested_read_retries_times_in_all(
        cloud, proxy):
    bucket = cloud.gcs.client().bucket(BUCKET)
    bucket.blob('faults/always_503.jpg').upload_from_string(b'x' * 100)
    bucket.blob('faults/twice_503.jpg').upload_from_string(b'y' * 100)
    bucket.blob('faults/fine.jpg').upload_from_string(b'z' * 100)
    uris = [f'gs://{BUCKET}/faults/{n}' for n in ('always_503.jpg', 'twice_503.jpg', 'fine.jpg')]

    with TestPipeline() as p:
        read = (p | beam.Create(uris)
                | ReadImages(retry=RetryPolicy(attempts=4, initial_backoff_s=0.01)))
        assert_that(read.images | 'Uris' >> beam.Map(lambda i: (i.uri, len(i.data))),
                    equal_to([(uris[1], 100), (uris[2], 100)]), label='Read')
        assert_that(read[ERRORS_TAG] | beam.Map(lambda f: (f.uri, f.stage, f.error)),
                    equal_to([(uris[0], 'read', 'read_failed')]), label='Errors')
    # 4 attempts = 4 requests on the wire: the client library added none of its own.
    assert proxy.gets['always_503.jpg'] == 4
    assert proxy.gets['twice_503.jpg'] == 3
    assert proxy.gets['fine.jpg'] == 1


def test_the_error_row_of_an_exhausted_object_says_how_many_attempts(cloud, proxy):
    cloud.gcs.client().bucket(BUCKET).blob('faults/always_503_b.jpg').upload_from_string(b'x')
    from transforms.errors import ImageError
    with pytest.raises(ImageError) as e:
        read_image_bytes(f'gs://{BUCKET}/faults/always_503_b.jpg', max_bytes=1000,
                         retry=RetryPolicy(attempts=3, initial_backoff_s=0.001),
                         reader=ObjectReader())
    assert e.value.error == 'read_failed' and 'gave up after 3 attempts' in e.value.message
    assert proxy.gets['always_503_b.jpg'] == 3


def test_a_300_object_read_makes_a_handful_of_storage_clients_not_one_per_object(
        cloud, monkeypatch):
    from google.cloud import storage
    import concurrent.futures
    bucket = cloud.gcs.client().bucket(BUCKET)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: bucket.blob(f'many/{i:04d}.jpg').upload_from_string(
            i.to_bytes(2, 'big') * 8), range(300)))

    made = []
    real_init = storage.Client.__init__

    def counting_init(self, *args, **kwargs):
        made.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(storage.Client, '__init__', counting_init)
    p = TestPipeline()
    read = ((p | ListImages(f'gs://{BUCKET}/many/'))['uris']
            | ReadImages(retry=RetryPolicy(attempts=2, initial_backoff_s=0.01)))
    assert_that(read.images | beam.combiners.Count.Globally(), equal_to([300]))
    result = p.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed for c in result.metrics().query(
        beam.metrics.MetricsFilter().with_namespace(metrics.NAMESPACE))['counters']}
    print(f'storage clients for a 300-object read: {len(made)} in all '
          f'({counters[metrics.STORAGE_CLIENTS]} by the readers)')
    # Beam's listing makes its own few; our readers one each (one DoFn instance here).
    assert counters[metrics.STORAGE_CLIENTS] == 1
    assert len(made) <= 5


def test_split_gcs_names_bucket_and_object_and_refuses_a_bare_bucket():
    assert split_gcs('gs://b/a/c.jpg') == ('b', 'a/c.jpg')
    with pytest.raises(ValueError, match='gs://BUCKET/OBJECT'):
        split_gcs('gs://b')


def test_an_object_reader_makes_its_client_once_however_many_threads_read():
    made = []

    class FakeBlob:
        def __init__(self, name):
            self.name = name

        def download_as_bytes(self, start, end, retry, checksum):
            assert retry is None and start == 0  # one request; the library never retries
            return self.name.encode()[:end + 1]

    class FakeClient:
        def bucket(self, name):
            return type('B', (), {'blob': lambda _, n: FakeBlob(n)})()

    reader = ObjectReader(lambda: made.append(1) or FakeClient())
    threads = [threading.Thread(target=lambda i=i: reader.read(f'gs://b/{i}.jpg', 100))
               for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 == reader.clients_made
    assert reader.read('gs://b/abcdef', 2) == b'abc'  # max_bytes + 1: "too large" is visible


def test_a_zero_byte_object_that_gcs_answers_416_reads_as_empty():
    # Real GCS answers a ranged GET of a 0-byte object with 416; the emulator sends 200.
    from google.api_core.exceptions import RequestRangeNotSatisfiable

    class EmptyBlob:
        def download_as_bytes(self, start, end, retry, checksum):
            raise RequestRangeNotSatisfiable('Requested range not satisfiable')

    class FakeClient:
        def bucket(self, name):
            return type('B', (), {'blob': lambda _, n: EmptyBlob()})()

    assert ObjectReader(FakeClient).read('gs://b/empty.jpg', 100) == b''


class _CountingFile(io.BytesIO):
    """A file that records the sizes it was asked to read, and may under-report its length."""

    def __init__(self, data: bytes, *, reported: int | None = None):
        super().__init__(data)
        self.asked: list[int] = []
        self._reported = reported
        self._at_end = False

    def read(self, n=-1):
        self.asked.append(n)
        return super().read(n)

    def seek(self, pos, whence=0):
        self._at_end = whence == os.SEEK_END
        return super().seek(pos, whence)

    def tell(self):  # at the end: the length it had when measured (`reported`), if given
        at = super().tell()
        return self._reported if self._at_end and self._reported is not None else at


def test_a_local_read_asks_for_the_files_length_not_the_size_limit(tmp_path, monkeypatch):
    photo = tmp_path / 'photo.jpg'
    photo.write_bytes(b'x' * 5000)
    assert ObjectReader().read(str(photo), 64 << 20) == b'x' * 5000
    opened: list[_CountingFile] = []
    monkeypatch.setattr(storage, 'open_raw',
                        lambda uri: opened.append(_CountingFile(b'x' * 5000)) or opened[-1])
    assert ObjectReader().read(str(photo), 64 << 20) == b'x' * 5000
    assert opened[0].asked == [5001]  # one byte to spare, never a 64 MiB buffer


def test_read_at_most_gives_limit_bytes_of_a_longer_file_so_too_large_is_visible():
    f = _CountingFile(b'x' * 100)
    assert read_at_most(f, 11) == b'x' * 11
    assert f.asked == [11]
    assert read_at_most(_CountingFile(b''), 11) == b''


def test_read_at_most_sizes_its_read_from_the_position_not_the_start():
    f = _CountingFile(bytes(range(100)))
    f.read(30)
    assert read_at_most(f, 1000) == bytes(range(30, 100))
    assert f.asked[1:] == [71]


def test_read_at_most_reads_a_file_whose_seek_returns_nothing():
    class SeekSaysNothing(io.BytesIO):
        def seek(self, *args):
            super().seek(*args)  # the new position goes unreported, as some file objects do

    assert read_at_most(SeekSaysNothing(b'q' * 10), 100) == b'q' * 10
    assert read_at_most(SeekSaysNothing(b'q' * 10), 4) == b'qqqq'


def test_read_at_most_reads_the_rest_of_a_file_that_grew_after_it_was_measured():
    assert read_at_most(_CountingFile(b'x' * 100, reported=40), 1000) == b'x' * 100
    assert read_at_most(_CountingFile(b'x' * 100, reported=40), 61) == b'x' * 61


def test_read_at_most_reads_a_stream_that_cannot_say_its_length():
    read_end, write_end = os.pipe()
    os.write(write_end, b'abcdef')
    os.close(write_end)
    with open(read_end, 'rb') as pipe:
        assert read_at_most(pipe, 4) == b'abcd'
