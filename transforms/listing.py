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
import itertools
import os
import posixpath
import re
import warnings
from typing import Iterator

import apache_beam as beam
from apache_beam.io.filesystem import BeamIOError, FileSystem
from apache_beam.io.filesystems import FileSystems

from transforms import metrics
from transforms.errors import ERRORS_TAG, Failure
from transforms.incremental import Listed
from transforms.sinks.parquet import sample_files
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


def escape_glob(path: str) -> str:
    """`path` as a pattern that matches only itself: Beam's match reads `*`, `?` and `[`
    as wildcards, and has no escape but a one-character class (`[[]`)."""
    return ''.join(f'[{c}]' if c in '*?[' else c for c in path)


def directory_pattern(src: str) -> str:
    """Everything under a folder, whose own name may hold `[`, `*` or `?` (escaped only
    for a folder that exists as named).

    Beam lists from the longest prefix without a wildcard, so a folder whose name has
    one is found by listing its parent: correct, only slower.
    """
    folder = src.rstrip('/')  # 'photos/2024-*/' is a pattern of folders: left as it is
    return FileSystems.join(escape_glob(folder) if _is_directory(folder) else folder, '**')


def shown_name(uri: str) -> str | None:
    """None for a URI that is text; for one that is not (a file name in another encoding,
    a manifest line that is not UTF-8), the same URI with each undecodable byte as \\xNN.

    Such a URI cannot be written to Parquet or BigQuery, nor cross a Beam boundary as
    a string, so it becomes an error row under the escaped name.
    """
    try:
        uri.encode('utf-8')
        return None
    except UnicodeEncodeError:
        pass
    try:  # os.listdir and the manifest's decoding carry undecodable bytes as surrogates
        return uri.encode('utf-8', 'surrogateescape').decode('utf-8', 'backslashreplace')
    except UnicodeEncodeError:
        return uri.encode('utf-8', 'backslashreplace').decode('utf-8')


def same_image(uri: str) -> str:
    """What two spellings of one image have in common: a local path made absolute and
    normal (`images/a.jpg`, `./images/a.jpg` and `/here/images/a.jpg` are one image);
    other URIs as they are."""
    return uri if '://' in uri else os.path.normpath(os.path.abspath(uri))


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
    """Manifest URIs may be relative to the manifest's own folder. The relative part is
    made normal, so `a.jpg`, `./a.jpg` and `x/../a.jpg` in one manifest are one image."""
    if '://' in uri or uri.startswith('/'):
        return uri
    if '/' not in manifest:  # a manifest in the working folder: `photos/a.jpg` as a folder
        return posixpath.normpath(uri)  # listing of `photos` spells it, not `./photos/a.jpg`
    return FileSystems.join(manifest.rsplit('/', 1)[0], posixpath.normpath(uri))


def read_text(uri: str, max_bytes: int = -1, errors: str = 'strict') -> str:
    """A UTF-8 text file (or its first max_bytes, cut at the last whole line).

    errors='surrogateescape' keeps bytes that are not UTF-8 (see `shown_name`).
    """
    with open_raw(uri) as f:
        data = f.read(max_bytes)
    if 0 < max_bytes <= len(data):
        data = data[:data.rfind(b'\n') + 1]
    return data.decode('utf-8-sig', errors)


def expand_source(src: str, limit: int | None = None, *,
                  broken_links: bool = False) -> Iterator[str]:
    """Every URI that --input names, in listing order (duplicates included).

    `limit` caps each pattern's listing (the launcher only needs to know it is not empty);
    `broken_links` lists local links to missing files too (see `expand_listing`).
    """
    for uri, _, _ in expand_listing(src, limit, broken_links=broken_links):
        yield uri


def expand_listing(src: str, limit: int | None = None, *, broken_links: bool = False
                   ) -> Iterator[tuple[str, int | None, float | None]]:
    """(uri, size, modification time) for every URI --input names; a manifest gives no stat.

    With `broken_links`, local links to missing files are listed too (no stat): a run
    makes each a not_found row. Readers of files that must exist (labels files for
    train_head, the launch's sample) leave them out, as Beam's listing does."""
    kind = source_kind(src)
    if kind in (SourceKind.MANIFEST_TXT, SourceKind.MANIFEST_CSV):
        for uri in parse_manifest(read_text(src, errors='surrogateescape'), kind):
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

    def as_given(path: str) -> str:
        return path[2:] if here and path.startswith('./') else path
    seen = set()
    with warnings.catch_warnings():  # an escaped '[' is '[[]', which `re` frowns upon
        warnings.filterwarnings('ignore', 'Possible nested set', FutureWarning)
        results = FileSystems.match(patterns, limits=[limit] * len(patterns) if limit else None)
    for result in results:
        for meta in result.metadata_list:
            # "folder/" placeholder objects (made by consoles on object stores) are not images
            if meta.path not in seen and not meta.path.endswith('/') and not _is_directory(meta.path):
                seen.add(meta.path)
                yield as_given(meta.path), meta.size_in_bytes, meta.last_updated_in_seconds
    if '://' in pattern or not broken_links:
        return
    for path in dangling_links(patterns):
        if path not in seen:
            seen.add(path)
            yield as_given(path), None, None


