"""Everything the report shows, gathered into one value (`Report`) before any HTML.

The page and `report.json` are two renderings of the same `Report`, so what a
person sees and what a program reads cannot disagree.
"""
from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.report import data, figures
from pipeline.report.drift import Drift, compare
from pipeline.report.thumbnails import THUMB_SIZE, Thumbnail, thumbnails

#: Columns the report reads; never `embedding`.
LABEL_COLUMNS = ['uri', 'labels', 'top_label', 'run_id', 'model', 'model_id', 'processed_at']
ERROR_COLUMNS = ['uri', 'stage', 'error', 'message', 'run_id', 'model_id', 'processed_at']


@dataclasses.dataclass(frozen=True)
class Header:
    """Who made the run and how it went: summary.json where present, else the rows."""
    output: str
    run_ids: list[str]
    models: list[str]
    model_ids: list[str]
    first_row_at: str | None
    last_row_at: str | None
    listed: int
    inputs: int
    labeled: int
    errors: int
    read_retries: int | None
    seconds: float | None
    images_per_second: float | None
    summaries: int
    skipped: int = 0    # --skip_existing: unchanged since an earlier date, so not in these rows
    reused: int = 0     # label rows copied from an earlier row of the same content

    @property
    def one_incremental_night(self) -> bool:
        """One partition of a --skip_existing run that skipped images: its rows are that
        night's new images only (a report over several dates holds what earlier ones kept)."""
        return bool(self.skipped) and self.summaries == 1


@dataclasses.dataclass(frozen=True)
class Tile:
    uri: str
    top_label: str
    labels: list[tuple[str, float]]
    thumbnail: Thumbnail


@dataclasses.dataclass(frozen=True)
class ErrorRow:
    uri: str
    stage: str
    error: str
    message: str


@dataclasses.dataclass
class Report:
    header: Header
    label_counts: dict[str, int]
    scores: figures.Histogram
    low_confidence: figures.LowConfidence
    tiles: list[Tile]
    tiles_sampled: bool
    max_tiles: int
    error_rows: list[ErrorRow]
    errors_by_class: dict[str, int]
    errors_by_stage: dict[str, int]
    drift: Drift | None = None
    previous: Header | None = None
    drift_note: str | None = None   # what the drift covers (incremental runs), or why none

    def to_json(self) -> dict[str, Any]:
        """report.json: the figures the page shows (not the thumbnails)."""
        out = {
            'run': dataclasses.asdict(self.header),
            'counts': {'listed': self.header.listed, 'inputs': self.header.inputs,
                       'skipped': self.header.skipped, 'labeled': self.header.labeled,
                       'reused': self.header.reused, 'errors': self.header.errors},
            'labels': self.label_counts,
            'scores': self.scores.to_json(),
            'low_confidence': self.low_confidence.to_json(),
            'errors_by_class': self.errors_by_class,
            'errors_by_stage': self.errors_by_stage,
            'tiles': {'shown': len(self.tiles), 'labeled': self.header.labeled,
                      'sampled': self.tiles_sampled, 'max_tiles': self.max_tiles,
                      'unreadable': sum(t.thumbnail.data_uri is None for t in self.tiles)},
            'drift': self.drift.to_json() if self.drift else None,
            'drift_note': self.drift_note,
        }
        if self.previous and self.drift:
            out['drift']['previous_run'] = dataclasses.asdict(self.previous)
        return out


def _distinct(*columns: pa.ChunkedArray) -> list[str]:
    values: set[str] = set()
    for c in columns:
        values.update(v for v in pc.unique(c).to_pylist() if v is not None)
    return sorted(values)


def _iso(ts: Any) -> str | None:
    if ts is None:
        return None
    if isinstance(ts, datetime.datetime):
        return ts.astimezone(datetime.timezone.utc).isoformat(timespec='seconds')
    return str(ts)


def _time_range(*columns: pa.ChunkedArray) -> tuple[str | None, str | None]:
    lows, highs = [], []
    for c in columns:
        if len(c) and c.null_count < len(c):
            mm = pc.min_max(c).as_py()
            lows.append(mm['min'])
            highs.append(mm['max'])
    return (_iso(min(lows)) if lows else None, _iso(max(highs)) if highs else None)


def header_of(files: data.RunFiles, labels: pa.Table, errors: pa.Table) -> Header:
    summaries = data.read_summaries(files)
    first, last = _time_range(labels.column('processed_at'), errors.column('processed_at'))
    labeled, failed = labels.num_rows, errors.num_rows
    s_ids = [s['run_id'] for s in summaries if s.get('run_id')]
    seconds = sum(float(s.get('seconds', 0.0)) for s in summaries) if summaries else None
    inputs = sum(int(s.get('inputs', 0)) for s in summaries) if summaries else labeled + failed
    return Header(
        output=files.output,
        run_ids=sorted(set(s_ids) | set(_distinct(labels.column('run_id'),
                                                  errors.column('run_id')))),
        models=sorted(set(_distinct(labels.column('model')))
                      | {s['model'] for s in summaries if s.get('model')}),
        model_ids=sorted(set(_distinct(labels.column('model_id'), errors.column('model_id')))
                         | {s['model_id'] for s in summaries if s.get('model_id')}),
        first_row_at=first, last_row_at=last,
        listed=sum(int(s.get('listed', 0)) for s in summaries) if summaries else inputs,
        inputs=inputs, labeled=labeled, errors=failed,
        read_retries=sum(int(s.get('read_retries', 0)) for s in summaries) if summaries else None,
        seconds=seconds,
        images_per_second=inputs / seconds if seconds else None,
        summaries=len(summaries),
        skipped=sum(int(s.get('skipped', 0)) for s in summaries),
        reused=sum(int(s.get('reused', 0)) for s in summaries))


