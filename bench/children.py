"""Running bench measurements in child processes, and the inputs they share.

Every measurement that loads TensorFlow runs in a child process, so its peak RSS
(read with os.wait4) and CPU time are its own; bench.py, cores_limit.py and the
other scripts only orchestrate. `run_imagelabel` reads a run's figures from its
summary.json (the machine interface), never from the printed summary.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import make_images  # noqa: E402
from workers import RESULT_MARK  # noqa: E402

#: How the bare Keras model is called for the ceiling (model.predict_on_batch, model(x)).
METHODS = ('predict_on_batch', 'call')
TFLITE_MODEL = 'models/mobilenet_v2_1.0_224_quant.tflite'
SAMPLE_MANIFEST = 'imagenet_sample/manifest.csv'


def default_assets() -> str:
    return os.environ.get('IMAGELABEL_ASSETS') or str(ROOT.parent / 'shared' / 'assets')


def cores() -> int:
    """The cores this process may use (transforms.cpu reads them once; no TensorFlow)."""
    from transforms.cpu import this_cpu
    return this_cpu().cores


def child_env(root: pathlib.Path = ROOT) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    env['PYTHONPATH'] = os.pathsep.join(
        [str(root), *([env['PYTHONPATH']] if env.get('PYTHONPATH') else [])])
    return env


# --- running children ----------------------------------------------------------------------

@dataclasses.dataclass
class ChildRun:
    """One child process: its wall clock, CPU time, peak RSS and output."""
    argv: list[str]
    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    stdout: str
    stderr: str

    def check(self, what: str) -> 'ChildRun':
        if self.returncode != 0:
            tail = '\n'.join((self.stderr or self.stdout).strip().splitlines()[-25:])
            raise RuntimeError(f'{what} failed (exit {self.returncode}):\n{tail}\n'
                               f'command: {" ".join(self.argv)}')
        return self

    def facts(self) -> dict[str, Any]:
        return {'wall_s': round(self.wall_s, 3), 'cpu_s': round(self.cpu_s, 3),
                'cpu_utilisation': round(self.cpu_s / self.wall_s, 2) if self.wall_s else None,
                'peak_rss_mb': round(self.peak_rss_mb, 1)}


def run_child(argv: list[str], *, log: pathlib.Path, root: pathlib.Path = ROOT) -> ChildRun:
    """Run argv to completion; os.wait4 gives this child's own rusage (peak RSS, CPU)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log.with_suffix('.stdout'), log.with_suffix('.stderr')
    with open(out_path, 'wb') as out, open(err_path, 'wb') as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=root, env=child_env(root), stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, not by Popen
    return ChildRun(argv=argv, returncode=proc.returncode, wall_s=wall,
                    cpu_s=usage.ru_utime + usage.ru_stime,
                    peak_rss_mb=usage.ru_maxrss / 1024.0,  # Linux: kilobytes
                    stdout=out_path.read_text(errors='replace'),
                    stderr=err_path.read_text(errors='replace'))


