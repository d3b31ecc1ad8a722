"""File access for models: local copies of remote files, fingerprints, label sets.

Everything here goes through Beam's FileSystems, so a model, weights or labels
file may be local or gs:// alike; nothing here imports TensorFlow.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import os
import tempfile

from apache_beam.io.filesystems import FileSystems

from transforms.read import open_raw


def load_labels(path: str | None = None) -> list[str]:
    """Class names, one per line: a user file, or the ImageNet names we ship."""
    if path is None:
        text = importlib.resources.files('transforms').joinpath(
            'data/imagenet_labels.txt').read_text('utf-8')
    else:
        if not FileSystems.exists(path):
            raise ValueError(f'--labels file {path} does not exist')
        with open_raw(path) as f:
            text = f.read().decode('utf-8')
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise ValueError(f'labels file {path} is empty')
    return names


# --- shared helpers -----------------------------------------------------------------

def localize(path: str) -> str:
    """A local copy of a model or weights file given as any FileSystems URI."""
    if '://' not in path:
        if not os.path.exists(path):
            raise ValueError(f'model file {path} does not exist')
        return path
    if not FileSystems.exists(path):
        raise ValueError(f'model file {path} does not exist')
    fd, local = tempfile.mkstemp(suffix='-' + os.path.basename(path))
    with os.fdopen(fd, 'wb') as out, open_raw(path) as src:
        while chunk := src.read(1 << 24):
            out.write(chunk)
    return local


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
