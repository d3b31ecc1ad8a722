"""Postprocess stage: model scores -> output rows (top-k labels + embedding).

The math is pure numpy (`top_k`); the DoFns only attach the run's metadata and
report progress.
"""
from __future__ import annotations

import datetime
import logging
import time
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import PredictionResult

from transforms.errors import Failure
from transforms.incremental import source_columns
from transforms import metrics

_log = logging.getLogger('imagelabel.progress')


def top_k(probabilities: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, scores) of the k highest scores, best first; ties go to the lower index."""
    probabilities = np.asarray(probabilities)
    n = probabilities.shape[-1]
    if not 1 <= k <= n:
        raise ValueError(f'k must be between 1 and {n}, got {k}')
    candidates = np.argpartition(-probabilities, k - 1)[:k] if k < n else np.arange(n)
    # argpartition may pick any of several tied values at the boundary: widen to all ties.
    if k < n:
        threshold = probabilities[candidates].min()
        candidates = np.flatnonzero(probabilities >= threshold)
    order = np.lexsort((candidates, -probabilities[candidates]))[:k]
    indices = candidates[order]
    return indices.astype(np.int32), probabilities[indices].astype(np.float32)


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def label_row(result: PredictionResult, *, k: int, labels: list[str], model: str,
              run_id: str) -> dict[str, Any]:
    """One row of the labels table (see transforms.schema.LABELS_SCHEMA)."""
    info, scores = result.example, result.inference
    indices, values = top_k(scores.probabilities, k)
    return {
        'uri': info.uri,
        'labels': [{'index': int(i), 'label': labels[i], 'score': float(s)}
                   for i, s in zip(indices, values)],
        'top_label': labels[indices[0]],
        'embedding': np.asarray(scores.embedding, np.float32),
        'model': model,
        'model_id': result.model_id,
        'content_sha256': info.content_sha256,
        'width': info.width,
        'height': info.height,
        'run_id': run_id,
        'processed_at': utc_now(),
        **source_columns(info.source),
    }


#: The longest message an errors row keeps (a TensorFlow error can run to kilobytes).
MAX_MESSAGE = 1000


def one_line(message: str) -> str:
    """A reason on one line: the message's non-blank lines joined by ' / ', cut to
    MAX_MESSAGE characters (model errors from TFLite and TensorFlow span many lines)."""
    text = ' / '.join(line.strip() for line in message.splitlines() if line.strip())
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 1] + '…'


def error_row(failure: Failure, *, model_id: str, run_id: str) -> dict[str, Any]:
    """One row of the errors table (see transforms.schema.ERRORS_SCHEMA)."""
    return {
        'uri': failure.uri,
        'stage': failure.stage,
        'error': failure.error,
        'message': one_line(failure.message),
        'content_sha256': failure.content_sha256,
        'model_id': model_id,
        'run_id': run_id,
        'processed_at': utc_now(),
        **source_columns(failure.source),
    }


class _LabelRowDoFn(beam.DoFn):
    def __init__(self, *, k: int, labels: list[str], model: str, run_id: str,
                 progress_every_s: float | None):
        self._k, self._labels, self._model, self._run_id = k, labels, model, run_id
        self._every = progress_every_s
        self._labeled = metrics.counter(metrics.LABELED)

    def setup(self):
        self._count = 0
        self._start = self._last = time.monotonic()

    def process(self, result: PredictionResult):
        self._labeled.inc()
        yield label_row(result, k=self._k, labels=self._labels, model=self._model,
                        run_id=self._run_id)
        self._count += 1
        now = time.monotonic()
        if self._every is not None and now - self._last >= self._every:
            self._last = now
            _log.info('labeled %d images so far (%.1f images/s)', self._count,
                      self._count / max(now - self._start, 1e-9))


class ToLabelRows(beam.PTransform):
    """PredictionResult -> labels-table row dicts."""

    def __init__(self, *, k: int, labels: list[str], model: str, run_id: str,
                 progress_every_s: float | None = None):
        super().__init__()
        self._dofn = _LabelRowDoFn(k=k, labels=labels, model=model, run_id=run_id,
                                   progress_every_s=progress_every_s)

    def expand(self, results):
        return results | 'TopKAndEmbedding' >> beam.ParDo(self._dofn)


class ToErrorRows(beam.PTransform):
    """Failure -> errors-table row dicts, counted by stage and class."""

    def __init__(self, *, model_id: str, run_id: str):
        super().__init__()
        self._model_id, self._run_id = model_id, run_id

    def expand(self, failures):
        model_id, run_id = self._model_id, self._run_id

        def to_row(failure: Failure) -> dict[str, Any]:
            metrics.counter(metrics.ERRORS).inc()
            metrics.error_class_counter(failure.stage, failure.error).inc()
            return error_row(failure, model_id=model_id, run_id=run_id)

        return failures | 'ErrorRow' >> beam.Map(to_row)
