"""The whole data flow, top to bottom.

    ListImages -> ReadImages -> DecodeImages -> LabelImages -> ToLabelRows --+--> each sink
                      |             |              |                          |   (Parquet,
                      +-------------+--------------+--> ToErrorRows ----------+    BigQuery)

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
from transforms.postprocess import ToErrorRows, ToLabelRows
from transforms.errors import ERRORS_TAG
from transforms.read import ListImages, ReadImages, RetryPolicy
from transforms.sinks import ERRORS, LABELS, Sink


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """What the launcher learned by loading the model once, before the job starts."""
    spec: ModelSpec
    input_size: tuple[int, int]
    labels: list[str]
    model_id: str
    description: str
    precision: str = 'float32'        # what workers load with (their handler's precision)
    precision_used: str = 'float32'   # the arithmetic really used (bf16 may fall back)
    agreement: dict | None = None     # reduced precision vs float32, measured at launch


def build(p: beam.Pipeline, s: Settings, model: ModelFacts, sinks: list[Sink], *,
          progress_every_s: float | None = None, retry: RetryPolicy | None = None) -> None:
    """Add the labeling job to pipeline `p`."""
    uris = p | 'ListImages' >> ListImages(s.input)

    read = uris | 'ReadImages' >> ReadImages(
        max_bytes=s.max_bytes, retry=retry or RetryPolicy(attempts=s.read_retries),
        lookahead=2 * s.batch_size)

    decoded = read.images | 'DecodeImages' >> DecodeImages(
        model.input_size, recipe=s.resize, max_pixels=s.max_pixels,
        threads=s.decode_threads, lookahead=2 * s.batch_size)

    handler = ImageModelHandler(model.spec, batch_size=s.batch_size, precision=model.precision,
                                threads=s.model_threads, recipe=s.resize.value,
                                expected_model_id=model.model_id)
    labeled = decoded.decoded | 'LabelImages' >> LabelImages(handler)

    label_rows = labeled['scores'] | 'ToLabelRows' >> ToLabelRows(
        k=s.top_k, labels=model.labels, model=model.spec.name, run_id=s.run_id,
        progress_every_s=progress_every_s)

    error_rows = ((read[ERRORS_TAG], decoded[ERRORS_TAG], labeled[ERRORS_TAG])
                  | 'CollectErrors' >> beam.Flatten()
                  | 'ToErrorRows' >> ToErrorRows(model_id=model.model_id, run_id=s.run_id))

    for sink in sinks:
        _ = {LABELS: label_rows, ERRORS: error_rows} | f'Write{type(sink).__name__}' >> sink
