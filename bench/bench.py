"""imagelabel's throughput benchmark: one command, every figure, one table.

    python bench/bench.py                 # full run, N=512 (a few minutes on 2 cores)
    python bench/bench.py --quick         # N=64, small scaling and LiteRT sets: a smoke test
    python bench/bench.py --only ceiling,imagelabel --n 1024

Sections (--only picks some; see bench/README.md for what each figure means):

  ceiling     bare Keras Inception-v3 (random weights) on pre-decoded float32 batches
  imagelabel  `imagelabel run` end to end on the DirectRunner (Parquet out), marginal rate
  anchor      Beam's stock RunInference + TFModelHandlerTensor (bench/anchor.py), marginal rate
  tflite      quantized MobileNetV2 .tflite: imagelabel end to end vs the bare LiteRT
              interpreter, and decode_image alone, on the ImageNet sample photos
  scaling     imagelabel end to end at N = 256, 1024, 4096: is time linear in N?
  bf16        imagelabel with --precision bf16: speed-up and agreement with float32
  int8        imagelabel with --precision int8 (conversion done once before the clock):
              end to end against the float32 bare-model ceiling, agreement from summary.json
  float_litert  imagelabel with --float_runtime litert (the model converted once to a
              float32 .tflite, before the clock): end to end against the float32 ceiling
  startup     start-up (to the first batch, timed by startup_probe.py from Python's start
              and from prepare()) of a small Keras run, this checkout against
              --baseline_root (e.g. the main checkout, before this change), and this
              checkout with --float_runtime litert (its conversion cached)

Every measurement that loads TensorFlow runs in a child process (so its peak RSS,
read with os.wait4, is its own); this process only orchestrates and never imports
TensorFlow. End-to-end times are the child's wall clock, start-up included; the
marginal rate between two input sizes removes start-up, which is reported as the
intercept. Results go to bench/out/results.json (bench/out/ is git-ignored).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import make_images  # noqa: E402
from report import compare_labels, fmt, print_table, ratio  # noqa: E402
from workers import RESULT_MARK  # noqa: E402

METHODS = ('predict_on_batch', 'call')
SECTIONS = ('ceiling', 'imagelabel', 'anchor', 'tflite', 'scaling', 'bf16', 'int8',
            'float_litert', 'startup')
MODEL_SEED = 0
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


# --- sections (orchestration) ------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.out = pathlib.Path(args.workdir).resolve()
        self.assets = pathlib.Path(args.assets).resolve()
        self.results: dict[str, Any] = {}
        self.rows: list[tuple] = []
        self.model_path: str | None = None
        self.inputs: Inputs | None = None

    def log(self, name: str) -> pathlib.Path:
        return self.out / 'logs' / name

    def say(self, msg: str) -> None:
        print(f'[{time.strftime("%H:%M:%S")}] {msg}', file=sys.stderr, flush=True)

    # shared fixtures
    def ensure_inputs(self, n: int) -> Inputs:
        have = len(self.inputs.images) if self.inputs else 0
        if have < n:
            folder = make_images.default_folder(self.out / 'images')
            self.say(f'images: making sure {n} synthetic JPEGs exist in {folder}')
            self.inputs = Inputs(self.out, make_images.ensure_images(folder, n))
        return self.inputs

    def ensure_model(self) -> str:
        if self.model_path is None and self.args.model:
            self.model_path = str(pathlib.Path(self.args.model).resolve())
        if self.model_path is None:
            path = self.out / 'models' / f'inception_v3_random_seed{MODEL_SEED}.keras'
            if not path.exists():
                self.say(f'model: saving a seeded random-weight Inception-v3 to {path}')
                run_worker('save_model', {'path': str(path), 'seed': MODEL_SEED},
                           log=self.log('save_model'))
            self.model_path = str(path)
        return self.model_path

    def batch_sizes(self) -> list[int]:
        return sorted({32, self.args.batch_size})

    def imagelabel_marginal(self, tag: str, n_small: int, n_big: int, extra: list[str],
                            keep: str | None = None) -> dict[str, Any]:
        inputs, model = self.ensure_inputs(n_big), self.ensure_model()
        runs = {n_small: [], n_big: []}
        for rep in range(self.args.reps):
            for n in (n_small, n_big):
                self.say(f'{tag}: imagelabel run, {n} images (rep {rep + 1}/{self.args.reps})')
                output = self.out / 'runs' / (keep if keep and n == n_big else f'{tag}-{n}')
                runs[n].append(run_imagelabel(
                    inputs.manifest(n), output, model, n, log=self.log(f'{tag}-{n}-{rep}'),
                    extra=['--batch_size', str(self.args.batch_size), *extra]))
        return marginal(runs[n_small], runs[n_big])

    def end_to_end_row(self, label: str, res: dict[str, Any], note: str) -> None:
        """A table row for a marginal-rate run (imagelabel, the anchor, tflite, bf16)."""
        self.rows.append((label, res['images_per_s'], res.get('images_per_cpu_s'),
                          res['startup_s'], res['peak_rss_mb'], note))

    def n_small(self) -> int:
        return max(1, self.args.n // 4)

    # 1. ceiling
    def ceiling(self) -> None:
        res = self.bare_keras('float32', self.batch_sizes())
        self.results['ceiling'] = res
        for bs, r in res['by_batch_size'].items():
            for how in METHODS:
                self.rows.append((f'ceiling Inception-v3 f32, {how}, batch {bs}',
                                  r[how]['images_per_s'], r[how]['images_per_cpu_s'], None,
                                  r[how]['peak_rss_mb'],
                                  f'best of {r[how]["passes"]} passes of {r[how]["images"]}; '
                                  f'median {fmt(r[how]["median_images_per_s"])}'))

    def bare_keras(self, precision: str, batch_sizes: list[int]) -> dict[str, Any]:
        """One child per method, so each one's peak RSS is its own (eager calls use far more)."""
        inputs, model = self.ensure_inputs(self.args.n), self.ensure_model()
        res: dict[str, Any] = {'precision': precision, 'by_batch_size': {}}
        for how in METHODS:
            self.say(f'ceiling: bare Keras model ({precision}), {how}, batch sizes {batch_sizes}')
            r, child = run_worker('ceiling', {
                'model': model, 'images': [str(p) for p in inputs.images[:self.args.n]],
                'batch_sizes': batch_sizes, 'passes': self.args.ceiling_passes,
                'precision': precision, 'method': how},
                log=self.log(f'ceiling-{precision}-{how}'))
            for bs, v in r['by_batch_size'].items():
                v['peak_rss_mb'] = round(child.peak_rss_mb, 1)
                res['by_batch_size'].setdefault(bs, {})[how] = v
        return res

    def ceiling_rate(self, key: str = 'ceiling') -> float | None:
        c = self.results.get(key)
        if not c:
            return None
        r = c['by_batch_size'].get(str(self.args.batch_size))
        return max(r[how]['images_per_s'] for how in METHODS) if r else None

    # 2. imagelabel
    def imagelabel(self) -> None:
        res = self.imagelabel_marginal('imagelabel-f32', self.n_small(), self.args.n, [],
                                       keep='imagelabel-f32-full')
        self.results['imagelabel'] = res
        self.end_to_end_row(
            f'imagelabel run, Inception-v3 f32 (.keras), batch {self.args.batch_size}', res,
            f'marginal {res["n_small"]}->{res["n_big"]}; wall rate at N '
            f'{fmt(res["wall_rate_big"])}; cores busy {fmt(res.get("marginal_cpu_utilisation"), 2)}')

    # 3. anchor
    def anchor(self) -> None:
        inputs, model = self.ensure_inputs(self.args.n), self.ensure_model()
        runs = {self.n_small(): [], self.args.n: []}
        for rep in range(self.args.reps):
            for n in runs:
                self.say(f'anchor: Beam RunInference (TFModelHandlerTensor), {n} images')
                output = self.out / 'runs' / f'anchor-{n}' if self.args.anchor_write else None
                runs[n].append(run_anchor(inputs.manifest(n), model, n,
                                          log=self.log(f'anchor-{n}-{rep}'), output=output))
        res = marginal(runs[self.n_small()], runs[self.args.n])
        self.results['anchor'] = res
        self.end_to_end_row(
            'anchor: Beam RunInference + TFModelHandlerTensor, f32', res,
            f'marginal {res["n_small"]}->{res["n_big"]}; default batching; '
            f'{"WriteToText" if self.args.anchor_write else "writes nothing"}')

    # 5. tflite
    def tflite(self) -> None:
        model = str(self.assets / TFLITE_MODEL)
        n = self.args.tflite_n
        photos = sample_photos(self.assets, n)
        n_small = max(1, n // 4)
        self.say(f'tflite: bare LiteRT interpreter and decode_image on {n} ImageNet sample photos')
        bare, child = run_worker('tflite_bare', {'model': model, 'images': [str(p) for p in photos],
                                                 'passes': self.args.ceiling_passes},
                                 log=self.log('tflite_bare'))
        bare['peak_rss_mb'] = round(child.peak_rss_mb, 1)
        runs = {n_small: [], n: []}
        for rep in range(self.args.reps):
            for k in runs:
                self.say(f'tflite: imagelabel run, {k} photos (rep {rep + 1}/{self.args.reps})')
                manifest = make_images.write_manifest(
                    photos[:k], self.out / 'manifests' / f'imagenet-sample-{k}.txt')
                runs[k].append(run_imagelabel(
                    manifest, self.out / 'runs' / f'tflite-{k}', model, k,
                    log=self.log(f'tflite-{k}-{rep}'),
                    extra=['--batch_size', str(self.args.batch_size)]))
        e2e = marginal(runs[n_small], runs[n])
        best_bare = max(v['images_per_s'] for v in bare['interpreter'].values())
        decode1 = bare['decode']['threads_1']['images_per_s']
        serial = 1.0 / (1.0 / decode1 + 1.0 / best_bare)
        # The same bound in CPU-seconds: what decode + invoke cost, with no pipeline around them.
        bare_cpu = max(v['images_per_cpu_s'] for v in bare['interpreter'].values())
        serial_cpu = 1.0 / (1.0 / bare['decode']['threads_1']['images_per_cpu_s'] + 1.0 / bare_cpu)
        self.results['tflite'] = {
            'model': model, 'photos': n, 'bare': bare, 'imagelabel': e2e,
            'imagelabel_over_bare': ratio(e2e['images_per_s'], best_bare),
            'serial_decode_plus_invoke_images_per_s': round(serial, 2),
            'imagelabel_over_serial': ratio(e2e['images_per_s'], serial),
            'serial_decode_plus_invoke_images_per_cpu_s': round(serial_cpu, 2),
            'imagelabel_over_serial_cpu': ratio(e2e.get('images_per_cpu_s'), serial_cpu)}
        for threads, v in bare['interpreter'].items():
            self.rows.append((f'tflite bare LiteRT invoke, MobileNetV2 quant, num_threads={threads}',
                              v['images_per_s'], v['images_per_cpu_s'], None, bare['peak_rss_mb'],
                              f'batch 1, pre-decoded, best of {v["passes"]} passes'))
        for threads, v in bare['decode'].items():
            self.rows.append((f'decode_image alone (224 crop), {threads.replace("_", " ")}',
                              v['images_per_s'], v['images_per_cpu_s'], None, bare['peak_rss_mb'],
                              f'{n} sample photos, bytes in memory'))
        self.end_to_end_row(
            'tflite imagelabel run, MobileNetV2 quant', e2e,
            f'marginal {n_small}->{n}; wall rate at N {fmt(e2e["wall_rate_big"])}; '
            f'cores busy {fmt(e2e.get("marginal_cpu_utilisation"), 2)}')

    # scaling
    def scaling(self) -> None:
        ns = self.args.scaling_ns
        inputs, model = self.ensure_inputs(max(ns)), self.ensure_model()
        runs = []
        for n in ns:
            self.say(f'scaling: imagelabel run, {n} images')
            runs.append(run_imagelabel(inputs.manifest(n), self.out / 'runs' / f'scaling-{n}',
                                       model, n, log=self.log(f'scaling-{n}'),
                                       extra=['--batch_size', str(self.args.batch_size)]))
        for prev, cur in zip(runs, runs[1:]):
            dt = cur['wall_s'] - prev['wall_s']
            cur['marginal_images_per_s_from_previous'] = (
                round((cur['n'] - prev['n']) / dt, 3) if dt > 0 else None)
        for r in runs:
            r['wall_images_per_s'] = round(r['n'] / r['wall_s'], 3)
        a, b = runs[-2], runs[-1]
        res = {'runs': runs, 'compare': [a['n'], b['n']],
               'time_ratio': round(b['wall_s'] / a['wall_s'], 3),
               'n_ratio': b['n'] / a['n'],
               'marginal_rate_ratio': ratio(b.get('marginal_images_per_s_from_previous'),
                                            a.get('marginal_images_per_s_from_previous'))}
        self.results['scaling'] = res
        for r in runs:
            self.rows.append((f'scaling: imagelabel run, N={r["n"]}', r['wall_images_per_s'],
                              round(r['n'] / r['cpu_s'], 3), None, r['peak_rss_mb'],
                              f'wall clock incl. start-up; marginal from previous N '
                              f'{fmt(r.get("marginal_images_per_s_from_previous"))}'))

    # bf16
    def bf16(self) -> None:
        if 'imagelabel' not in self.results:
            self.imagelabel()
        res = self.imagelabel_marginal('imagelabel-bf16', self.n_small(), self.args.n,
                                       ['--precision', 'bf16'], keep='imagelabel-bf16-full')
        f32 = self.results['imagelabel']
        agreement = compare_labels(self.out / 'runs' / 'imagelabel-f32-full',
                                   self.out / 'runs' / 'imagelabel-bf16-full')
        for key, precision, note in (
                ('ceiling_bf16', 'bf16', 'Keras mixed_bfloat16 clone of the same weights'),
                ('ceiling_bf16_onednn', 'bf16_onednn',
                 "oneDNN bf16 graph rewrite (what --precision bf16 uses)")):
            ceil = self.bare_keras(precision, [self.args.batch_size])
            self.results[key] = ceil
            r = ceil['by_batch_size'][str(self.args.batch_size)]
            for how in METHODS:
                self.rows.append((f'ceiling Inception-v3 {precision}, {how}, batch '
                                  f'{self.args.batch_size}', r[how]['images_per_s'],
                                  r[how]['images_per_cpu_s'], None, r[how]['peak_rss_mb'], note))
        self.results['bf16'] = {
            **res, 'speedup_vs_f32_end_to_end': ratio(res['images_per_s'], f32['images_per_s']),
            'over_f32_ceiling': ratio(res['images_per_s'], self.ceiling_rate()),
            'over_bf16_ceiling': ratio(res['images_per_s'],
                                       self.ceiling_rate('ceiling_bf16_onednn')),
            'agreement': agreement}
        self.end_to_end_row(
            f'imagelabel run --precision bf16, batch {self.args.batch_size}', res,
            f'marginal {res["n_small"]}->{res["n_big"]}; cores busy '
            f'{fmt(res.get("marginal_cpu_utilisation"), 2)}')

    # int8
    def int8(self) -> None:
        cache = self.out / 'model_cache'
        # Random weights: agreement means nothing here (README), so the gate is off;
        # the figures are still reported. Convert once, outside the timed runs.
        extra = ['--precision', 'int8', '--model_cache', str(cache), '--min_agreement', '0',
                 '--int8_runtime', self.args.int8_runtime]
        inputs, model = self.ensure_inputs(self.args.n), self.ensure_model()
        # The calibration sample depends on the input, so each input size has its own
        # cache entry: convert for both before the timed runs.
        warm = {}
        for n in (self.n_small(), self.args.n):
            self.say(f'int8: converting once for {n} images (kept in the model cache; not timed)')
            warm[n] = run_imagelabel(inputs.manifest(n), self.out / 'runs' / f'int8-convert-{n}',
                                     model, n, log=self.log(f'int8-convert-{n}'),
                                     extra=['--batch_size', str(self.args.batch_size), *extra])
        res = self.imagelabel_marginal('imagelabel-int8', self.n_small(), self.args.n, extra)
        f32 = self.results.get('imagelabel', {}).get('images_per_s')
        f32_timer = self.results.get('imagelabel', {}).get('images_per_s_pipeline_timer')
        self.results['int8'] = {
            **res, 'convert_run_wall_s': {n: w['wall_s'] for n, w in warm.items()},
            'agreement': warm[self.args.n]['agreement'],
            'over_f32_ceiling': ratio(res['images_per_s'], self.ceiling_rate()),
            'over_f32_end_to_end': ratio(res['images_per_s'], f32),
            # The runs' own timers (summary.json "seconds": launch, conversion and the
            # agreement check excluded), which noisy launches do not disturb.
            'timer_over_f32_ceiling': ratio(res.get('images_per_s_pipeline_timer'),
                                            self.ceiling_rate()),
            'timer_over_f32_end_to_end': ratio(res.get('images_per_s_pipeline_timer'), f32_timer),
            'labeling_over_f32_ceiling': ratio(res.get('images_per_s_labeling'),
                                               self.ceiling_rate())}
        self.end_to_end_row(
            f'imagelabel run --precision int8 ({self.args.int8_runtime}), batch '
            f'{self.args.batch_size}', res,
            f'marginal {res["n_small"]}->{res["n_big"]}; conversion cached; cores busy '
            f'{fmt(res.get("marginal_cpu_utilisation"), 2)}')

    # float32 on LiteRT
    def float_litert(self) -> None:
        """`--float_runtime litert`: the same model as a float32 .tflite on LiteRT."""
        extra = self.float_litert_flags()
        inputs, model = self.ensure_inputs(self.args.n), self.ensure_model()
        warm = self.warm_float_litert(inputs.manifest(self.n_small()), self.n_small(), model)
        res = self.imagelabel_marginal('imagelabel-float-litert', self.n_small(), self.args.n,
                                       extra)
        f32 = self.results.get('imagelabel', {}).get('images_per_s')
        self.results['float_litert'] = {
            **res, 'convert_run_wall_s': warm['wall_s'], 'agreement': warm['agreement'],
            'over_f32_ceiling': ratio(res['images_per_s'], self.ceiling_rate()),
            'over_f32_end_to_end': ratio(res['images_per_s'], f32)}
        self.end_to_end_row(
            f'imagelabel run --float_runtime litert, batch {self.args.batch_size}', res,
            f'marginal {res["n_small"]}->{res["n_big"]}; conversion cached; cores busy '
            f'{fmt(res.get("marginal_cpu_utilisation"), 2)}')

    def float_litert_flags(self) -> list[str]:
        # Random weights: near-ties can swap a top-1 (README), so the gate is off, as for
        # int8; the agreement is still measured and reported.
        return ['--float_runtime', 'litert', '--model_cache', str(self.out / 'model_cache'),
                '--min_agreement', '0']

    def warm_float_litert(self, manifest: pathlib.Path, n: int, model: str) -> dict[str, Any]:
        """Convert once (or find the conversion cached), outside any timed run."""
        self.say('float_litert: converting once (kept in the model cache; not timed)')
        return run_imagelabel(manifest, self.out / 'runs' / 'float-litert-convert', model, n,
                              log=self.log('float-litert-convert'),
                              extra=['--batch_size', str(self.args.batch_size),
                                     *self.float_litert_flags()])

    # startup
    def startup(self) -> None:
        """Keras start-up, this checkout against --baseline_root, timed the same way in both.

        bench/startup_probe.py marks the first batch entering RunInference in any
        checkout (older ones cannot report start-up in summary.json); the ratio is
        of the medians of --reps + 1 runs each, taken alternately.
        """
        inputs, model = self.ensure_inputs(8), self.ensure_model()
        trees = [('this', ROOT, [])] + (
            [('baseline', pathlib.Path(self.args.baseline_root), [])]
            if self.args.baseline_root else []) + [
            ('this_float_litert', ROOT, self.float_litert_flags())]
        self.warm_float_litert(inputs.manifest(8), 8, model)
        runs: dict[str, list[dict]] = {tag: [] for tag, _, _ in trees}
        for rep in range(self.args.reps + 1):
            for tag, root, extra in trees:  # alternately: drift in the machine hits all alike
                self.say(f'startup: {tag} ({root}), 8 images, rep {rep + 1}')
                runs[tag].append(self.probe_startup(inputs.manifest(8), model, tag, rep, root,
                                                    extra))
        res: dict[str, Any] = {}
        for tag, _, _ in trees:
            med = {k: statistics.median(r[k] for r in runs[tag])
                   for k in ('from_process_s', 'from_prepare_s', 'wall_s')}
            res[tag] = {**med, 'runs': runs[tag]}
            self.rows.append((f'start-up: 8-image Keras run, {tag} checkout', None, None,
                              med['from_process_s'], max(r['peak_rss_mb'] for r in runs[tag]),
                              f'Python start to first batch, median of {len(runs[tag])}; '
                              f'from prepare() {fmt(med["from_prepare_s"])} s'))
        if 'baseline' in res:
            for k in ('from_process_s', 'from_prepare_s', 'wall_s'):
                res[f'ratio_{k}'] = ratio(res['this'][k], res['baseline'][k])
                res[f'float_litert_ratio_{k}'] = ratio(res['this_float_litert'][k],
                                                       res['baseline'][k])
        self.results['startup'] = res

    def probe_startup(self, manifest: pathlib.Path, model: str, tag: str, rep: int,
                      root: pathlib.Path, extra: list[str]) -> dict[str, Any]:
        output = self.out / 'runs' / f'startup-{tag}'
        if output.exists():
            shutil.rmtree(output)
        found, child = run_script(
            'startup_probe.py', ['--input', str(manifest), '--output', str(output),
                                 '--model', model, '--batch_size', '8', *extra],
            what='the start-up probe', log=self.log(f'startup-{tag}-{rep}'), root=root)
        return {**found, **child.facts()}

    # 4. ratios, table, JSON
    def summary(self) -> dict[str, Any]:
        il = self.results.get('imagelabel', {}).get('images_per_s')
        anchor = self.results.get('anchor', {}).get('images_per_s')
        ceiling = self.ceiling_rate()
        ceiling32 = None
        if 'ceiling' in self.results:
            r = self.results['ceiling']['by_batch_size']['32']
            ceiling32 = max(r[how]['images_per_s'] for how in METHODS)
        il_cpu = self.results.get('imagelabel', {}).get('images_per_cpu_s')
        anchor_cpu = self.results.get('anchor', {}).get('images_per_cpu_s')
        ceiling_cpu = None
        if 'ceiling' in self.results:
            r = self.results['ceiling']['by_batch_size'][str(self.args.batch_size)]
            ceiling_cpu = max(r[how]['images_per_cpu_s'] for how in METHODS)
        return {'cpu_imagelabel_over_ceiling': ratio(il_cpu, ceiling_cpu),
                'cpu_imagelabel_over_anchor': ratio(il_cpu, anchor_cpu),
                'imagelabel_over_ceiling': ratio(il, ceiling),
                'imagelabel_over_ceiling_batch32': ratio(il, ceiling32),
                'imagelabel_over_anchor': ratio(il, anchor),
                'ceiling_images_per_s': ceiling, 'imagelabel_images_per_s': il,
                'anchor_images_per_s': anchor}

    def run(self) -> dict[str, Any]:
        self.results['machine'] = {
            'cores': cores(), 'cpu': cpu_name(), 'python': platform.python_version(),
            'loadavg_before': [round(x, 2) for x in os.getloadavg()],
            'started': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}
        self.results['settings'] = {k: v for k, v in vars(self.args).items()
                                    if not k.startswith('_')}
        for section in SECTIONS:
            if section in self.args.only:
                start = time.monotonic()
                getattr(self, section)()
                self.say(f'{section}: done in {time.monotonic() - start:.0f} s')
                self.save()  # a later section that fails keeps this one's figures
        self.results['machine']['loadavg_after'] = [round(x, 2) for x in os.getloadavg()]
        self.results['model_path'] = self.model_path
        summary = self.summary()
        self.results['summary'] = summary
        print_table(self.results, self.rows, self.args, summary, cores())
        print(f'\nresults -> {self.save()}')
        return self.results

    def save(self) -> pathlib.Path:
        out = pathlib.Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.results, indent=2, default=str))
        return out


