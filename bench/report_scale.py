"""How `imagelabel report` and `imagelabel similar` scale: a synthetic million-row output.

Writes an output folder shaped like a real run's (the labels schema, top-5 labels
over the 1000 ImageNet names with a Zipf-like distribution, 2048-d float32
embeddings, row groups of 8192 rows like Beam's 64 MB buffer), with URIs that
cycle over a few hundred generated JPEGs, then times `imagelabel report` and
`imagelabel similar` on it in child processes and prints wall time, peak RSS and
the HTML size. Everything goes under bench/out/scale/ (git-ignored).

    python bench/report_scale.py                 # 1,000,000 rows x 2048-d (about 8.5 GB)
    python bench/report_scale.py --rows 100000   # a quicker look
"""
from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from children import run_child  # noqa: E402 - bench/ is this script's folder
from transforms.cpu import this_cpu  # noqa: E402
from transforms.models import load_labels  # noqa: E402
from transforms.schema import LABELS_SCHEMA, ERRORS_SCHEMA  # noqa: E402


def make_photos(folder: pathlib.Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f'photo_{i:04d}.jpg'
        if not path.exists():
            yy, xx = np.mgrid[0:375, 0:500]
            base = np.stack([xx * 255 / 499, yy * 255 / 374,
                             np.full((375, 500), rng.integers(0, 255))], axis=-1)
            img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(path, quality=85)
        paths.append(str(path))
    return paths


def write_output(out: pathlib.Path, rows: int, dim: int, photos: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    names = load_labels()
    rng = np.random.default_rng(1)
    weights = 1.0 / np.arange(1, len(names) + 1) ** 1.1
    weights /= weights.sum()
    now = datetime.datetime.now(datetime.timezone.utc)
    group = 8192
    # As Beam's WriteToParquet writes them: uncompressed, list items named 'item'.
    with pq.ParquetWriter(out / 'labels-00000-of-00001.parquet', LABELS_SCHEMA,
                          compression='none', use_compliant_nested_type=False) as w:
        for start in range(0, rows, group):
            n = min(group, rows - start)
            top = rng.choice(len(names), size=n, p=weights)
            scores = np.sort(rng.dirichlet(np.ones(6) * 0.5, size=n)[:, :5], axis=1)[:, ::-1]
            labels = [[{'index': int((t + j * 7) % 1000), 'label': names[(t + j * 7) % 1000],
                        'score': float(scores[i, j])} for j in range(5)]
                      for i, t in enumerate(top)]
            emb = rng.standard_normal((n, dim), dtype=np.float32)
            emb_col = pa.ListArray.from_arrays(
                pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32)),
                pa.array(emb.reshape(-1)), type=LABELS_SCHEMA.field('embedding').type)
            batch = pa.table({
                # URIs repeat over the photos, so every sampled tile is a real read and decode
                'uri': [photos[(start + i) % len(photos)] for i in range(n)],
                'labels': pa.array(labels, LABELS_SCHEMA.field('labels').type),
                'top_label': [names[t] for t in top],
                'embedding': emb_col,
                'model': ['synthetic'] * n, 'model_id': ['synthetic-0'] * n,
                'content_sha256': ['0' * 64] * n,
                'width': pa.array([500] * n, pa.int32()), 'height': pa.array([375] * n, pa.int32()),
                'run_id': ['scale'] * n, 'processed_at': pa.array([now] * n, pa.timestamp('us', 'UTC')),
                # only --skip_existing runs fill these
                **{c: pa.nulls(n, LABELS_SCHEMA.field(c).type)
                   for c in ('source_size', 'source_updated')},
            }, schema=LABELS_SCHEMA)
            w.write_table(batch, row_group_size=group)
    pq.write_table(pa.table({f.name: pa.array([], f.type) for f in ERRORS_SCHEMA},
                            schema=ERRORS_SCHEMA), out / 'errors-00000-of-00001.parquet')


def timed(args: list[str], logs: pathlib.Path) -> tuple[float, float, str]:
    """(seconds, peak RSS GiB, stdout) of `python -m pipeline.cli ARGS` (bench.run_child)."""
    child = run_child([sys.executable, '-m', 'pipeline.cli', *args],
                      log=logs / args[0]).check(f'imagelabel {args[0]}')
    return child.wall_s, child.peak_rss_mb / 1024, child.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--rows', type=int, default=1_000_000)
    p.add_argument('--dim', type=int, default=2048)
    p.add_argument('--photos', type=int, default=300)
    p.add_argument('--keep', action='store_true', help='Keep the output for another look.')
    a = p.parse_args()
    base = ROOT / 'bench' / 'out' / 'scale'
    out = base / f'out-{a.rows}x{a.dim}'
    photos = make_photos(base / 'photos', a.photos)
    if not (out / 'labels-00000-of-00001.parquet').exists():
        start = time.monotonic()
        write_output(out, a.rows, a.dim, photos)
        print(f'wrote {a.rows} rows x {a.dim}-d in {time.monotonic() - start:.0f} s')
    size = sum(f.stat().st_size for f in out.glob('*.parquet'))
    print(f'{this_cpu().describe()}; labels table {size / 1e9:.2f} GB, '
          f'{a.rows} rows, {a.dim}-d embeddings')
    html = base / 'report.html'
    s, rss, _ = timed(['report', '--output', str(out), '--out', str(html)], base / 'logs')
    figures = json.loads((base / 'report.json').read_text())
    print(f'report : {s:6.1f} s wall, peak RSS {rss:.2f} GiB, html {html.stat().st_size / 1e6:.2f} MB, '
          f'{figures["tiles"]["shown"]} tiles of {figures["counts"]["labeled"]}')
    s, rss, stdout = timed(['similar', '--output', str(out), '--uri', photos[0], '--k', '10',
                            '--format', 'json'], base / 'logs')
    print(f'similar: {s:6.1f} s wall, peak RSS {rss:.2f} GiB over all rows '
          f'({a.rows / s:,.0f} rows/s); first neighbour {json.loads(stdout)[0]["similarity"]:.4f}')
    if not a.keep:
        for f in out.glob('*.parquet'):
            f.unlink()
        out.rmdir()


if __name__ == '__main__':
    main()