def _tiles(labels: pa.Table, counts: dict[str, int], max_tiles: int,
           thumb_size: int, threads: int) -> tuple[list[Tile], bool]:
    """A stratified sample of the labeled rows, most frequent label first, best score first."""
    top = labels.column('top_label').combine_chunks()
    codes = pc.dictionary_encode(top).indices.to_numpy(zero_copy_only=False)
    chosen = figures.stratified_sample(codes, max_tiles)
    picked = labels.select(['uri', 'labels', 'top_label']).take(pa.array(chosen, pa.int64()))
    rows = picked.to_pylist()
    rank = {label: i for i, label in enumerate(counts)}
    rows.sort(key=lambda r: (rank.get(r['top_label'], len(rank)),
                             -(r['labels'][0]['score'] if r['labels'] else 0.0), r['uri']))
    thumbs = thumbnails([r['uri'] for r in rows], thumb_size, threads)
    tiles = [Tile(r['uri'], r['top_label'], [(l['label'], float(l['score'])) for l in r['labels']],
                  t) for r, t in zip(rows, thumbs)]
    return tiles, len(chosen) < labels.num_rows


def _errors(errors: pa.Table, max_rows: int) -> tuple[list[ErrorRow], dict, dict]:
    by_class = figures.label_counts(errors.column('error'))
    by_stage = figures.label_counts(errors.column('stage'))
    shown = errors.select(['uri', 'stage', 'error', 'message'])
    if shown.num_rows:
        shown = shown.sort_by([('stage', 'ascending'), ('error', 'ascending'),
                               ('uri', 'ascending')]).slice(0, max_rows)
    return [ErrorRow(**r) for r in shown.to_pylist()], by_class, by_stage


def load_label_counts(output: str) -> tuple[Header, dict[str, int]]:
    """A run's header and top-label histogram (what --compare needs of the previous run)."""
    files = data.find_run(output)
    data.check_label_files(files, ['top_label'])
    labels = data.read_labels(files, [c for c in LABEL_COLUMNS if c not in ('uri', 'labels')])
    errors = data.read_errors(files, ERROR_COLUMNS)
    return header_of(files, labels, errors), figures.label_counts(labels.column('top_label'))


def build_report(output: str, *, compare_to: str | None = None, max_tiles: int = 500,
                 max_errors: int = 1000, low_confidence: float = 0.3,
                 thumb_size: int = THUMB_SIZE, threads: int = 8) -> Report:
    files = data.find_run(output)
    data.check_label_files(files, ['uri', 'labels', 'top_label'])
    labels = data.read_labels(files, LABEL_COLUMNS)
    errors = data.read_errors(files, ERROR_COLUMNS)
    header = header_of(files, labels, errors)
    counts = figures.label_counts(labels.column('top_label'))
    scores = figures.top1_scores(labels.column('labels'))
    tiles, sampled = _tiles(labels, counts, max_tiles, thumb_size, threads)
    error_rows, by_class, by_stage = _errors(errors, max_errors)
    report = Report(header=header, label_counts=counts, scores=figures.score_histogram(scores),
                    low_confidence=figures.low_confidence(scores, low_confidence),
                    tiles=tiles, tiles_sampled=sampled, max_tiles=max_tiles,
                    error_rows=error_rows, errors_by_class=by_class, errors_by_stage=by_stage)
    if compare_to is not None:
        previous, previous_counts = load_label_counts(compare_to)
        report.previous = previous
        report.drift, report.drift_note = drift_between(
            (output, header, counts), (compare_to, previous, previous_counts))
    return report


def drift_between(current: tuple[str, Header, dict[str, int]],
                  previous: tuple[str, Header, dict[str, int]]
                  ) -> tuple[Drift | None, str | None]:
    """The drift of two runs' top labels, and a note where a side is incremental.

    A --skip_existing partition holds only what that night labeled or copied: its drift is
    that of the new images, and a night with nothing new has no distribution (no drift, not
    an error, so a nightly alert on drift.total_variation does not fail on a quiet night).
    A side with no labeled image and nothing skipped is an error: nothing to compare.
    """
    for place, header, counts in (current, previous):
        if not counts and not header.one_incremental_night:
            raise ValueError(f'{place} has no labeled image, so there is no label '
                             'distribution to compare')
    incremental = [f'{place} skipped {header.skipped} unchanged images'
                   for place, header, _ in (current, previous) if header.one_incremental_night]
    if not incremental:
        return compare(current[2], previous[2]), None
    if not current[2] or not previous[2]:
        empty = current[0] if not current[2] else previous[0]
        return None, (f'no drift: {empty} labeled no new image ({"; ".join(incremental)}, '
                      'whose rows are in earlier dates)')
    return compare(current[2], previous[2]), (
        f'the drift of the images each run labeled or copied: {"; ".join(incremental)}, '
        'whose rows are in earlier dates and not compared')
