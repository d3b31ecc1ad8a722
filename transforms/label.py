"""Label stage: decoded images -> model scores, through Beam's RunInference.

`ImageModelHandler` is shaped like Beam's own handlers (tensorflow_inference.py):
the model is loaded once per worker process by RunInference's shared-model
machinery and shared by the process's threads (or, with `share_model`, once per
machine and shared by all its SDK processes through Beam's multi_process_shared);
batching is Beam's BatchElements at a fixed size. What Beam does not do is ours:
a batch that raises is retried image by image, so only the guilty image becomes
an error row.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import threading
import time
from typing import Any, Iterable, Mapping, Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from transforms.decode import DecodedImage
from transforms.errors import Failure
from transforms.incremental import Listed
from transforms.head import Head, check_head_fits, head_model_id, load_head
from transforms.models import ModelSpec, Runtime, Scores, load_labels, load_runtime
from transforms.models.runtime import Pixels
from transforms import metrics
from transforms.errors import ERRORS_TAG

_log = logging.getLogger('imagelabel.label')


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """What the output row needs about an image, without its pixels."""
    uri: str
    content_sha256: str
    width: int
    height: int
    source: Listed | None = None  # as listed, on incremental runs (ImageBytes.source)


@dataclasses.dataclass
class ImageScores:
    """One image's outputs: probabilities over the label set, and its embedding."""
    probabilities: np.ndarray
    embedding: np.ndarray


@dataclasses.dataclass
class LoadedModel:
    """A runtime plus the label set it reports in (background class dropped).

    With a head, the labels are the head's classes and its probabilities replace
    the base model's, computed from the embedding of the same forward pass.
    """
    runtime: Runtime
    labels: list[str]
    model_id: str
    drop_background: bool
    head: Optional[Head] = None

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def get_model_id(self) -> str:
        """model_id as a method: a model shared across processes is reached through a
        multiprocessing proxy, which forwards method calls but not attribute reads."""
        return self.model_id

    def predict(self, pixels: Pixels) -> Scores:
        scores = self.runtime.predict(pixels)
        if self.head is not None:
            return Scores(self.head.predict(scores.embeddings), scores.embeddings)
        if self.drop_background:
            return Scores(scores.probabilities[:, 1:], scores.embeddings)
        return scores


def model_fingerprint(weights_sha256: str, **settings: Any) -> str:
    """Weights hash plus every setting that changes outputs: equal ids, equal outputs."""
    tail = hashlib.sha256(repr(sorted(settings.items())).encode()).hexdigest()[:8]
    return f'{weights_sha256[:16]}-{tail}'


def load_labeled_model(spec: ModelSpec, *, batch_size: int, precision: str,
                       threads: Optional[int], recipe: str,
                       head: Optional[str] = None,
                       interpreters: Optional[int] = None) -> LoadedModel:
    """Load the model and check it against its label set; ValueError if they disagree.

    `head`: a head file from `imagelabel train-head`; refused (ValueError) unless it
    learned from this very model (same model_id and embedding width).
    """
    labels = load_labels(spec.labels)
    runtime = load_runtime(spec, batch_size=batch_size, precision=precision, threads=threads,
                           num_classes=len(labels), interpreters=interpreters)
    n = runtime.num_outputs
    # 1001 outputs with ImageNet's 1000 names: class 0 is "background" (TF-slim and the
    # quantized MobileNets). Any other mismatch is an error, never a silent shift.
    drop = n == len(labels) + 1 == 1001 and spec.labels is None
    if n != len(labels) and not drop:
        raise ValueError(f'{spec.name} has {n} outputs but the label set has {len(labels)} '
                         'names; pass --labels with one name per output')
    model_id = model_fingerprint(
        runtime.weights_sha256, size=runtime.input_size, preprocess=spec.preprocess,
        # The precision asked for, not the one this CPU ran: bf16 falls back to float32
        # where a CPU has no bf16 units, and every worker of a job (whatever its CPU
        # family) and its launcher must compute the same model_id.
        recipe=recipe, precision=precision, outputs=runtime.output_kind,
        drop_background=drop, labels=hashlib.sha256('\n'.join(labels).encode()).hexdigest())
    if head is None:
        return LoadedModel(runtime, labels, model_id, drop)
    loaded_head = load_head(head)
    check_head_fits(loaded_head, model_id=model_id, embedding_dim=runtime.embedding_dim,
                    model=spec.name)
    return LoadedModel(runtime, loaded_head.class_names,
                       head_model_id(model_id, loaded_head.sha256), drop, loaded_head)


