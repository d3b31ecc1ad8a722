"""The whole data flow, top to bottom.

    ListImages -> ReadImages -> DecodeImages -> LabelImages -> ToLabelRows --+--> each sink
        |             |             |              |                          |   (Parquet,
        +-------------+-------------+--------------+--> ToErrorRows ----------+    BigQuery)

Every stage has a main output and an `errors` output of `Failure`s; the errors of
all stages are flattened into one table, so each input URI ends as exactly one
labels row or exactly one errors row. Every sink gets the same two tables of
common rows and converts them itself.
"""
from __future__ import annotations

import dataclasses

import apache_beam as beam

from pipeline.options import Settings
from transforms.decode import DecodeImages
from transforms.label import ImageModelHandler, LabelImages
from transforms.models import ModelSpec
from transforms.models.formats import batch_size_for
from transforms.postprocess import ToErrorRows, ToLabelRows
from transforms.errors import ERRORS_TAG
from transforms.listing import ListImages
from transforms.read import ReadImages, RetryPolicy
from transforms.incremental import ReadEarlier, ReuseByContent, SkipUnchanged, index_row
from transforms.sinks import ERRORS, LABELS, Sink
from transforms.sinks.parquet import EarlierRuns


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """What the launcher learned by loading the model once, before the job starts."""
    spec: ModelSpec
    input_size: tuple[int, int]
    labels: list[str]
    model_id: str
    description: str
    precision_used: str = 'float32'   # the arithmetic really used (bf16 may fall back)
    agreement: dict | None = None     # reduced precision vs float32, measured at launch


def read_ahead(batch_size: int) -> int:
    """Images each of read and decode may hold ahead of the model (LookaheadDoFn).

    A batch's worth is enough: the bundle thread gathers the next batch between two model
    calls, so the images it takes were handed to the pool one batch earlier and had a
    whole model call to be ready. Up to 32, two batches, as always. Beyond, one: at batch
    256 (the .tflite default), quantized MobileNetV2 on 2 cores (AMD EPYC Zen 3) measured
    the same with 256 and 512 ahead (0.951 and 0.945 of the same-run bound, 3 alternating
    pairs), and its peak RSS was 371 MB against 436 (303 at batch 32).
    """
    return 2 * batch_size if batch_size <= 32 else max(batch_size, 64)


def build(p: beam.Pipeline, s: Settings, model: ModelFacts, sinks: list[Sink], *,
          earlier: EarlierRuns | None = None, progress_every_s: float | None = None,
          retry: RetryPolicy | None = None) -> None:
    """Add the labeling job to pipeline `p`; with `earlier`, an incremental run over it."""
    listing = p | 'ListImages' >> ListImages(s.input, with_stat=earlier is not None)
    listed = listing['uris']

    to_read, previous_labels = listed, None
    if earlier is not None:
        previous_labels = p | 'EarlierLabels' >> ReadEarlier(earlier.labels)
        previous_errors = p | 'EarlierErrors' >> ReadEarlier(earlier.errors)
        index = ((previous_labels | 'IndexLabels' >> beam.Map(index_row),
                  previous_errors | 'IndexErrors' >> beam.Map(index_row))
                 | 'EarlierIndex' >> beam.Flatten())
        to_read = listed | 'SkipUnchanged' >> SkipUnchanged(
            index, model_id=model.model_id, top_k=min(s.top_k, len(model.labels)),
            retry_errors=s.retry_errors)

    batch_size = batch_size_for(model.spec, s.batch_size)
    ahead = read_ahead(batch_size)
    read = to_read | 'ReadImages' >> ReadImages(
        max_bytes=s.max_bytes, retry=retry or RetryPolicy(attempts=s.read_retries),
        lookahead=ahead, max_inflight_bytes=s.max_inflight_bytes)

    images, reused = read.images, None
    if previous_labels is not None:
        fresh = images | 'ReuseByContent' >> ReuseByContent(
            previous_labels, model_id=model.model_id, model=model.spec.name, run_id=s.run_id,
            top_k=min(s.top_k, len(model.labels)))
        images, reused = fresh.images, fresh.reused

    decoded = images | 'DecodeImages' >> DecodeImages(
        model.input_size, recipe=s.resize, max_pixels=s.max_pixels,
        threads=s.decode_threads, lookahead=ahead,
        max_inflight_bytes=s.max_inflight_bytes)

    handler = ImageModelHandler(model.spec, batch_size=batch_size, precision=s.precision,
                                threads=s.model_threads, recipe=s.resize.value,
                                expected_model_id=model.model_id, head=s.head,
                                share_model=s.share_model, model_copies=s.model_copies,
                                interpreters=s.interpreters)
    labeled = decoded.decoded | 'LabelImages' >> LabelImages(handler)

    label_rows = labeled['scores'] | 'ToLabelRows' >> ToLabelRows(
        k=min(s.top_k, len(model.labels)), labels=model.labels, model=model.spec.name,
        run_id=s.run_id, progress_every_s=progress_every_s)

    error_rows = ((listing[ERRORS_TAG], read[ERRORS_TAG], decoded[ERRORS_TAG],
                   labeled[ERRORS_TAG])
                  | 'CollectErrors' >> beam.Flatten()
                  | 'ToErrorRows' >> ToErrorRows(model_id=model.model_id, run_id=s.run_id))

    if reused is not None:  # rows carry their object's size and time (source_columns)
        label_rows = (label_rows, reused) | 'LabeledAndReused' >> beam.Flatten()

    for sink in sinks:
        _ = {LABELS: label_rows, ERRORS: error_rows} | f'Write{type(sink).__name__}' >> sink

