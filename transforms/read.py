"""Read stage: input spec -> distinct image URIs -> image bytes.

Everything goes through Beam's `FileSystems`, so a local path, a glob and
`gs://bucket/...` are the same code. Listing happens inside the pipeline (not in
the launcher) so a manifest of millions of URIs never has to fit in the job
graph, and a Distinct step both removes duplicate URIs and redistributes the work
across workers.
"""
from __future__ import annotations

import csv
import dataclasses
import enum
import hashlib
import io
import os
import random
import socket
import time
from typing import Callable, Iterable, Iterator, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from transforms.concurrency import LookaheadDoFn
from transforms import metrics
from transforms.errors import ERRORS_TAG, Failure, ImageError
from transforms.incremental import Listed
from transforms.storage import ObjectReader, open_raw

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


class SourceKind(enum.Enum):
    MANIFEST_TXT = 'manifest_txt'
    MANIFEST_CSV = 'manifest_csv'
    DIRECTORY = 'directory'
    PATTERN = 'pattern'


def source_kind(src: str) -> SourceKind:
    """How to expand --input: by suffix for manifests, else a directory or a glob."""
    lower = src.lower()
    if lower.endswith('.txt'):
        return SourceKind.MANIFEST_TXT
    if lower.endswith('.csv'):
        return SourceKind.MANIFEST_CSV
    if src.endswith('/') or _is_directory(src):
        return SourceKind.DIRECTORY
    if not any(c in src for c in '*?[') and '://' in src and not FileSystems.exists(src):
        return SourceKind.DIRECTORY  # an object-store prefix: stores have no folders
    return SourceKind.PATTERN


def _is_directory(path: str) -> bool:
    return '://' not in path and os.path.isdir(path)


def directory_pattern(src: str) -> str:
    return FileSystems.join(src.rstrip('/'), '**')


def parse_manifest(text: str, kind: SourceKind) -> Iterator[str]:
    """URIs from a manifest: .txt one per line (# comments), .csv a `uri` column."""
    if kind is SourceKind.MANIFEST_TXT:
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith('#'):
                yield line
        return
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames:
        reader.fieldnames = [f.strip() for f in reader.fieldnames]
    if not reader.fieldnames or 'uri' not in reader.fieldnames:
        raise ValueError(
            f'manifest CSV has no "uri" column (columns: {reader.fieldnames}); '
            'add a header line with a uri column')
    for row in reader:
        uri = (row.get('uri') or '').strip()
        if uri:
            yield uri


def resolve_relative(uri: str, manifest: str) -> str:
    """Manifest URIs may be relative to the manifest's own folder."""
    if '://' in uri or uri.startswith('/'):
        return uri
    base = manifest.rsplit('/', 1)[0] if '/' in manifest else '.'
    return FileSystems.join(base, uri)


def read_text(uri: str, max_bytes: int = -1) -> str:
    """A UTF-8 text file (or its first max_bytes, cut at the last whole line)."""
    with open_raw(uri) as f:
        data = f.read(max_bytes)
    if 0 < max_bytes <= len(data):
        data = data[:data.rfind(b'\n') + 1]
    return data.decode('utf-8-sig')


def expand_source(src: str, limit: int | None = None) -> Iterator[str]:
    """Every URI that --input names, in listing order (duplicates included).

    `limit` caps each pattern's listing (the launcher only needs to know it is not empty).
    """
    for uri, _, _ in expand_listing(src, limit):
        yield uri


