"""Listing: an --input spec (folder, glob, prefix or manifest) -> distinct image URIs.

Everything goes through Beam's `FileSystems`, so a local path, a glob and
`gs://bucket/...` are the same code. Listing happens inside the pipeline (not in
the launcher) so a manifest of millions of URIs never has to fit in the job
graph, and a Distinct step both removes duplicate URIs and redistributes the work
across workers. An entry that cannot become a URI (a file name that is not UTF-8,
a manifest line that is not text, a named pipe) is an error row here, like any
image that fails later.
"""
from __future__ import annotations

import csv
import enum
import io
import os
from typing import Iterator

import apache_beam as beam
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from transforms import metrics
from transforms.incremental import Listed
from transforms.storage import open_raw


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
