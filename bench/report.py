"""bench's report: the table people read, and comparisons of two runs' outputs.

Figures come from bench.py's results (and from each run's summary.json, never
from its printed text); this module only formats and compares.
"""
from __future__ import annotations

import pathlib
from typing import Any

import make_images


def fmt(x, digits=1) -> str:
    if x is None:
        return '-'
    if isinstance(x, float):
        return f'{x:.{digits}f}'
    return str(x)


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def print_table(results: dict[str, Any], rows: list[tuple], args, summary: dict[str, Any],
                cores: int, keras_batch: int) -> None:
    """The human table: every row, then the ratios the issue asks for, naming the CPU.

    `keras_batch`: the Keras runs' batch size (--batch_size, else Keras's default)."""
    c = cores
    a = args
    print()
    print(f'CPU: {results["machine"]["cpu"]}')
    batch = f'batch {a.batch_size}' if a.batch_size else "each model's default batch"
    print(f'imagelabel bench: N={a.n} synthetic {make_images.DEFAULT_WIDTH}x'
          f'{make_images.DEFAULT_HEIGHT} JPEGs, {batch}, {c} cores, '
          f'reps {a.reps}{", QUICK (smoke test, not a measurement)" if a.quick else ""}')
    print(f'load average before {results["machine"]["loadavg_before"]}, after '
          f'{results["machine"]["loadavg_after"]}  (anything near {c} or above '
          'means other work shared the cores)')
    head = ('figure', 'images/s', '/core', 'img/CPU-s', 'start-up s', 'peak RSS MB', 'note')
    width = max([len(head[0])] + [len(r[0]) for r in rows])
    print(f'{head[0]:<{width}}  {head[1]:>8}  {head[2]:>6}  {head[3]:>9}  {head[4]:>10}  '
          f'{head[5]:>11}  {head[6]}')
    print('-' * (width + 62))
    for name, rate, cpu_rate, startup, rss, note in rows:
        per_core = rate / c if rate else None
        print(f'{name:<{width}}  {fmt(rate):>8}  {fmt(per_core):>6}  {fmt(cpu_rate):>9}  '
              f'{fmt(startup):>10}  {fmt(rss, 0):>11}  {note}')
    print()
    if summary['imagelabel_over_ceiling'] or summary['imagelabel_over_anchor']:
        also32 = (f'    imagelabel / ceiling (batch 32): '
                  f'{fmt(summary["imagelabel_over_ceiling_batch32"], 3)}'
                  if keras_batch != 32 else '')
        print(f'imagelabel / ceiling (batch {keras_batch}): '
              f'{fmt(summary["imagelabel_over_ceiling"], 3)}{also32}    '
              f'imagelabel / anchor: {fmt(summary["imagelabel_over_anchor"], 3)}')
        print(f'the same in images per CPU-second (less disturbed by other load): '
              f'imagelabel / ceiling {fmt(summary["cpu_imagelabel_over_ceiling"], 3)}    '
              f'imagelabel / anchor {fmt(summary["cpu_imagelabel_over_anchor"], 3)}')
    if 'tflite' in results:
        t = results['tflite']
        print(f'tflite: imagelabel / bare interpreter {fmt(t["imagelabel_over_bare"], 3)}; '
              f'serial decode+invoke bound {fmt(t["serial_decode_plus_invoke_images_per_s"])} '
              f'images/s, imagelabel / that {fmt(t["imagelabel_over_serial"], 3)}; in CPU-seconds: '
              f'bound {fmt(t["serial_decode_plus_invoke_images_per_cpu_s"])} images/CPU-s, '
              f'imagelabel / that {fmt(t["imagelabel_over_serial_cpu"], 3)}')
    if 'scaling' in results:
        s = results['scaling']
        print(f'scaling: N {s["compare"][1]} vs {s["compare"][0]}: time x{fmt(s["time_ratio"], 2)} '
              f'for x{fmt(s["n_ratio"], 1)} images (linear with start-up: a bit under '
              f'x{fmt(s["n_ratio"], 1)}); marginal-rate ratio {fmt(s["marginal_rate_ratio"], 3)}')
    if 'bf16' in results:
        b = results['bf16']
        g = b['agreement']
        print(f'bf16: speed-up vs f32 end to end x{fmt(b["speedup_vs_f32_end_to_end"], 2)}; '
              f'bf16 end to end / f32 ceiling {fmt(b["over_f32_ceiling"], 3)}; '
              f'/ bf16 (oneDNN rewrite) ceiling {fmt(b["over_bf16_ceiling"], 3)}; from the '
              f'first batch on (summary.json labeling_seconds): / f32 ceiling '
              f'{fmt(b.get("labeling_over_f32_ceiling"), 3)}, / f32 end to end '
              f'{fmt(b.get("labeling_over_f32_end_to_end"), 3)}')
        print(f'bf16 vs f32 on {g["compared"]} images: top-1 agreement '
              f'{fmt(g["top1_agreement"], 4)} (bf16 top-1 in f32 top-k '
              f'{fmt(g["bf16_top1_in_f32_topk"], 4)}), largest score difference '
              f'{fmt(g["max_abs_score_diff"], 6)} (top-1 scores '
              f'{fmt(g["max_abs_top1_score_diff"], 6)}); embeddings: largest difference '
              f'{fmt(g["max_abs_embedding_diff"], 6)}, {fmt(100 * g["max_rel_embedding_diff"], 2)}% '
              f'of the largest value, lowest cosine {fmt(g["min_embedding_cosine"], 6)}')
        print(f'      f32: {g["distinct_top1_f32"]} distinct top-1 classes, mean top-1 score '
              f'{fmt(g["mean_top1_score_f32"], 5)}; top-1/top-2 exact ties: f32 '
              f'{g["top1_tied_f32"]}, bf16 {g["top1_tied_bf16"]}')
        if g['degenerate']:
            print('      WARNING: near-uniform outputs (random weights): top-1 agreement and '
                  'score differences are meaningless here; trust the embedding figures, or '
                  'pass --model with real weights')
    if 'int8' in results:
        q = results['int8']
        g = q.get('agreement') or {}
        print(f'int8: end to end / f32 ceiling {fmt(q["over_f32_ceiling"], 3)}; / f32 end to end '
              f'{fmt(q["over_f32_end_to_end"], 3)}; by the runs\' own timers (start-up and '
              f'conversion excluded): / f32 ceiling {fmt(q.get("timer_over_f32_ceiling"), 3)}, '
              f'/ f32 end to end {fmt(q.get("timer_over_f32_end_to_end"), 3)}; from the first '
              f'batch on (summary.json labeling_seconds): / f32 ceiling '
              f'{fmt(q.get("labeling_over_f32_ceiling"), 3)}')
        print(f'      {agreement_text(g, "f32")} (random weights: meaningless, see README)')
    if 'float_litert' in results:
        fl = results['float_litert']
        g = fl.get('agreement') or {}
        print(f'float32 on LiteRT: end to end / f32 ceiling {fmt(fl["over_f32_ceiling"], 3)}; '
              f'/ f32 end to end (TensorFlow) {fmt(fl["over_f32_end_to_end"], 3)}; '
              f'{agreement_text(g, "TensorFlow")}')
    if 'startup' in results:
        st = results['startup']
        base = st.get('baseline', {})
        for key, what in (('from_process_s', 'Python start to first batch'),
                          ('from_prepare_s', 'prepare() to first batch'),
                          ('wall_s', 'whole 8-image run')):
            lite = st.get('this_float_litert', {})
            print(f'start-up, {what} (medians): this {fmt(st["this"][key])} s, baseline '
                  f'{fmt(base.get(key))} s, ratio {fmt(st.get(f"ratio_{key}"), 3)}; with '
                  f'--float_runtime litert (cached) {fmt(lite.get(key))} s, ratio '
                  f'{fmt(st.get(f"float_litert_ratio_{key}"), 3)}')


