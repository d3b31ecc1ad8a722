"""Incremental runs: label only what is new since earlier runs under the same --output.

Nightly over a bucket that grew since yesterday, most objects are unchanged. For
each listed URI (with its size and modification time from the listing), the
latest earlier row of that URI decides, as a pure function (`decide`):

- SKIP: an earlier label row by the same model_id, same size and time, holding at
  least this run's top-k: not read.
- SKIP too: an earlier *permanent* failure (undecodable, too large...) of the
  same, unchanged object, unless --retry_errors: it would fail the same way.
- RETRY: an earlier *transient* failure (read_failed, permission_denied: the store
  failed or refused, and granting access changes neither size nor time): read again.
- READ: anything else (new, changed, another model).

What is read is hashed; if an earlier label row by the same model_id has the
same content_sha256 (a renamed or copied file), that row is copied under the new
URI (REUSED) without running the model. Both joins run inside the pipeline
(CoGroupByKey), so the index of earlier rows never loads on the launcher.
"""
from __future__ import annotations

import dataclasses
import datetime
import enum
from typing import Any, Iterable

import apache_beam as beam

from transforms import metrics

#: Error classes worth another try on the next run: the store, not the image, failed
#: (a permission granted since changes neither the object's size nor its time).
TRANSIENT_ERRORS = frozenset({'read_failed', 'permission_denied'})

INDEX_COLUMNS = ['uri', 'model_id', 'content_sha256', 'source_size', 'source_updated',
                 'processed_at', 'error']


class Decision(enum.Enum):
    SKIP = 'skip'
    READ = 'read'
    RETRY = 'retry'


@dataclasses.dataclass(frozen=True)
class Listed:
    """A URI as listed, with the store's size and modification time (None from a manifest)."""
    uri: str
    size: int | None = None
    updated: float | None = None

    @property
    def updated_at(self) -> datetime.datetime | None:
        if self.updated is None:
            return None
        return datetime.datetime.fromtimestamp(self.updated, datetime.timezone.utc)


def _same_object(listed: Listed, row: dict[str, Any]) -> bool:
    """Same size and modification time, both known: the object did not change."""
    if listed.size is None or listed.updated is None:
        return False
    updated = row.get('source_updated')
    if row.get('source_size') != listed.size or updated is None:
        return False
    if isinstance(updated, datetime.datetime):
        if updated.tzinfo is None:
            updated = updated.replace(tzinfo=datetime.timezone.utc)
        updated = updated.timestamp()
    return abs(float(updated) - listed.updated) < 1e-3