def run_script(script: str, argv: list[str], *, what: str, log: pathlib.Path,
               root: pathlib.Path = ROOT) -> tuple[dict, ChildRun]:
    """Run bench/SCRIPT ARGV in a child (PYTHONPATH=root); its last RESULT_MARK line."""
    child = run_child([sys.executable, str(HERE / script), *argv], log=log, root=root).check(what)
    lines = [line for line in child.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if not lines:
        raise RuntimeError(f'{what} printed no result; see {log}.stdout')
    return json.loads(lines[-1][len(RESULT_MARK):]), child


def run_worker(name: str, args: dict[str, Any], *, log: pathlib.Path) -> tuple[dict, ChildRun]:
    """Run one of workers.py's measurements (see workers.WORKERS) in a child."""
    return run_script('workers.py', [name, json.dumps(args)], what=f'worker {name}', log=log)


def run_imagelabel(manifest: pathlib.Path, output: pathlib.Path, model: str, expect: int, *,
                   log: pathlib.Path, extra: list[str] | None = None,
                   root: pathlib.Path = ROOT) -> dict[str, Any]:
    """`python -m pipeline.run` (= `imagelabel run`) on the DirectRunner, wall-clocked.

    Its figures come from the run's summary.json (the machine interface), never from
    the printed summary. `root`: another checkout to run (e.g. main, for a before/after).
    """
    if output.exists():  # a fresh folder: every checkout, old or new, writes the same way
        shutil.rmtree(output)
    argv = [sys.executable, '-m', 'pipeline.run', '--input', str(manifest), '--output',
            str(output), '--model', model, *(extra or [])]
    child = run_child(argv, log=log, root=root).check('imagelabel run')
    found = sorted(output.glob('**/summary.json'))  # newer checkouts write under run_date=...
    if not found:
        raise RuntimeError(f'imagelabel run wrote no summary.json under {output}; see {log}.stdout')
    summary = json.loads(found[0].read_text())
    if summary['labeled'] != expect:
        raise RuntimeError(f'imagelabel run labeled {summary["labeled"]} images, expected '
                           f'{expect}; see {log}.stdout/.stderr')
    return {'n': expect, **child.facts(), 'errors': summary['errors'],
            'labeled': summary['labeled'], 'labeling_s': summary.get('labeling_seconds'),
            'pipeline_s': summary['seconds'], 'startup_s': summary.get('startup_seconds'),
            'precision': summary.get('precision'), 'agreement': summary.get('agreement'),
            'cpu': summary.get('cpu')}


def run_anchor(manifest: pathlib.Path, model: str, expect: int, *, log: pathlib.Path,
               output: pathlib.Path | None) -> dict[str, Any]:
    argv = [sys.executable, str(HERE / 'anchor.py'), '--input', str(manifest),
            '--model_path', model]
    if output is not None:
        if output.exists():
            shutil.rmtree(output)
        argv += ['--output', str(output)]
    child = run_child(argv, log=log).check('anchor')
    if output is not None:
        got = sum(1 for _ in open(output / 'predictions'))
    else:
        m = re.search(r'anchor predictions (\d+)', child.stdout)
        got = int(m.group(1)) if m else -1
    if got != expect:
        raise RuntimeError(f'anchor predicted {got} images, expected {expect}; see {log}')
    m = re.search(r'anchor pipeline seconds ([\d.]+)', child.stdout)
    return {'n': expect, **child.facts(), 'pipeline_s': float(m.group(1)) if m else None}


def marginal(small: list[dict], big: list[dict]) -> dict[str, Any]:
    """Rate with start-up removed: (N - n) / (t_N - t_n), best (least disturbed) run of each."""
    s = min(small, key=lambda r: r['wall_s'])
    b = min(big, key=lambda r: r['wall_s'])
    dn, dt = b['n'] - s['n'], b['wall_s'] - s['wall_s']
    out = {'n_small': s['n'], 'n_big': b['n'], 't_small_s': s['wall_s'], 't_big_s': b['wall_s'],
           'wall_rate_big': round(b['n'] / b['wall_s'], 3),
           'peak_rss_mb': max(r['peak_rss_mb'] for r in small + big),
           'cpu_utilisation_big': b.get('cpu_utilisation'),
           'runs_small': small, 'runs_big': big}
    if dt <= 0:  # too noisy, or N too small for the difference to show
        out.update(images_per_s=None, startup_s=None,
                   note='t_N <= t_n: no marginal rate (noisy machine, or --n too small)')
        return out
    rate = dn / dt
    out.update(images_per_s=round(rate, 3), per_core=round(rate / cores(), 3),
               startup_s=round(s['wall_s'] - s['n'] / rate, 3))
    dcpu = b['cpu_s'] - s['cpu_s']  # CPU seconds: much less disturbed by other load than wall
    out['images_per_cpu_s'] = round(dn / dcpu, 3) if dcpu > 0 else None
    out['marginal_cpu_utilisation'] = round(dcpu / dt, 2)  # cores kept busy once started
    if s.get('pipeline_s') is not None and b.get('pipeline_s') is not None:
        dp = b['pipeline_s'] - s['pipeline_s']  # the run's own timer (launcher excluded)
        out['images_per_s_pipeline_timer'] = round(dn / dp, 3) if dp > 0 else None
    if s.get('labeling_s') is not None and b.get('labeling_s') is not None:
        # From the first batch to the end (summary.json): the launch (model load, int8
        # conversion, the agreement check on up to 64 images) is left out entirely.
        dl = b['labeling_s'] - s['labeling_s']
        out['images_per_s_labeling'] = round(dn / dl, 3) if dl > 0 else None
    return out


# --- inputs -------------------------------------------------------------------------------

@dataclasses.dataclass
class Inputs:
    out: pathlib.Path
    images: list[pathlib.Path]

    def manifest(self, n: int) -> pathlib.Path:
        if n > len(self.images):
            raise ValueError(f'asked for {n} images, only {len(self.images)} made')
        return make_images.write_manifest(self.images[:n], self.out / 'manifests' / f'synthetic-{n}.txt')


def sample_photos(assets: pathlib.Path, n: int) -> list[pathlib.Path]:
    manifest = assets / SAMPLE_MANIFEST
    with open(manifest, newline='') as f:
        uris = [row['uri'] for row in csv.DictReader(f)]
    return [(manifest.parent / u).resolve() for u in uris[:n]]


def cpu_name() -> str:
    """The CPU and its relevant units, e.g. 'AMD EPYC (2 cores; AVX2)' (transforms.cpu)."""
    sys.path.insert(0, str(ROOT))
    from transforms.cpu import this_cpu  # reads /proc/cpuinfo; no TensorFlow
    return this_cpu().describe()
