"""bench.py's precision and start-up sections: bf16, int8, float32 on LiteRT, start-up.

A mixin of `bench.Bench`: the sections use its fixtures (`ensure_inputs`,
`ensure_model`, `imagelabel_marginal`, `ceiling_rate`, ...) and add their figures
to its `results` and `rows`, like the throughput sections in bench.py.
"""
from __future__ import annotations

import pathlib
import shutil
import statistics
from typing import Any

from children import METHODS, ROOT, run_imagelabel, run_script
from report import compare_labels, fmt, ratio


class PrecisionSections:
    """bf16, int8, float_litert and startup (see bench.py's docstring for each)."""

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
            ceil = self.bare_keras(precision, [self.keras_batch()])
            self.results[key] = ceil
            r = ceil['by_batch_size'][str(self.keras_batch())]
            for how in METHODS:
                self.rows.append((f'ceiling Inception-v3 {precision}, {how}, batch '
                                  f'{self.keras_batch()}', r[how]['images_per_s'],
                                  r[how]['images_per_cpu_s'], None, r[how]['peak_rss_mb'], note))
        self.results['bf16'] = {
            **res, 'speedup_vs_f32_end_to_end': ratio(res['images_per_s'], f32['images_per_s']),
            'over_f32_ceiling': ratio(res['images_per_s'], self.ceiling_rate()),
            'over_bf16_ceiling': ratio(res['images_per_s'],
                                       self.ceiling_rate('ceiling_bf16_onednn')),
            # From the first batch on (summary.json labeling_seconds), as for int8: the
            # launch's agreement check grows with N (its held-out slice does), which
            # drags the wall-clock marginal rate of a small bench far below the steady one.
            'labeling_over_f32_ceiling': ratio(res.get('images_per_s_labeling'),
                                               self.ceiling_rate()),
            'labeling_over_f32_end_to_end': ratio(res.get('images_per_s_labeling'),
                                                  f32.get('images_per_s_labeling')),
            'agreement': agreement}
        self.end_to_end_row(
            f'imagelabel run --precision bf16, batch {self.keras_batch()}', res,
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
                                     extra=[*self.batch_flags(), *extra])
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
            f'imagelabel run --precision int8 ({self.args.int8_runtime}), {self.batch_label()}',
            res,
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
            # The untimed first run: it converts, or finds the conversion already cached.
            **res, 'warm_run_wall_s': warm['wall_s'], 'agreement': warm['agreement'],
            'over_f32_ceiling': ratio(res['images_per_s'], self.ceiling_rate()),
            'over_f32_end_to_end': ratio(res['images_per_s'], f32)}
        self.end_to_end_row(
            f'imagelabel run --float_runtime litert, {self.batch_label()}', res,
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
                              extra=[*self.batch_flags(), *self.float_litert_flags()])

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