def dangling_links(patterns: list[str]) -> Iterator[str]:
    """Local symbolic links matching `patterns` whose target is missing.

    Beam's local listing walks the folders and drops what it cannot stat, so a broken
    link would vanish from the run without a row; listed here, with the same walk and
    the same pattern rules (`FileSystem.translate_pattern`), it is read like any image
    and becomes a `not_found` error row. Only links cost a stat: the walk reads the
    file types the folder listing already carries. Patterns that list from the same
    folder (`a/**/*.png` and `a/*.png`) share one walk.
    """
    matchers: dict[str, list] = {}
    for pattern in patterns:
        prefix = re.match('^[^[*?]*', pattern).group(0)
        if prefix != pattern:  # a path without wildcards: Beam matched it, or it is refused
            matchers.setdefault(os.path.dirname(prefix) or '.', []).append(
                re.compile(FileSystem.translate_pattern(pattern)).match)
    for root, matches in matchers.items():
        folders = [root]
        while folders:
            try:
                entries = os.scandir(folders.pop())
            except OSError:
                continue
            with entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)  # links to folders are not followed,
                    elif (entry.is_symlink()  # as in Beam's walk
                          and any(match(entry.path) for match in matches)
                          and not os.path.exists(entry.path)):
                        yield entry.path


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


def check_output_outside(src: str, output: str | None) -> None:
    """Refuse an --output whose files --input would list: inside an --input folder, or
    matched by a recursive glob (`photos/**`). The next run would take the Parquet and
    summary files written there for images (one error row each, every run)."""
    kind = source_kind(src)
    if not output or kind in (SourceKind.MANIFEST_TXT, SourceKind.MANIFEST_CSV):
        return

    def local(path: str, real: bool = False) -> str:
        if '://' in path:
            return path
        return os.path.realpath(path) if real else os.path.abspath(path)

    if kind is SourceKind.DIRECTORY:  # through symlinks too
        inside = (local(output, True).rstrip('/') + '/').startswith(
            local(src, True).rstrip('/') + '/')
    else:
        pattern = re.compile(FileSystem.translate_pattern(local(src)))
        inside = any(pattern.match(path) for path in sample_files(local(output)))
    if inside:
        raise ValueError(f'--output {output} is inside --input {src}: the next run would '
                         'list its files as images; choose an output outside the input, or '
                         'an --input that names only images (such as photos/**/*.jpg)')


def _check_source(src: str) -> None:
    kind = source_kind(src)
    if kind in (SourceKind.MANIFEST_TXT, SourceKind.MANIFEST_CSV):
        if not FileSystems.exists(src):
            raise ValueError(f'--input manifest {src} does not exist')
        head = read_text(src, max_bytes=1 << 20, errors='surrogateescape')
        uris = list(itertools.islice(parse_manifest(head, kind), 1000))
        if not uris:
            raise ValueError(f'--input manifest {src} lists no URI')
        # One line that is not text is one error row; a file with no text line is not a
        # manifest at all.
        if all(shown_name(u) is not None for u in uris):
            raise ValueError(f'--input manifest {src} is not UTF-8 text (it begins '
                             f'{shown_name(uris[0])[:60]!r})')
        return
    if next(expand_source(src, limit=1000, broken_links=True), None) is None:
        raise ValueError(
            f'--input {src} matches no file; give a directory, a glob such as '
            '"photos/**/*.jpg", or a .txt/.csv manifest')


class _ExpandSource(beam.DoFn):
    """--input -> its entries, each counted as listed: URIs (or (uri, size, time) with
    `with_stat`), and a `Failure` for each entry whose name is not text, counted as an
    input too (the URIs are counted as inputs once duplicates are dropped)."""

    def __init__(self, with_stat: bool):
        self._with_stat = with_stat
        self._listed = metrics.counter(metrics.LISTED)
        self._inputs = metrics.counter(metrics.INPUTS)

    def process(self, src: str):
        bad_names = set()  # one --input expands in one call: a name listed twice is one row
        for uri, size, updated in expand_listing(src, broken_links=True):
            self._listed.inc()
            shown = shown_name(uri)
            if shown is None:
                yield (uri, size, updated) if self._with_stat else uri
                continue
            if shown in bad_names:
                continue
            bad_names.add(shown)
            self._inputs.inc()
            yield beam.pvalue.TaggedOutput(ERRORS_TAG, Failure(
                uri=shown, stage='read', error='bad_name',
                message='the name is not valid UTF-8 (its other bytes shown as \\xNN)',
                source=Listed(shown, size, updated) if self._with_stat else None))


class ListImages(beam.PTransform):
    """--input spec -> `uris`: distinct URIs (duplicates are labeled once, and counted),
    and `errors`: entries that cannot be a URI.

    With `with_stat`, the URIs are `Listed` (URI, size, modification time), which
    incremental runs compare with earlier rows.
    """

    def __init__(self, source: str, *, with_stat: bool = False):
        super().__init__()
        self._source = source
        self._with_stat = with_stat

    def expand(self, pbegin):
        inputs = metrics.counter(metrics.INPUTS)

        def count(uri: str) -> str:
            inputs.inc()
            return uri

        entries = (
            pbegin
            | 'Source' >> beam.Create([self._source])
            | 'ExpandSource' >> beam.ParDo(_ExpandSource(self._with_stat)).with_outputs(
                ERRORS_TAG, main='uris'))
        distinct = (
            entries.uris
            | 'DropDuplicateUris' >> beam.Distinct()  # (uri, size, time) tuples, or URIs
            | 'CountInputs' >> beam.Map(count))
        if self._with_stat:
            distinct = distinct | 'ToListed' >> beam.MapTuple(Listed)
        return {'uris': distinct, ERRORS_TAG: entries[ERRORS_TAG]}
