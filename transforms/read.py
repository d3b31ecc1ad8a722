"""Read stage: image URIs (from `transforms.listing`) -> image bytes, or error rows.

Reads go through `ObjectReader` (one storage client per reader for gs://, Beam's
`FileSystems` for the rest), with bounded retries of transient failures and a
read-ahead on a thread pool, so the model never waits for I/O.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import random
import socket
import stat
import time
from typing import Callable, Iterable, Iterator, NamedTuple

import apache_beam as beam

from transforms.concurrency import LookaheadDoFn
from transforms import metrics
from transforms.errors import ERRORS_TAG, Failure, ImageError
from transforms.incremental import Listed
from transforms.storage import ObjectReader

DEFAULT_MAX_BYTES = 64 << 20
#: Default byte bound of each read-ahead (per DoFn instance): see transforms.concurrency.
DEFAULT_MAX_INFLIGHT_BYTES = 128 << 20


@dataclasses.dataclass(frozen=True)
class ImageBytes:
    """An image's raw bytes, as read, with the hash later runs dedup on."""
    uri: str
    data: bytes
    content_sha256: str
    # On incremental runs, the object's size and time as listed: they travel with the
    # image to its row (the next run skips on them), so no join has to move rows.
    source: Listed | None = None


_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


def _transport_errors() -> tuple[type, ...]:
    """The HTTP stack's own network errors (they do not subclass the builtin ones)."""
    found: list[type] = []
    for module, names in (('requests.exceptions', ('ConnectionError', 'Timeout',
                                                   'ChunkedEncodingError')),
                          ('urllib3.exceptions', ('ProtocolError', 'TimeoutError')),
                          ('google.auth.exceptions', ('TransportError',))):
        try:
            mod = __import__(module, fromlist=list(names))
        except ImportError:
            continue
        found.extend(getattr(mod, n) for n in names if hasattr(mod, n))
    return tuple(found)


_TRANSPORT_ERRORS = _transport_errors()


def _status_code(e: BaseException) -> int | None:
    for attr in ('code', 'status_code', 'status'):
        value = getattr(e, attr, None)
        if isinstance(value, int):
            return value
    resp = getattr(e, 'response', None)
    return getattr(resp, 'status_code', None) if resp is not None else None


def classify_read_exception(e: BaseException) -> ImageError | None:
    """A permanent ImageError, or None when the failure is worth retrying."""
    # Beam wraps filesystem errors in BeamIOError(exception_details={path: exc}).
    details = getattr(e, 'exception_details', None)
    if isinstance(details, dict) and details:
        inner = next(iter(details.values()))
        if isinstance(inner, BaseException):
            return classify_read_exception(inner)
    status = _status_code(e)
    name = type(e).__name__
    # A symbolic link that loops (to itself, or round a chain) leads to no file either.
    loop = isinstance(e, OSError) and e.errno == errno.ELOOP
    if isinstance(e, FileNotFoundError) or loop or status == 404 or name == 'NotFound':
        return ImageError('read', 'not_found', str(e) or 'no such object')
    if isinstance(e, PermissionError) or status in (401, 403) or name in ('Forbidden', 'Unauthorized'):
        return ImageError('read', 'permission_denied', str(e))
    if isinstance(e, (IsADirectoryError, NotADirectoryError)):
        return ImageError('read', 'not_a_file', str(e))
    if (isinstance(e, (TimeoutError, socket.timeout, ConnectionError) + _TRANSPORT_ERRORS)
            or status in _TRANSIENT_STATUS):
        return None
    return ImageError('read', 'read_failed', f'{name}: {e}')


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with jitter for transient store failures."""
    attempts: int = 5
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 16.0

    def delays(self) -> Iterator[float]:
        delay = self.initial_backoff_s
        for _ in range(self.attempts - 1):
            yield delay * (0.5 + random.random() / 2)
            delay = min(delay * 2, self.max_backoff_s)


def _special_file(path: str) -> bool:
    """A local path that exists and is neither a regular file nor a folder."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False  # missing or unreadable: the read says which
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def read_image_bytes(uri: str, *, max_bytes: int, retry: RetryPolicy = RetryPolicy(),
                     on_retry: Callable[[], None] = lambda: None,
                     sleep: Callable[[float], None] = time.sleep,
                     reader: ObjectReader | None = None) -> ImageBytes:
    """Read one object whole, retrying transient failures; raise ImageError.

    `retry.attempts` is the total number of requests: the reader itself never retries.
    """
    reader = reader or ObjectReader()
    if '://' not in uri and _special_file(uri):  # opening a named pipe waits forever
        raise ImageError('read', 'not_a_file', 'a named pipe, socket or device, not a file')
    delays = retry.delays()
    while True:
        try:
            data = reader.read(uri, max_bytes)
            break
        except Exception as e:  # noqa: BLE001 - classified below
            err = classify_read_exception(e)
            if err is not None:
                raise err from e
            delay = next(delays, None)
            if delay is None:
                raise ImageError('read', 'read_failed',
                                 f'gave up after {retry.attempts} attempts: '
                                 f'{type(e).__name__}: {e}') from e
            on_retry()
            sleep(delay)
    if not data:
        raise ImageError('read', 'empty_file', 'the object has 0 bytes')
    if len(data) > max_bytes:
        raise ImageError('read', 'too_large',
                         f'larger than --max_bytes={max_bytes} bytes')
    return ImageBytes(uri=uri, data=data, content_sha256=hashlib.sha256(data).hexdigest())