def agreement_text(g: dict, reference: str) -> str:
    """summary.json's agreement figures in one phrase."""
    return (f'agreement with {reference} on {g.get("images")} held-out images (summary.json): '
            f'top-1 {fmt(g.get("top1"), 3)}, top-5 overlap {fmt(g.get("top5_overlap"), 3)}, '
            f'max prob diff {fmt(g.get("max_prob_diff"), 5)}')


def compare_labels(a_dir: pathlib.Path, b_dir: pathlib.Path) -> dict[str, Any]:
    """Top-1 agreement and score differences of two runs' labels-*.parquet, joined by uri."""
    import numpy as np
    import pyarrow.parquet as pq

    def load(d):
        rows = {}
        for f in sorted(d.glob('**/labels-*.parquet')):
            for r in pq.read_table(f, columns=['uri', 'labels', 'embedding']).to_pylist():
                rows[r['uri']] = r
        return rows

    a, b = load(a_dir), load(b_dir)
    common = sorted(set(a) & set(b))
    agree = in_top_k = 0
    top1_diff = score_diff = emb_diff = emb_rel = 0.0
    top1s, top1_scores, tied = set(), [], {'f32': 0, 'bf16': 0}
    cosines = []
    for uri in common:
        la, lb = a[uri]['labels'], b[uri]['labels']
        agree += la[0]['index'] == lb[0]['index']
        in_top_k += lb[0]['index'] in {x['index'] for x in la}
        top1s.add(la[0]['index'])
        top1_scores.append(la[0]['score'])
        for name, lab in (('f32', la), ('bf16', lb)):  # top-1 and top-2 equal: a coin toss
            tied[name] += len(lab) > 1 and lab[0]['score'] == lab[1]['score']
        top1_diff = max(top1_diff, abs(la[0]['score'] - lb[0]['score']))
        sb = {x['index']: x['score'] for x in lb}
        for x in la:  # the same class in both top-k lists
            if x['index'] in sb:
                score_diff = max(score_diff, abs(x['score'] - sb[x['index']]))
        ea, eb = a[uri]['embedding'], b[uri]['embedding']
        if ea and eb and len(ea) == len(eb):
            ea, eb = np.asarray(ea, np.float64), np.asarray(eb, np.float64)
            d = float(np.max(np.abs(ea - eb)))
            emb_diff = max(emb_diff, d)
            emb_rel = max(emb_rel, d / max(float(np.max(np.abs(ea))), 1e-30))
            cosines.append(float(ea @ eb / max(np.linalg.norm(ea) * np.linalg.norm(eb), 1e-30)))
    n = len(common)
    mean_top1 = float(np.mean(top1_scores)) if top1_scores else None
    return {'compared': n, 'only_in_f32': len(set(a) - set(b)),
            'only_in_bf16': len(set(b) - set(a)),
            'top1_agreement': round(agree / n, 5) if n else None,
            'bf16_top1_in_f32_topk': round(in_top_k / n, 5) if n else None,
            'max_abs_score_diff': round(score_diff, 6),
            'max_abs_top1_score_diff': round(top1_diff, 6),
            'max_abs_embedding_diff': round(emb_diff, 6),
            'max_rel_embedding_diff': round(emb_rel, 6),
            'min_embedding_cosine': round(min(cosines), 6) if cosines else None,
            'distinct_top1_f32': len(top1s),
            'mean_top1_score_f32': round(mean_top1, 6) if mean_top1 is not None else None,
            'top1_tied_f32': tied['f32'], 'top1_tied_bf16': tied['bf16'],
            # Random weights give near-uniform softmax outputs: top-1 is then decided by
            # rounding noise and says nothing about bf16's accuracy.
            'degenerate': bool(mean_top1 is not None and mean_top1 < 0.01)}
