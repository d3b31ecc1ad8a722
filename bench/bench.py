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
import datetime
import json
import os
import pathlib
import platform
import sys
import time
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import make_images  # noqa: E402
from children import (METHODS, TFLITE_MODEL, Inputs, cores, cpu_name,  # noqa: E402
                      default_assets, marginal, run_anchor, run_imagelabel, run_worker,
                      sample_photos)
from precision_sections import PrecisionSections  # noqa: E402
from report import fmt, print_table, ratio  # noqa: E402

SECTIONS = ('ceiling', 'imagelabel', 'anchor', 'tflite', 'scaling', 'bf16', 'int8',
            'float_litert', 'startup')
MODEL_SEED = 0
# --- sections (orchestration) ------------------------------------------------------------

class Bench(PrecisionSections):
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

    def keras_batch(self) -> int:
        """The Keras runs' batch size: --batch_size, else imagelabel's Keras default
        (transforms.models.formats: 32)."""
        return self.args.batch_size or 32

    def batch_flags(self) -> list[str]:
        """--batch_size for imagelabel when given; else each run takes its model's default
        (32 for Keras, 256 for .tflite and int8 conversions), as users get."""
        return ['--batch_size', str(self.args.batch_size)] if self.args.batch_size else []

    def batch_label(self) -> str:
        return f'batch {self.args.batch_size}' if self.args.batch_size else 'default batch'

    def batch_sizes(self) -> list[int]:
        return sorted({32, self.keras_batch()})

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
                    extra=[*self.batch_flags(), *extra]))
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
        r = c['by_batch_size'].get(str(self.keras_batch()))
        return max(r[how]['images_per_s'] for how in METHODS) if r else None

    # 2. imagelabel
    def imagelabel(self) -> None:
        res = self.imagelabel_marginal('imagelabel-f32', self.n_small(), self.args.n, [],
                                       keep='imagelabel-f32-full')
        self.results['imagelabel'] = res
        self.end_to_end_row(
            f'imagelabel run, Inception-v3 f32 (.keras), batch {self.keras_batch()}', res,
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
                    extra=self.batch_flags()))
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
                                       extra=self.batch_flags()))
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
            r = self.results['ceiling']['by_batch_size'][str(self.keras_batch())]
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
        print_table(self.results, self.rows, self.args, summary, cores(), self.keras_batch())
        print(f'\nresults -> {self.save()}')
        return self.results

    def save(self) -> pathlib.Path:
        out = pathlib.Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.results, indent=2, default=str))
        return out


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
    parser.add_argument('--batch_size', type=int, default=None,
                        help='imagelabel --batch_size (default: each model\'s own, 32 for Keras and '
                        '256 for .tflite and int8); the ceiling is measured at 32 and at this.')
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
    if args.n < 4 or (args.batch_size is not None and args.batch_size < 1) or args.reps < 1 or (
            len(args.scaling_ns) < 2):
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
