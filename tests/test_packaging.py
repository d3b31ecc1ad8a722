"""What Dataflow ships to workers is what we test: the sdist and the wheel hold the code.

The build runs offline (`python -m build --no-isolation`, with the build tools
already in the venv) on a copy of the checkout, so the checkout gets no build/
or egg-info debris. The wheel is then installed, without dependencies, into a
fresh venv that borrows this venv's third-party packages through a .pth file:
nothing is downloaded, and imagelabel itself can only come from the wheel.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile

import pytest

from conftest import ROOT

CODE_PACKAGES = ('pipeline', 'transforms')
DATA_FILES = ('transforms/data/imagenet_labels.txt', 'transforms/data/NOTICE.md')
_NOT_SOURCE = shutil.ignore_patterns('.git', '.venv', 'build', 'dist', '*.egg-info',
                                     '__pycache__', '.pytest_cache', '.hypothesis', 'out')


def source_files() -> list[str]:
    """Every module and data file of ours, as a path relative to the checkout."""
    files = [p.relative_to(ROOT).as_posix() for pkg in CODE_PACKAGES
             for p in (ROOT / pkg).rglob('*.py') if '__pycache__' not in p.parts]
    return sorted(files) + list(DATA_FILES)


def clean_env() -> dict[str, str]:
    """No PYTHONPATH: the checkout on the path would hide what the wheel lacks."""
    return {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME')}


@pytest.fixture(scope='module')
def dist(tmp_path_factory) -> pathlib.Path:
    tmp = tmp_path_factory.mktemp('packaging')
    src = tmp / 'src'
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCE)
    out = tmp / 'dist'
    subprocess.run([sys.executable, '-m', 'build', '--no-isolation', '--sdist', '--wheel',
                    '--outdir', str(out), str(src)], check=True, capture_output=True,
                   env=clean_env(), timeout=300)
    return out


def only(folder: pathlib.Path, pattern: str) -> pathlib.Path:
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, (pattern, found)
    return found[0]


def test_the_wheel_holds_every_module_the_label_data_and_the_licence(dist):
    names = set(zipfile.ZipFile(only(dist, 'imagelabel-*.whl')).namelist())
    missing = [f for f in source_files() if f not in names]
    assert not missing, f'not in the wheel: {missing}'
    licence = [n for n in names if n.endswith('.dist-info/licenses/LICENSE')]
    assert licence, sorted(names)
    with zipfile.ZipFile(only(dist, 'imagelabel-*.whl')) as whl:
        assert whl.read(licence[0]) == (ROOT / 'LICENSE').read_bytes()
        metadata = whl.read(next(n for n in names if n.endswith('.dist-info/METADATA')))
    assert b'License-Expression: Apache-2.0' in metadata


def test_the_sdist_holds_every_module_the_label_data_and_the_licence(dist):
    with tarfile.open(only(dist, 'imagelabel-*.tar.gz')) as tar:
        root = tar.getnames()[0].split('/')[0]
        names = {n[len(root) + 1:] for n in tar.getnames()}
        missing = [f for f in source_files() + ['LICENSE', 'pyproject.toml', 'setup.py']
                   if f not in names]
        assert not missing, f'not in the sdist: {missing}'
        assert tar.extractfile(f'{root}/LICENSE').read() == (ROOT / 'LICENSE').read_bytes()


def test_the_licence_is_the_apache_license_2_0_that_pyproject_declares():
    text = (ROOT / 'LICENSE').read_text()
    assert text.lstrip().startswith('Apache License')
    assert 'Version 2.0, January 2004' in text
    assert 'END OF TERMS AND CONDITIONS' in text
    assert 'license = "Apache-2.0"' in (ROOT / 'pyproject.toml').read_text()


def test_the_wheel_installs_into_a_fresh_venv_where_imagelabel_help_works(dist, tmp_path):
    env_dir = tmp_path / 'venv'
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / 'bin' / 'python'
    fresh_site = subprocess.run([str(python), '-c', 'import sysconfig; '
                                 'print(sysconfig.get_paths()["purelib"])'],
                                check=True, capture_output=True, text=True,
                                env=clean_env()).stdout.strip()
    # Third-party packages from this venv, after the fresh venv's own site-packages. A .pth
    # line only adds a path: the editable imagelabel in this venv is not activated there.
    ours = sysconfig.get_paths()['purelib']
    pathlib.Path(fresh_site, 'borrowed_deps.pth').write_text(ours + '\n')
    subprocess.run([sys.executable, '-m', 'pip', '--python', str(python), 'install',
                    '--no-deps', '--no-index', '--no-cache-dir', '--quiet',
                    str(only(dist, 'imagelabel-*.whl'))],
                   check=True, capture_output=True, env=clean_env(), timeout=120)
    env = clean_env()

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=120)

    where = run(str(python), '-c', 'import pipeline, transforms.sinks; '
                'print(pipeline.__file__); print(transforms.sinks.__file__)')
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(fresh_site) for line in where.stdout.split()), where.stdout

    top = run(str(env_dir / 'bin' / 'imagelabel'), '--help')
    assert top.returncode == 0, top.stderr
    assert 'run' in top.stdout and 'classify' in top.stdout
    # `run --help` imports the options, the sinks and the model registry from the wheel.
    sub = run(str(env_dir / 'bin' / 'imagelabel'), 'run', '--help')
    assert sub.returncode == 0, sub.stderr
    assert '--output' in sub.stdout and '--input' in sub.stdout