#: Models loaded in this process, by everything that defines them. The launcher
#: loads a model to validate it, and on the DirectRunner the worker is this same
#: process: without the cache it loaded the model twice (~10 s for Inception-v3).
_LOADED: dict[tuple, LoadedModel] = {}
_LOADED_LOCK = threading.Lock()
#: How many times each key was really loaded in this process (tests count them).
LOADS: collections.Counter = collections.Counter()


def _stamp(path: str | None):
    """(size, mtime) of a model file: a file replaced in place is a new cache key."""
    if not path:
        return None
    try:
        from apache_beam.io.filesystems import FileSystems
        meta = FileSystems.match([path])[0].metadata_list
        return (meta[0].size_in_bytes, meta[0].last_updated_in_seconds) if meta else None
    except Exception:  # noqa: BLE001 - no stamp: the spec alone is the key
        return None


def shared_labeled_model(spec: ModelSpec, *, batch_size: int, precision: str,
                         threads: Optional[int], recipe: str,
                         head: Optional[str] = None,
                         interpreters: Optional[int] = None) -> LoadedModel:
    """load_labeled_model, once per process for the same model and settings."""
    key = (spec, _stamp(spec.path), _stamp(spec.weights), _stamp(spec.labels), batch_size,
           precision, threads, recipe, head, _stamp(head), interpreters)
    with _LOADED_LOCK:  # one load at a time: a second caller waits for the first's model
        model = _LOADED.get(key)
        if model is None:
            model = load_labeled_model(spec, batch_size=batch_size, precision=precision,
                                       threads=threads, recipe=recipe, head=head,
                                       interpreters=interpreters)
            _LOADED[key] = model
            LOADS[key] += 1
        return model


def forget_loaded_models() -> None:
    """Drop this process's loaded models (tests; a long-lived process switching models)."""
    with _LOADED_LOCK:
        _LOADED.clear()