def latest(rows: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The most recent of a URI's earlier rows (labels and errors together)."""
    best = None
    for row in rows:
        if best is None or _when(row) > _when(best):
            best = row
    return best


def _when(row: dict[str, Any]) -> float:
    t = row.get('processed_at')
    if isinstance(t, datetime.datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=datetime.timezone.utc)
        return t.timestamp()
    return float('-inf') if t is None else float(t)


def index_row(row: dict[str, Any]) -> dict[str, Any]:
    """What `decide` needs of an earlier labels or errors row: INDEX_COLUMNS (None where
    an older file lacks one, so such a row is read again rather than failing the run)
    and how many labels it kept."""
    out = {c: row.get(c) for c in INDEX_COLUMNS}
    labels = row.get('labels')
    out['label_count'] = None if labels is None else len(labels)
    return out


def decide(listed: Listed, previous: dict[str, Any] | None, *, model_id: str, top_k: int,
           retry_errors: bool = False) -> Decision:
    """What to do with a listed object, given its latest earlier row (see the module doc)."""
    if previous is None or previous.get('model_id') != model_id:
        return Decision.READ
    error = previous.get('error')
    if error is None:
        enough = (previous.get('label_count') or 0) >= top_k
        return Decision.SKIP if enough and _same_object(listed, previous) else Decision.READ
    if error in TRANSIENT_ERRORS:
        return Decision.RETRY
    if retry_errors or not _same_object(listed, previous):
        return Decision.READ
    return Decision.SKIP


def source_columns(listed: Listed | None) -> dict[str, Any]:
    """A row's `source_size` and `source_updated`: its object's size and time as listed
    (null unless the run listed them), which the next run skips unchanged objects on.

    The listing travels with each image (`ImageBytes.source` and onwards) to its row or
    its error row, so no join has to move rows, embeddings and all, to meet it.
    """
    if listed is None:
        return {'source_size': None, 'source_updated': None}
    return {'source_size': listed.size, 'source_updated': listed.updated_at}


def reused_row(previous: dict[str, Any], uri: str, *, run_id: str, model: str,
               processed_at: datetime.datetime, top_k: int) -> dict[str, Any]:
    """An earlier label row of the same content, copied under a new URI and run, its
    labels cut to this run's `top_k` (`reusable` says whether it has that many). The same
    model_id may have been run under another file name: the row names this run's."""
    return dict(previous, uri=uri, run_id=run_id, model=model, processed_at=processed_at,
                labels=list(previous['labels'])[:top_k])


def reusable(previous: dict[str, Any] | None, top_k: int) -> bool:
    """An earlier row can stand for this run's if it holds at least this run's top-k
    (`--top_k` is not in model_id: it changes how many labels a row keeps, not them)."""
    return previous is not None and len(previous['labels']) >= top_k


# --- the transforms -------------------------------------------------------------------

class SkipUnchanged(beam.PTransform):
    """Listed -> Listed to read (main), with SKIP counted and RETRY counted then read.

    `previous` holds the earlier rows (labels and errors, as `index_row`) of the output.
    """

    def __init__(self, previous: beam.PCollection, *, model_id: str, top_k: int,
                 retry_errors: bool):
        super().__init__()
        self._previous = previous
        self._model_id = model_id
        self._top_k = top_k
        self._retry_errors = retry_errors

    def expand(self, listed):
        model_id, top_k, retry_errors = self._model_id, self._top_k, self._retry_errors
        skipped = metrics.counter(metrics.SKIPPED)
        retried = metrics.counter(metrics.RETRIED)

        def choose(joined):
            _, groups = joined
            earlier = latest(groups['previous'])  # one per URI, whatever the listing holds
            for item in groups['listed']:
                decision = decide(item, earlier, model_id=model_id, top_k=top_k,
                                  retry_errors=retry_errors)
                if decision is Decision.SKIP:
                    skipped.inc()
                    continue
                if decision is Decision.RETRY:
                    retried.inc()
                yield item

        return ({'listed': listed | 'KeyListedByUri' >> beam.Map(lambda x: (x.uri, x)),
                 'previous': self._previous | 'KeyEarlierByUri' >> beam.Map(
                     lambda r: (r['uri'], r))}
                | 'JoinOnUri' >> beam.CoGroupByKey()
                | 'SkipOrRead' >> beam.FlatMap(choose))


class ReuseByContent(beam.PTransform):
    """ImageBytes -> ImageBytes still to label (main) and copied label rows (`reused`)."""

    def __init__(self, previous_labels: beam.PCollection, *, model_id: str, model: str,
                 run_id: str, top_k: int):
        super().__init__()
        self._previous = previous_labels
        self._model_id = model_id
        self._model = model
        self._run_id = run_id
        self._top_k = top_k

    def expand(self, images):
        model_id, model, run_id, top_k = self._model_id, self._model, self._run_id, self._top_k
        reused = metrics.counter(metrics.REUSED)

        def split(joined):
            _, groups = joined
            earlier = next(iter(groups['previous']), None)
            for image in groups['images']:
                if not reusable(earlier, top_k):
                    yield image
                else:
                    reused.inc()
                    yield beam.pvalue.TaggedOutput('reused', dict(reused_row(
                        earlier, image.uri, run_id=run_id, model=model,
                        processed_at=datetime.datetime.now(datetime.timezone.utc),
                        top_k=top_k), **source_columns(image.source)))

        same_model = (self._previous
                      | 'SameModelOnly' >> beam.Filter(  # and hashed (an older file may not be)
                          lambda r: r.get('model_id') == model_id and r.get('content_sha256'))
                      | 'KeyEarlierByHash' >> beam.Map(lambda r: (r['content_sha256'], r))
                      | 'OnePerHash' >> beam.combiners.Top.LargestPerKey(1, key=_when)
                      | 'Unwrap' >> beam.MapTuple(lambda k, rows: (k, rows[0])))
        return ({'images': images | 'KeyImagesByHash' >> beam.Map(
                    lambda i: (i.content_sha256, i)),
                 'previous': same_model}
                | 'JoinOnContent' >> beam.CoGroupByKey()
                | 'ReuseOrLabel' >> beam.FlatMap(split).with_outputs('reused', main='images'))


class ReadEarlier(beam.PTransform):
    """Rows of earlier runs' Parquet files (a listed set; none on a first run), whole:
    an older file may lack a column a `columns=` list would name, and fail the read."""

    def __init__(self, files: list[str]):
        super().__init__()
        self._files = files

    def expand(self, pbegin):
        from apache_beam.io.parquetio import ReadAllFromParquet
        return (pbegin | 'Files' >> beam.Create(self._files)
                | 'Read' >> ReadAllFromParquet())


__all__ = ['Decision', 'Listed', 'ReadEarlier', 'ReuseByContent', 'SkipUnchanged',
           'TRANSIENT_ERRORS', 'decide', 'index_row', 'latest', 'reused_row', 'source_columns']
