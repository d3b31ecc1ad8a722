"""Write templates/requirements.lock: the runtime dependencies exactly as installed here.

    python templates/make_lock.py > templates/requirements.lock      # or: make lock

Starts from pyproject.toml's `dependencies` and the `openvino` extra (not the test or
bench extras), follows
every installed package's own requirements (extras included where asked for,
environment markers evaluated for this interpreter) and pins each one to the
version installed in the running environment. Run it from the venv the tests
passed in, on Linux with the Python of the Docker image (3.11): the lock is then
the set of versions that was tested. pip-compile would resolve afresh from the
index instead; this needs no network.
"""
from __future__ import annotations

import importlib.metadata as md
import pathlib
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = pathlib.Path(__file__).resolve().parents[1]


def closure(roots: list[str]) -> dict[str, str]:
    """Installed name -> version for the roots and everything they need here."""
    pinned: dict[str, str] = {}
    todo = [(Requirement(r), None) for r in roots]
    seen: set[tuple[str, frozenset]] = set()
    while todo:
        req, extra = todo.pop()
        env = {'extra': extra or ''}
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        dist = md.distribution(req.name)  # PackageNotFoundError: not installed here
        pinned[name] = dist.version
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.marker is None or sub.marker.evaluate({'extra': ''}):
                todo.append((sub, None))
            for wanted in req.extras:
                if sub.marker is not None and sub.marker.evaluate({'extra': wanted}):
                    todo.append((Requirement(str(sub).split(';')[0]), None))
    return pinned


def main() -> int:
    project = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
    # The openvino extra too: the template's launcher converts (nncf) and its workers
    # run (openvino) --int8_runtime openvino.
    pins = closure(project['dependencies'] + project['optional-dependencies']['openvino'])
    print('# Runtime dependencies of imagelabel, pinned to the versions tested.')
    print('# Regenerate: make lock (python templates/make_lock.py), from the test venv.')
    print(f'# Python {sys.version_info.major}.{sys.version_info.minor}, {sys.platform}.')
    for name in sorted(pins):
        print(f'{name}=={pins[name]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
