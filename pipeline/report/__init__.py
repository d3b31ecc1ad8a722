"""`imagelabel report`: one self-contained HTML page about a run, and report.json.

What did the run see, how sure was it, what failed and why, and did it look
like the previous run? Answered with thumbnails and charts instead of SQL. The
modules: `data` finds and reads the tables (only the needed columns), `figures`
and `drift` are the math, `thumbnails` reads images through the job's own read
and decode, `build` gathers one `Report`, `html` renders it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

from pipeline.usage import HelpFormatter, raise_usage, usage_error


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='imagelabel report', formatter_class=HelpFormatter, allow_abbrev=False,
        description='Write one self-contained HTML report of a run (thumbnails, top labels, '
                    'score histogram, errors; with --compare, drift against an earlier run) '
                    'and report.json beside it with the same figures.')
    p.add_argument('--output', required=True,
                   help='The run\'s --output folder (local or gs://); labels-*.parquet and '
                        'errors-*.parquet are found in it and in its subfolders.')
    p.add_argument('--compare', default=None, metavar='PREVIOUS_DIR',
                   help='An earlier run\'s --output: show the drift of the top-label '
                        'distribution against it.')
    p.add_argument('--out', default='report.html',
                   help='The HTML file to write (local); report.json goes beside it.')
    p.add_argument('--max_tiles', type=int, default=500,
                   help='At most this many thumbnails, sampled stratified by top label.')
    p.add_argument('--max_errors', type=int, default=1000,
                   help='At most this many rows in the error table (counts cover all).')
    p.add_argument('--low_confidence', type=float, default=0.3,
                   help='A top-1 score below this is counted as low confidence.')
    p.add_argument('--threads', type=int, default=8, help='Parallel thumbnail reads.')
    p.error = raise_usage
    return p


def validate(args: argparse.Namespace) -> None:
    if args.max_tiles < 0:
        raise ValueError(f'--max_tiles must be 0 or more, got {args.max_tiles}')
    if args.max_errors < 0:
        raise ValueError(f'--max_errors must be 0 or more, got {args.max_errors}')
    if not 0.0 <= args.low_confidence <= 1.0:
        raise ValueError(f'--low_confidence is a score between 0 and 1, got {args.low_confidence}')
    if args.threads < 1:
        raise ValueError(f'--threads must be at least 1, got {args.threads}')
    if '://' in args.out:
        raise ValueError(f'--out {args.out} must be a local file (open it in a browser)')
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder):
        raise ValueError(f'--out {args.out}: folder {folder} does not exist')


def report_json_path(out: str) -> str:
    """report.json, beside the HTML file."""
    return os.path.join(os.path.dirname(out), 'report.json')


def main(argv: Sequence[str]) -> int:
    from pipeline.report.build import build_report
    from pipeline.report.html import plural, render
    start = time.monotonic()
    try:
        args = parser().parse_args(list(argv))
        validate(args)
        report = build_report(args.output, compare_to=args.compare, max_tiles=args.max_tiles,
                              max_errors=args.max_errors, low_confidence=args.low_confidence,
                              threads=args.threads)
    except ValueError as e:
        return usage_error(e)
    page = render(report)
    with open(args.out, 'w', encoding='utf-8') as f:
        f.write(page)
    figures = report.to_json()
    with open(report_json_path(args.out), 'w', encoding='utf-8') as f:
        json.dump(figures, f, indent=2)
    h = report.header
    drift = (f', total variation {report.drift.total_variation:.3f} against {args.compare}'
             if report.drift else '')
    if report.drift_note:
        drift += f'; {report.drift_note}'
    print(f'report of {h.labeled} labeled images and {plural(h.errors, "error")} '
          f'({plural(len(report.tiles), "tile")}{", sampled" if report.tiles_sampled else ""}{drift})\n'
          f'  html -> {args.out} ({len(page.encode()) / 1e6:.2f} MB)\n'
          f'  json -> {report_json_path(args.out)}\n'
          f'  time    {time.monotonic() - start:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
