"""File access for models: local copies of remote files, fingerprints, label sets.

Everything here goes through Beam's FileSystems, so a model, weights or labels
file may be local or gs:// alike; nothing here imports TensorFlow.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import os
import shutil
import tempfile
from typing import Iterator

from apache_beam.io.filesystems import FileSystems

from transforms.storage import open_raw


def load_labels(path: str | None = None) -> list[str]:
    """Class names, one per line: a user file, or the ImageNet names we ship."""
    if path is None:
        text = importlib.resources.files('transforms').joinpath(
            'data/imagenet_labels.txt').read_text('utf-8')
    else:
        if not FileSystems.exists(path):
            raise ValueError(f'--labels file {path} does not exist')
        try:
            with open_raw(path) as f:
                text = f.read().decode('utf-8')
        except (OSError, UnicodeDecodeError) as e:  # a folder, unreadable, not text
            raise ValueError(f'--labels file {path} cannot be read: {type(e).__name__}: '
                             f'{e}'.splitlines()[0]) from e
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise ValueError(f'labels file {path} is empty')
    return names


# --- shared helpers -----------------------------------------------------------------

@contextlib.contextmanager
def localized(path: str) -> Iterator[str]:
    """A local path for a model file or SavedModel folder given as any FileSystems URI.

    A remote file (gs://...) is copied to a temporary place and deleted when the
    block ends: the runtimes hold the model in memory once loaded, so no copy of
    a model outlives its load on a worker's disk.
    """
    if '://' not in path:
        if not os.path.exists(path):
            raise ValueError(f'model file {path} does not exist')
        yield path
        return
    folder = FileSystems.join(path.rstrip('/'), '')
    files = [] if FileSystems.exists(path) and not is_saved_model_dir(path) else sorted(
        m.path for r in FileSystems.match([FileSystems.join(path.rstrip('/'), '**')])
        for m in r.metadata_list if not m.path.endswith('/'))
    if not files and not FileSystems.exists(path):
        raise ValueError(f'model file {path} does not exist')
    tmp = tempfile.mkdtemp(prefix='imagelabel-model-')
    try:
        if not files:  # one file
            local = os.path.join(tmp, os.path.basename(path))
            _copy_to_local(path, local)
        else:  # a folder (SavedModel): keep the layout under it
            local = os.path.join(tmp, os.path.basename(path.rstrip('/')))
            for f in files:
                target = os.path.join(local, f[len(folder):])
                os.makedirs(os.path.dirname(target), exist_ok=True)
                _copy_to_local(f, target)
        yield local
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _copy_to_local(uri: str, local: str) -> None:
    with open(local, 'wb') as out, open_raw(uri) as src:
        while chunk := src.read(1 << 24):
            out.write(chunk)


def file_fingerprint(path: str) -> str:
    """SHA-256 of a file, or of every file under a folder (sorted, with their names).

    Goes through FileSystems, so a gs:// SavedModel folder is fingerprinted in place.
    """
    h = hashlib.sha256()
    if FileSystems.match([path])[0].metadata_list and not os.path.isdir(path):
        paths = [path]
    else:
        pattern = FileSystems.join(path.rstrip('/'), '**')
        paths = sorted(m.path for r in FileSystems.match([pattern]) for m in r.metadata_list
                       if not os.path.isdir(m.path))
    for p in paths:
        if p != path:
            h.update(p[len(path):].lstrip('/').encode())
        with open_raw(p) as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def is_saved_model_dir(path: str) -> bool:
    return FileSystems.exists(FileSystems.join(path, 'saved_model.pb'))
