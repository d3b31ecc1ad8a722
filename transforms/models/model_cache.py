"""The model cache (--model_cache): models converted at launch, and the files beside them.

A conversion made at launch (--precision int8, --float_runtime litert) is stored
under a key that names everything that makes the file, so a scheduled run
converts once and workers only read it. The folder is local or gs://
(FileSystems). Each file is written whole (a local one is renamed into place, so
a concurrent run never reads half of it), and a record of the entry's files and
their SHA-256 is written last: its presence means the entry is complete, and a
reader checks every file against it, so an entry that lost its head file (which
would turn the embedding into the scores) or holds a damaged one is refused in
one line instead of labeling wrongly.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os

from apache_beam.io.filesystems import FileSystems

from transforms.models.float_head import FloatHead
from transforms.storage import open_raw

_log = logging.getLogger('imagelabel')


def package_version(name: str) -> str | None:
    """An installed package's version (None if unknown): what converts or runs a cached
    file keys it, because a new version may make another file."""
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:  # noqa: BLE001 - not installed, or no metadata
        return None


def default_model_cache() -> str:
    """A per-user cache folder (XDG), never the run's --output."""
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(base, 'imagelabel')


def beside(model_path: str, suffix: str, ending: str) -> str:
    """A file kept beside a converted model: `key.tflite` -> `key` + ending."""
    return model_path[:-len(suffix)] + ending


#: The entry's record, written last: {'model': sha256, 'beside': {ending: sha256}}.
RECORD = '.entry.json'


def head_beside(model_path: str, suffix: str) -> str:
    """The float32 head's file, beside its converted model (`key.head.npz`)."""
    return beside(model_path, suffix, '.head.npz')


@dataclasses.dataclass(frozen=True)
class CachedModel:
    """Where a conversion lives in the cache: the model file, and the float head if any."""
    model: str
    suffix: str  # the model file's ending ('.tflite', '.ovz')

    @classmethod
    def at(cls, cache: str, key: str, suffix: str) -> 'CachedModel':
        return cls(FileSystems.join(cache, key + suffix), suffix)

    @property
    def head(self) -> str:
        return head_beside(self.model, self.suffix)

    def beside(self, ending: str) -> str:
        """Another file kept with this entry (`key` + ending)."""
        return beside(self.model, self.suffix, ending)

    def exists(self) -> bool:
        """Complete: its record was written (after every file it names)."""
        return FileSystems.exists(self.beside(RECORD))

    def usable(self) -> bool:
        """Complete, and every file as its record says. A damaged entry (two launches that
        stored one key at once, a file lost since) is said and made again by the caller,
        not refused at every later launch."""
        if not self.exists():
            return False
        try:
            record = _record(self)
            _read_checked(self, self.model, record['model'])
            for ending in record['beside']:
                read_beside(self, ending, record)
            return True
        except ValueError as e:
            _log.warning('%s: converting again', e)
            return False


def store(files: CachedModel, content: bytes, also: dict[str, bytes] | None = None) -> None:
    """Write an entry: the files beside the model (empty ones are skipped), the model, and
    last the record naming them with their SHA-256."""
    if '://' not in files.model:
        os.makedirs(os.path.dirname(files.model) or '.', exist_ok=True)
    record = {'model': hashlib.sha256(content).hexdigest(), 'beside': {}}
    for path, data in (also or {}).items():
        if data:
            _write(path, data)
            record['beside'][path[len(files.model) - len(files.suffix):]] = (
                hashlib.sha256(data).hexdigest())
    _write(files.model, content)
    _write(files.beside(RECORD), json.dumps(record, sort_keys=True).encode())


def _write(path: str, data: bytes) -> None:
    if '://' in path:
        with FileSystems.create(path) as f:
            f.write(data)
        return
    tmp = f'{path}.{os.getpid()}.tmp'
    with open(tmp, 'wb') as f:
        f.write(data)
    os.replace(tmp, path)  # atomic: a concurrent run never reads half a file


def read_conversion(path: str, suffix: str) -> tuple[bytes, FloatHead | None, str]:
    """A cached conversion: (model bytes, its FloatHead or None, sha256), each file
    checked against the entry's record; ValueError (one line) for an entry that is not
    whole.

    The sha256 covers the model and its head: it is the weights part of model_id.
    """
    entry = CachedModel(path, suffix)
    record = _record(entry)
    content = _read_checked(entry, path, record['model'])
    digest = hashlib.sha256(content)
    head = None
    raw = read_beside(entry, '.head.npz', record)
    if raw is not None:
        digest.update(raw)
        head = FloatHead.from_bytes(raw)
    return content, head, digest.hexdigest()


def read_beside(entry: CachedModel, ending: str, record: dict | None = None) -> bytes | None:
    """A file the entry's record names beside its model (checked), or None if it names
    none; ValueError (one line) if it is lost or damaged."""
    record = record or _record(entry)
    expected = record['beside'].get(ending)
    return None if expected is None else _read_checked(entry, entry.beside(ending), expected)


def _fix(entry: CachedModel) -> str:
    return f'delete {entry.beside(".*")} to convert again'


def _record(entry: CachedModel) -> dict:
    try:
        with open_raw(entry.beside(RECORD)) as f:
            record = json.loads(f.read())
        if not isinstance(record.get('model'), str) or not isinstance(record.get('beside'),
                                                                      dict):
            raise ValueError('not a record')
        return record
    except (OSError, ValueError, AttributeError) as e:
        raise ValueError(f'the model cache entry {entry.model} has no readable record '
                         f'({type(e).__name__}); {_fix(entry)}') from e


def _read_checked(entry: CachedModel, file: str, expected: str) -> bytes:
    try:
        with open_raw(file) as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f'the model cache entry {entry.model} lost {file} '
                         f'({type(e).__name__}); {_fix(entry)}') from e
    if hashlib.sha256(data).hexdigest() != expected:
        raise ValueError(f'the model cache entry {entry.model} holds a damaged {file}; '
                         f'{_fix(entry)}')
    return data
