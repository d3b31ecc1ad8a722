"""The model cache (--model_cache): models converted at launch, and the files beside them.

A conversion made at launch (--precision int8, --float_runtime litert) is stored
under a key that names everything that makes the file, so a scheduled run
converts once and workers only read it. The folder is local or gs://
(FileSystems). Each file is written whole (a local one is renamed into place, so
a concurrent run never reads half of it), and the model file is written last:
its presence means the entry is complete.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os

from apache_beam.io.filesystems import FileSystems

from transforms.models.float_head import FloatHead
from transforms.storage import open_raw


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
        return FileSystems.exists(self.model)


def store(files: CachedModel, content: bytes, also: dict[str, bytes] | None = None) -> None:
    """Write an entry: the files beside the model (empty ones are skipped), the model last."""
    if '://' not in files.model:
        os.makedirs(os.path.dirname(files.model) or '.', exist_ok=True)
    for path, data in (also or {}).items():
        if data:
            _write(path, data)
    _write(files.model, content)


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
    """A cached conversion: (model bytes, its FloatHead or None, sha256).

    The sha256 covers the model and its head: it is the weights part of model_id.
    """
    with open_raw(path) as f:
        content = f.read()
    digest = hashlib.sha256(content)
    head_path = head_beside(path, suffix)
    head = None
    if FileSystems.exists(head_path):
        with open_raw(head_path) as f:
            raw = f.read()
        digest.update(raw)
        head = FloatHead.from_bytes(raw)
    return content, head, digest.hexdigest()
