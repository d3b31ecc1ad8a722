"""--float_runtime litert: a model converted once to a float32 .tflite, run on LiteRT.

Why: TensorFlow is not the fastest float32 engine on every CPU, and it is the
slowest part of a start. On AMD EPYC Zen 3 (AVX2 only, 2 vCPUs), `imagelabel run`
labeled with a random-weight Inception-v3 at 15.4 images/s on LiteRT (XNNPACK)
against 11.8 on TensorFlow, end to end (README, Precision), and a process that
loads a cached .tflite imports neither TensorFlow nor Keras: those two took
4.35 s of a 6.3 s start on that machine.

The conversion is int8's without the quantization. For a Keras model
(`int8.backbone_and_head`) the backbone (pixels -> embedding) becomes the .tflite
and the final Dense runs in float32 beside it (`key.head.npz`), so the rows'
embedding is the same layer as TensorFlow's. A SavedModel keeps its outputs, and
the classifier's input is exposed as the embedding (`litert.expose_penultimate`),
as int8 does. It is checked against TensorFlow on a held-out slice of the
run's own images before it is cached (`key.agreement.json` keeps the result), so
a conversion that changes the answers is refused, never stored.

The cache key is computed from the model's name and file digest without loading
it: a run that finds its conversion in --model_cache never imports TensorFlow.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json


from transforms.models import int8, model_cache
from transforms.models.files import file_fingerprint
from transforms.models.model_cache import CachedModel, package_version
from transforms.models.spec import ModelSpec

#: --float_runtime: what runs a float32 Keras model.
RUNTIMES = ('tensorflow', 'litert')
#: The format workers load a conversion with (transforms.models.formats).
FORMAT = 'float_tflite'
#: The formats that convert (the ones TensorFlow runs).
CONVERTS = ('keras', 'keras_application', 'saved_model')
#: How conversions are made; a change that makes different files bumps it (cache key).
CONVERSION_VERSION = 1
#: 2: a SavedModel's file records TensorFlow's output kind (litert.Scoring); only those
#: entries are made again.
SAVED_MODEL_VERSION = 2
#: Agreement's label for this runtime against TensorFlow's float32.
LABEL = 'float32-litert'


def source_id(spec: ModelSpec) -> str:
    """What names the model's weights, read without loading it (so without TensorFlow).

    A file's SHA-256 (a SavedModel folder's: every file with its name); for a Keras
    application with ImageNet weights, its name and the Keras version (Keras checks
    the downloaded weights against a fixed hash).
    """
    if spec.format in ('keras', 'saved_model'):
        return file_fingerprint(spec.path)
    if spec.format == 'keras_application':
        if spec.weights:  # read in place, gs:// too: nothing is copied to name it
            return file_fingerprint(spec.weights)
        return f'{spec.application}:imagenet:keras-{package_version("keras") or "unknown"}'
    raise ValueError(f'--float_runtime litert converts {", ".join(CONVERTS)} models, not '
                     f'{spec.format}')


def cache_key(spec: ModelSpec) -> str:
    """(model, input size, preprocessing, embedding layer, outputs, versions) -> a file-name-safe
    key.

    The versions are those of everything that makes or runs the file: TensorFlow's
    converter, Keras's export, and LiteRT.
    """
    model = repr((source_id(spec), spec.format, spec.application, spec.preprocess,
                  spec.embedding_layer, spec.input_size, spec.outputs))
    runtime = '|'.join(f'{p}-{package_version(p) or "unknown"}'
                       for p in ('tensorflow', 'keras', 'ai-edge-litert'))
    version = SAVED_MODEL_VERSION if spec.format == 'saved_model' else CONVERSION_VERSION
    h = hashlib.sha256(f'{model}|{runtime}|{version}'.encode()).hexdigest()
    return f'{spec.name.replace("/", "_")}-float32-litert-{h[:20]}'


def files_at(cache: str, key: str) -> CachedModel:
    """A conversion's files in a folder: `key.tflite`, and `key.head.npz` for a Keras model."""
    return CachedModel.at(cache, key, '.tflite')


AGREEMENT = '.agreement.json'


def agreement_beside(files: CachedModel) -> str:
    """The agreement measured when the conversion was made (`key.agreement.json`)."""
    return files.beside(AGREEMENT)


def convert(spec: ModelSpec, runtime, input_size: tuple[int, int]) -> tuple[bytes, bytes]:
    """A loaded TensorFlow runtime's model -> (float32 .tflite bytes, float head .npz or b'')."""
    if spec.format == 'saved_model':
        return convert_saved_model(spec, runtime.output_kind), b''
    return convert_keras(runtime.keras_model, spec, input_size, runtime.output_kind)


def convert_saved_model(spec: ModelSpec, output_kind: str) -> bytes:
    """A SavedModel's serving_default -> float32 .tflite bytes, its classifier input exposed.

    The file records `output_kind`, TensorFlow's (litert.Scoring): with --model_outputs
    auto, TensorFlow decides on a probe and the runtime would otherwise decide on the
    graph, and the two can differ (a model that normalises without a softmax op).
    """
    from transforms.models.litert import Scoring, expose_penultimate, with_scoring
    with int8.saved_model_converter(spec) as converter:
        content = expose_penultimate(converter.convert()).content
    return with_scoring(content, Scoring(output_kind))


def convert_keras(model, spec: ModelSpec, input_size: tuple[int, int], output_kind: str
                  ) -> tuple[bytes, bytes]:
    """A Keras classifier -> (float32 .tflite bytes of its backbone, float head .npz bytes)."""
    backbone, head = int8.backbone_and_head(model, spec, output_kind,
                                            flag='--float_runtime litert')
    return int8.convert_backbone(backbone, input_size, lambda c: c.convert()), head


def converted_spec(spec: ModelSpec, files: CachedModel) -> ModelSpec:
    """The spec workers load: the cached file, with the model's labels, preprocessing and
    --model_outputs (a SavedModel's file keeps its outputs, so an explicit one must reach
    the runtime; a Keras conversion's float32 head has its softmaxes already)."""
    return dataclasses.replace(spec, format=FORMAT, path=files.model, application=None,
                               weights=None)


def store(files: CachedModel, content: bytes, head: bytes, agreement: dict | None = None
          ) -> None:
    """Head and agreement first, then the .tflite, and the entry's record last."""
    model_cache.store(files, content, {
        files.head: head,
        agreement_beside(files): json.dumps(agreement).encode() if agreement else b''})


_AGREEMENT_FIELDS = ('precision', 'images', 'top1', 'top5_overlap', 'max_prob_diff')


def read_agreement(files: CachedModel) -> dict | None:
    """The agreement stored with a cached conversion (None if its record names none),
    checked against the record: a lost file must not skip the gate."""
    path = agreement_beside(files)
    raw = model_cache.read_beside(files, AGREEMENT)
    if raw is None:
        return None
    try:
        stored = json.loads(raw)
        return {k: stored[k] for k in _AGREEMENT_FIELDS}
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f'{path} is not an agreement record ({type(e).__name__}: {e}); delete '
                         f'it and {files.model} to convert again') from e