def expand_listing(src: str, limit: int | None = None
                   ) -> Iterator[tuple[str, int | None, float | None]]:
    """(uri, size, modification time) for every URI --input names; a manifest gives no stat."""
    kind = source_kind(src)
    if kind in (SourceKind.MANIFEST_TXT, SourceKind.MANIFEST_CSV):
        for uri in parse_manifest(read_text(src), kind):
            yield resolve_relative(uri, src), None, None
        return
    pattern = directory_pattern(src) if kind is SourceKind.DIRECTORY else src
    # Beam's local match needs a folder to start from ('*.jpg' and '**/*.jpg' match
    # nothing); the URIs keep the spelling the user gave, without the './' added here.
    here = '://' not in pattern and not pattern.startswith(('/', './', '../'))
    if here:
        pattern = './' + pattern
    # Beam's "**/" needs at least one folder; users mean "this folder and below".
    patterns = [pattern] + ([pattern.replace('**/', '', 1)] if '**/' in pattern else [])
    seen = set()
    for result in FileSystems.match(patterns, limits=[limit] * len(patterns) if limit else None):
        for meta in result.metadata_list:
            # "folder/" placeholder objects (made by consoles on object stores) are not images
            if meta.path not in seen and not meta.path.endswith('/') and not _is_directory(meta.path):
                seen.add(meta.path)
                uri = meta.path[2:] if here and meta.path.startswith('./') else meta.path
                yield uri, meta.size_in_bytes, meta.last_updated_in_seconds


def validate_source(src: str) -> None:
    """Fail before the job starts if --input can yield no URI at all."""
    try:
        _check_source(src)
    except (BeamIOError, OSError, UnicodeDecodeError) as e:
        # An unreadable manifest or a listing the store refuses: one line, no traceback.
        details = getattr(e, 'exception_details', None)
        cause = next(iter(details.values())) if isinstance(details, dict) and details else e
        message = f'{type(cause).__name__}: {cause}'.splitlines()[0]
        raise ValueError(f'--input {src} cannot be read: {message}') from e


def _check_source(src: str) -> None:
    kind = source_kind(src)
    if kind in (SourceKind.MANIFEST_TXT, SourceKind.MANIFEST_CSV):
        if not FileSystems.exists(src):
            raise ValueError(f'--input manifest {src} does not exist')
        first = next(iter(parse_manifest(read_text(src, max_bytes=1 << 20), kind)), None)
        if first is None:
            raise ValueError(f'--input manifest {src} lists no URI')
        return
    if next(expand_source(src, limit=1000), None) is None:
        raise ValueError(
            f'--input {src} matches no file; give a directory, a glob such as '
            '"photos/**/*.jpg", or a .txt/.csv manifest')


class ListImages(beam.PTransform):
    """--input spec -> distinct URIs (duplicates are labeled once, and counted).

    With `with_stat`, the elements are `Listed` (URI, size, modification time), which
    incremental runs compare with earlier rows.
    """

    def __init__(self, source: str, *, with_stat: bool = False):
        super().__init__()
        self._source = source
        self._with_stat = with_stat

    def expand(self, pbegin):
        listed = metrics.counter(metrics.LISTED)
        inputs = metrics.counter(metrics.INPUTS)

        def count(uri: str, counter) -> str:
            counter.inc()
            return uri

        distinct = (
            pbegin
            | 'Source' >> beam.Create([self._source])
            | 'ExpandSource' >> beam.FlatMap(expand_listing if self._with_stat else expand_source)
            | 'CountListed' >> beam.Map(count, listed)
            | 'DropDuplicateUris' >> beam.Distinct()  # (uri, size, time) tuples, or URIs
            | 'CountInputs' >> beam.Map(count, inputs))
        return distinct | 'ToListed' >> beam.MapTuple(Listed) if self._with_stat else distinct


# --- reading bytes ---------------------------------------------------------------

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
    if isinstance(e, FileNotFoundError) or status == 404 or name == 'NotFound':
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


def read_image_bytes(uri: str, *, max_bytes: int, retry: RetryPolicy = RetryPolicy(),
                     on_retry: Callable[[], None] = lambda: None,
                     sleep: Callable[[float], None] = time.sleep,
                     reader: ObjectReader | None = None) -> ImageBytes:
    """Read one object whole, retrying transient failures; raise ImageError.

    `retry.attempts` is the total number of requests: the reader itself never retries.
    """
    reader = reader or ObjectReader()
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