def cpu_name() -> str:
    """The CPU and its relevant units, e.g. 'AMD EPYC (2 cores; AVX2)' (transforms.cpu)."""
    sys.path.insert(0, str(ROOT))
    from transforms.cpu import this_cpu  # reads /proc/cpuinfo; no TensorFlow
    return this_cpu().describe()


# --- command line ------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--n', type=int, default=None,
                        help='Synthetic images for ceiling/imagelabel/anchor/bf16 (the marginal '
                        'rate uses N/4 and N). Default 512, or 64 with --quick.')
    parser.add_argument('--quick', action='store_true',
                        help='Smoke test: N=64, 1 timed pass, scaling at 64/128/256, 200 LiteRT '
                        'photos. Checks that everything runs; its figures are not measurements.')
    parser.add_argument('--only', default=','.join(SECTIONS),
                        help=f'Comma-separated sections to run, of {",".join(SECTIONS)}.')
    parser.add_argument('--batch_size', type=int, default=32,
                        help='imagelabel --batch_size; the ceiling is measured at 32 and at this.')
    parser.add_argument('--reps', type=int, default=1,
                        help='End-to-end runs per input size; the fastest counts.')
    parser.add_argument('--ceiling_passes', type=int, default=None,
                        help='Timed passes over the inputs for bare-model figures (best counts). '
                        'Default 3, or 1 with --quick.')
    parser.add_argument('--scaling_ns', default=None,
                        help='Input sizes for the scaling run. Default 256,1024,4096 '
                        '(64,128,256 with --quick).')
    parser.add_argument('--tflite_n', type=int, default=None,
                        help='ImageNet sample photos for the tflite section (max 1000). '
                        'Default 1000, or 200 with --quick.')
    parser.add_argument('--model', default=None,
                        help='A .keras Inception-v3-shaped classifier to use instead of the '
                        'seeded random-weight one (e.g. one with real ImageNet weights, which '
                        'makes the bf16 agreement figures meaningful).')
    parser.add_argument('--int8_runtime', default='litert', choices=('litert', 'openvino'),
                        help='int8: the runtime imagelabel runs the quantized model on.')
    parser.add_argument('--baseline_root', default=None,
                        help='startup: another checkout to compare start-up with (e.g. the '
                        'main checkout before the one-load change).')
    parser.add_argument('--anchor_write', action='store_true',
                        help='Anchor writes its top classes with WriteToText (default: nothing).')
    parser.add_argument('--assets', default=default_assets(),
                        help='The shared pretrained assets folder (IMAGELABEL_ASSETS).')
    parser.add_argument('--out', default=str(HERE / 'out' / 'results.json'),
                        help='Where the results JSON goes.')
    parser.add_argument('--workdir', default=str(HERE / 'out'),
                        help='Where images, the random-weight model, manifests, run outputs '
                        'and logs go (reused between runs).')
    args = parser.parse_args(argv)
    args.n = args.n or (64 if args.quick else 512)
    args.ceiling_passes = args.ceiling_passes or (1 if args.quick else 3)
    args.scaling_ns = sorted(int(x) for x in (
        args.scaling_ns or ('64,128,256' if args.quick else '256,1024,4096')).split(','))
    args.tflite_n = min(args.tflite_n or (200 if args.quick else 1000), 1000)
    args.only = [s.strip() for s in args.only.split(',') if s.strip()]
    unknown = [s for s in args.only if s not in SECTIONS]
    if unknown:
        parser.error(f'--only: unknown section {unknown[0]}; choose from {", ".join(SECTIONS)}')
    if args.n < 4 or args.batch_size < 1 or args.reps < 1 or len(args.scaling_ns) < 2:
        parser.error('need --n >= 4, --batch_size >= 1, --reps >= 1 and two or more scaling Ns')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if 'tflite' in args.only and not (pathlib.Path(args.assets) / TFLITE_MODEL).exists():
        print(f'bench: error: assets not found at {args.assets}: pass --assets or set '
              'IMAGELABEL_ASSETS to the shared/assets folder', file=sys.stderr)
        return 2
    Bench(args).run()
    return 0


if __name__ == '__main__':
    sys.exit(main())