class _ReadResult(NamedTuple):
    """One URI's outcome, and how many transient failures it met on the way."""
    outcome: ImageBytes | Failure
    retries: int


class _ReadDoFn(LookaheadDoFn):
    def __init__(self, *, max_bytes: int, retry: RetryPolicy, threads: int, lookahead: int,
                 max_inflight_bytes: int | None):
        super().__init__(threads=threads, lookahead=lookahead,
                         max_inflight_bytes=max_inflight_bytes)
        self._max_bytes = max_bytes
        self._retry = retry
        self._retries = metrics.counter(metrics.READ_RETRIES)
        self._bytes = metrics.counter(metrics.BYTES_READ)
        self._clients = metrics.counter(metrics.STORAGE_CLIENTS)
        self._peak = metrics.distribution(metrics.INFLIGHT_BYTES)

    def setup(self):
        super().setup()
        self._reader = ObjectReader()  # one storage client for this instance's lifetime
        self._clients_counted = 0

    def result_bytes(self, result: '_ReadResult') -> int:
        return len(result.outcome.data) if isinstance(result.outcome, ImageBytes) else 0

    def work(self, element: 'str | Listed') -> _ReadResult:
        uri, source = (element.uri, element) if isinstance(element, Listed) else (element, None)
        # Runs on a pool thread, where Beam has no metrics container: count the
        # retries here and report them from `outputs`, on the bundle's thread.
        retries: list[None] = []
        try:
            outcome: ImageBytes | Failure = read_image_bytes(
                uri, max_bytes=self._max_bytes, retry=self._retry,
                on_retry=lambda: retries.append(None), reader=self._reader)
        except ImageError as e:
            outcome = Failure.from_error(uri, e)
        except Exception as e:  # noqa: BLE001 - never lose an element
            outcome = Failure(uri=uri, stage='read', error='read_failed',
                              message=f'{type(e).__name__}: {e}')
        if source is not None:
            outcome = dataclasses.replace(outcome, source=source)
        return _ReadResult(outcome, len(retries))

    def outputs(self, result: _ReadResult) -> Iterable:
        if result.retries:
            self._retries.inc(result.retries)
        if self._reader.clients_made > self._clients_counted:
            self._clients.inc(self._reader.clients_made - self._clients_counted)
            self._clients_counted = self._reader.clients_made
        self._peak.update(self.peak_inflight_bytes)
        if isinstance(result.outcome, Failure):
            yield beam.pvalue.TaggedOutput(ERRORS_TAG, result.outcome)
        else:
            self._bytes.inc(len(result.outcome.data))
            yield result.outcome


class ReadImages(beam.PTransform):
    """URIs -> ImageBytes; unreadable URIs -> Failure rows on the `errors` output."""

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_BYTES, retry: RetryPolicy = RetryPolicy(),
                 threads: int = 8, lookahead: int = 64,
                 max_inflight_bytes: int | None = DEFAULT_MAX_INFLIGHT_BYTES):
        super().__init__()
        self._dofn = _ReadDoFn(max_bytes=max_bytes, retry=retry, threads=threads,
                               lookahead=lookahead, max_inflight_bytes=max_inflight_bytes)

    def expand(self, uris):
        return uris | 'ReadBytes' >> beam.ParDo(self._dofn).with_outputs(
            ERRORS_TAG, main='images')
