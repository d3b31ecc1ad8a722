"""Real Cloud Storage and BigQuery emulators, started on 127.0.0.1 for the tests.

Both come from PyPI through the README's install step (gcp-storage-emulator in
the project's venv; bqemulator in `.venv-bq`, because its exact pins clash with
ours). Nothing is downloaded while the tests run. Each server starts once per
test session on a free port and is stopped at the end. See
../shared/notes/emulators.md for their gaps.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUCKET = 'imagelabel-test'
PROJECT = 'imagelabel-test'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _wait_for(url: str, proc: subprocess.Popen, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f'{what} exited with {proc.returncode} before answering')
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:  # it answers: up
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f'{what} did not answer on {url} within {timeout_s} s')


def _binary(name: str, env_var: str, *candidates: pathlib.Path) -> str:
    for path in (os.environ.get(env_var), *map(str, candidates), shutil.which(name)):
        if path and os.path.exists(path):
            return path
    raise RuntimeError(f'{name} is not installed: run the README\'s install step '
                       f'(make install), or set {env_var}')


class _Server:
    """A server process of ours: stopped (then killed) at the end of the session."""
    proc: subprocess.Popen

    def stop(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self.proc.kill()
        self._log.close()


class GcsEmulator(_Server):
    """gcp-storage-emulator, objects on disk (BigQuery file loads read them from there)."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        self.port = free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        exe = _binary('gcp-storage-emulator', 'IMAGELABEL_GCS_EMULATOR',
                      pathlib.Path(sys.executable).parent / 'gcp-storage-emulator')
        self._log = open(root.parent / 'gcs-emulator.log', 'wb')
        self.proc = subprocess.Popen(
            [exe, '-d', str(root), 'start', '--host', '127.0.0.1', '--port', str(self.port),
             '--default-bucket', BUCKET], stdout=self._log, stderr=subprocess.STDOUT)
        _wait_for(f'{self.url}/storage/v1/b', self.proc, 'the GCS emulator')

    @property
    def objects_root(self) -> pathlib.Path:
        return self.root / '.cloudstorage'

    def client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage
        return storage.Client(credentials=AnonymousCredentials(), project=PROJECT,
                              client_options={'api_endpoint': self.url})



class BigQueryEmulator(_Server):
    """bqemulator (DuckDB inside), reading load-job files from the GCS emulator's disk."""

    def __init__(self, workdir: pathlib.Path, gcs: GcsEmulator):
        self.port, grpc_port = free_port(), free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        exe = _binary('bqemulator', 'IMAGELABEL_BQEMULATOR', ROOT / '.venv-bq' / 'bin' / 'bqemulator')
        env = dict(os.environ, BQEMU_GCS_LOCAL_ROOT=str(gcs.objects_root))
        self._log = open(workdir / 'bq-emulator.log', 'wb')
        self.proc = subprocess.Popen(
            [exe, 'start', '--rest-host', '127.0.0.1', '--rest-port', str(self.port),
             '--grpc-host', '127.0.0.1', '--grpc-port', str(grpc_port), '--ephemeral',
             '--project', PROJECT, '--log-level', 'warning'],
            stdout=self._log, stderr=subprocess.STDOUT, env=env)
        _wait_for(f'{self.url}/bigquery/v2/projects/{PROJECT}/datasets', self.proc,
                  'the BigQuery emulator', timeout_s=60)

    def client(self):
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery
        return bigquery.Client(project=PROJECT, credentials=AnonymousCredentials(),
                               client_options=ClientOptions(api_endpoint=self.url))