class ImageModelHandler(ModelHandler[DecodedImage, PredictionResult, LoadedModel]):
    """RunInference handler for image classifiers: uint8 batches in, scores out."""

    def __init__(self, spec: ModelSpec, *, batch_size: int = 32, precision: str = 'float32',
                 threads: Optional[int] = None, recipe: str = 'crop',
                 expected_model_id: Optional[str] = None, head: Optional[str] = None,
                 share_model: bool = False, model_copies: Optional[int] = None,
                 interpreters: Optional[int] = None):
        super().__init__()
        self._head = head
        # Beam's large_model / model_copies, answered by the two methods below.
        self._share_model = share_model or model_copies is not None
        self._copies = model_copies or 1
        self._spec = spec
        self._expected_model_id = expected_model_id
        self._batch_size = batch_size
        self._precision = precision
        self._threads = threads
        self._interpreters = interpreters
        self._recipe = recipe
        self._retried = metrics.counter(metrics.INFERENCE_BATCHES_RETRIED)
        self._batch_clock = metrics.distribution(metrics.BATCH_START_UNIX_MS)

    def load_model(self) -> LoadedModel:
        model = shared_labeled_model(self._spec, batch_size=self._batch_size,
                                     precision=self._precision, threads=self._threads,
                                     recipe=self._recipe, head=self._head,
                                     interpreters=self._interpreters)
        if self._expected_model_id and model.model_id != self._expected_model_id:
            # e.g. a gs:// model overwritten after launch: never mix two models' rows
            raise RuntimeError(f'worker loaded model_id {model.model_id}, but the job was '
                               f'launched with {self._expected_model_id}; did the model change?')
        _log.info('loaded %s (model_id %s)', model.runtime.description, model.model_id)
        return model

    def share_model_across_processes(self) -> bool:
        """True: one model per machine, served to every SDK process by the first one
        that loads it (Beam's multi_process_shared); False: one per process."""
        return self._share_model

    def model_copies(self) -> int:
        """How many shared copies a machine holds (only read when sharing)."""
        return self._copies

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        # A fixed batch size: the compiled model function has fixed shapes.
        return {'min_batch_size': self._batch_size, 'max_batch_size': self._batch_size}

    def run_inference(self, batch: Sequence[DecodedImage], model: LoadedModel,
                      inference_args: Optional[dict[str, Any]] = None
                      ) -> Iterable[PredictionResult]:
        # Its minimum over the job is the first batch's start: summary.json's start-up time.
        self._batch_clock.update(int(time.time() * 1000))
        infos = [ImageInfo(i.uri, i.content_sha256, i.width, i.height, i.source) for i in batch]
        try:
            scores = model.predict([i.pixels for i in batch])  # LiteRT never stacks them
            outputs: list[Any] = [_checked(image, p, e) for image, p, e in
                                  zip(batch, scores.probabilities, scores.embeddings)]
        except Exception as batch_error:  # noqa: BLE001 - find the guilty image
            self._retried.inc()
            _log.warning('batch of %d failed (%s); retrying image by image',
                         len(batch), batch_error)
            outputs = [self._one(model, image) for image in batch]
        model_id = model.get_model_id()
        return [PredictionResult(info, out, model_id) for info, out in zip(infos, outputs)]

    @staticmethod
    def _one(model: LoadedModel, image: DecodedImage):
        try:
            scores = model.predict(image.pixels[np.newaxis])
            return _checked(image, scores.probabilities[0], scores.embeddings[0])
        except Exception as e:  # noqa: BLE001 - becomes this image's error row
            return Failure(uri=image.uri, stage='inference', error='model_error',
                           message=f'{type(e).__name__}: {e}',
                           content_sha256=image.content_sha256, source=image.source)

    def get_num_bytes(self, batch: Sequence[DecodedImage]) -> int:
        return sum(i.pixels.nbytes for i in batch)

    def get_metrics_namespace(self) -> str:
        return metrics.NAMESPACE


def _checked(image: DecodedImage, probs: np.ndarray, emb: np.ndarray):
    """ImageScores, or a model_error Failure if the model produced NaN or infinity."""
    if np.isfinite(probs).all() and np.isfinite(emb).all():
        return ImageScores(probs, emb)
    return Failure(uri=image.uri, stage='inference', error='model_error',
                   message='the model produced NaN or infinite outputs for this image',
                   content_sha256=image.content_sha256, source=image.source)


def _failed_batch_rows(failed) -> Iterable[Failure]:
    """RunInference's dead letters are whole batches: expand to one row per image."""
    batch, error = failed
    message = error[1] if isinstance(error, tuple) and len(error) > 1 else str(error)
    for image in batch:
        yield Failure(uri=image.uri, stage='inference', error='model_error',
                      message=str(message), content_sha256=image.content_sha256,
                      source=image.source)


def _split(result: PredictionResult):
    if isinstance(result.inference, Failure):
        yield beam.pvalue.TaggedOutput(ERRORS_TAG, result.inference)
    else:
        yield result


class LabelImages(beam.PTransform):
    """DecodedImage -> PredictionResult(ImageInfo, ImageScores, model_id).

    Per-image model failures, and any batch RunInference itself gives up on,
    come out on the `errors` output as Failure rows.
    """

    def __init__(self, handler: ImageModelHandler):
        super().__init__()
        self._handler = handler

    def expand(self, decoded):
        results, dead = decoded | 'RunInference' >> RunInference(
            self._handler, metrics_namespace=metrics.NAMESPACE).with_exception_handling()
        split = results | 'SplitModelErrors' >> beam.FlatMap(_split).with_outputs(
            ERRORS_TAG, main='scores')
        failed_batches = dead.failed_inferences | 'ExpandFailedBatches' >> beam.FlatMap(
            _failed_batch_rows)
        errors = (split[ERRORS_TAG], failed_batches) | 'InferenceErrors' >> beam.Flatten()
        return {'scores': split.scores, ERRORS_TAG: errors}
