"""--precision int8: post-training full-integer quantization, and its runtime.

At launch, a Keras or SavedModel model is converted with TFLiteConverter, calibrated
on a seeded sample of the run's own images, and the result is stored in the model
cache (`--model_cache`) under a key made of (model, calibration set, runtime). A
scheduled run finds the file there and converts nothing; workers only ever load
the cached file (format `int8_tflite`).

Why LiteRT by default: it is a core dependency, and it passes issue 13's targets on
both CPU families measured (1.23x the float32 ceiling on AMD Zen 3, 3.1x on an Intel
Xeon with AMX). OpenVINO (`--int8_runtime openvino`, an extra) is faster on both
(bench/int8_runtimes.py; README "Precision by CPU"). The runtime is named in the
cache key, so switching runtimes never reuses a file made for the other.

For a Keras classifier whose top is Dense (+ softmax), only the backbone (pixels ->
embedding) is quantized; the Dense head runs in float32 on the dequantized
embedding. The head is ~0.1% of the FLOPs, and keeping it in float keeps the
probabilities smooth (an int8 softmax output has 256 levels, which ties the low
ranks of a top-5), and the embedding is the backbone's one output for free.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import logging
import tempfile
import types
from typing import Any, Callable, Sequence

import numpy as np

from transforms.models import model_cache
from transforms.models.interpreters import InterpreterPool, choose_layout, quantize
from transforms.models.float_head import FloatHead
from transforms.models.litert import (Scoring, ends_in_softmax, expose_penultimate,
                                      logits_instead_of_softmax, scoring_of, with_scoring)
from transforms.models.runtime import Pixels, Scores, one_image, pick_outputs, softmax
from transforms.models.model_cache import CachedModel, package_version, read_conversion
from transforms.models.spec import PREPROCESSORS, ModelSpec

_log = logging.getLogger('imagelabel.models')


@dataclasses.dataclass(frozen=True)
class Int8RuntimeInfo:
    """An int8 runtime: its cache files' suffix, the format workers load them with
    (transforms.models.formats), the package whose version keys the cache, the module
    that converts for it (`require()`, `convert_keras`, `convert_saved_model`), and the
    packages that convert (their versions key the cache too: a new converter may make
    another file)."""
    suffix: str
    format: str
    package: str
    converter: str
    converter_packages: tuple[str, ...] = ()

    def converter_module(self) -> types.ModuleType:
        return importlib.import_module(self.converter)


#: The int8 runtimes (--int8_runtime).
RUNTIMES = {'litert': Int8RuntimeInfo('.tflite', 'int8_tflite', 'ai-edge-litert',
                                      'transforms.models.int8', ('tensorflow', 'keras')),
            'openvino': Int8RuntimeInfo('.ovz', 'int8_openvino', 'openvino',
                                        'transforms.models.openvino_int8',
                                        ('nncf', 'tensorflow', 'keras'))}
RUNTIME = 'litert'  # the default
#: How conversions are made; a change that makes different files bumps it (cache key).
#: 2: SavedModels keep their logits (not a quantized softmax) and gain an embedding.
CONVERSION_VERSION = 2
#: 4: a SavedModel's LiteRT file records how its scores are read (litert.Scoring), so that
#: they score as on TensorFlow whatever --model_outputs says. Only those files changed, so
#: only their cache entries are made again (`conversion_version`). (3 keyed 2f24684's files,
#: whose other marker `litert.scoring_of` does not read: they must not be found.)
SAVED_MODEL_LITERT_VERSION = 4


def conversion_version(spec: ModelSpec, runtime: str) -> int:
    """The CONVERSION_VERSION that keys a conversion of `spec` for `runtime` (a runtime_tag)."""
    if spec.format == 'saved_model' and runtime.split('-', 1)[0] == 'litert':
        return SAVED_MODEL_LITERT_VERSION
    return CONVERSION_VERSION


def runtime_tag(runtime: str = RUNTIME) -> str:
    """'litert-2.3.0': a new runtime version may convert differently, so it keys the cache."""
    found = package_version(RUNTIMES[runtime].package)
    return f'{runtime}-{found}' if found else runtime


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The images a conversion is calibrated on, and the digest that names them."""
    pixels: np.ndarray  # (n, h, w, 3) uint8 at the model's input size
    digest: str         # sha256 of the URIs, their contents, size and resize recipe


def cache_key(*, weights_sha256: str, spec: ModelSpec, input_size: tuple[int, int],
              calibration_source: str, runtime: str) -> str:
    """(model, where the calibration set is drawn from, runtime) -> a file-name-safe key.

    The source, not the sampled images: a nightly run over a growing --input draws
    another sample each night, and a key on it would convert again each night, with a
    new model_id that makes --skip_existing label everything again."""
    model = repr((weights_sha256, spec.format, spec.preprocess, spec.embedding_layer,
                  tuple(input_size), spec.outputs))
    converters = [f'{p}-{package_version(p)}'
                  for p in RUNTIMES[runtime.split('-', 1)[0]].converter_packages]
    h = hashlib.sha256(
        f'{model}|{calibration_source}|{runtime}|{conversion_version(spec, runtime)}|'
        f'{converters}'.encode()).hexdigest()
    return f'{spec.name.replace("/", "_")}-int8-{runtime}-{h[:20]}'


# --- conversion (launcher only; imports TensorFlow) ------------------------------------

def _dense_head(model, embedding) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """(W, b, ends in softmax) of a final Dense fed by the embedding, else None.

    The Dense is linear or softmax, and only a softmax (a Softmax layer, or an
    Activation that is softmax or linear) may follow it.
    """
    import keras

    from transforms.models.keras_graph import classifier_top
    top = classifier_top(model, embedding)
    if top is None:
        return None
    dense, rest = top
    activations = [getattr(dense.activation, '__name__', '')] + [
        'softmax' if isinstance(layer, keras.layers.Softmax)
        else getattr(layer.activation, '__name__', '') for layer in rest]
    if any(a not in ('softmax', 'linear') for a in activations) or activations.count('softmax') > 1:
        return None
    kernel, bias = (np.asarray(w, np.float32) for w in dense.get_weights())
    return kernel, bias, 'softmax' in activations


def _representative(pixels: np.ndarray, preprocess, dtype=np.float32):
    def gen():
        for image in pixels:
            yield [np.asarray(preprocess(image[np.newaxis].astype(np.float32)), dtype)]
    return gen


def _quantize(converter, pixels: np.ndarray, preprocess, dtype=np.float32) -> bytes:
    import tensorflow as tf
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(pixels, preprocess, dtype)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    return converter.convert()


def backbone_and_head(model, spec: ModelSpec, output_kind: str,
                      flag: str = '--precision int8') -> tuple[Any, bytes]:
    """(Keras model up to the embedding, its FloatHead's bytes) of a Keras classifier.

    Both int8 runtimes quantize only the backbone: the final Dense and softmax run in
    float32 on the embedding, so probabilities are not rounded to int8's 256 steps.
    (--float_runtime litert converts the same backbone without quantizing it.)
    `output_kind`: the float32 runtime's (logits or probabilities), so that the head
    scores as TensorFlow does (transforms.models.float_head).
    """
    import keras

    from transforms.models.keras_graph import embedding_output
    embedding = embedding_output(model, spec)
    dense = _dense_head(model, embedding)
    if dense is None:
        raise ValueError(f'{spec.name}: {flag} needs a final Dense classifier (softmax or '
                         'linear) fed by the embedding; run it on TensorFlow at float32')
    kernel, bias, model_softmax = dense
    head = FloatHead.of_dense(kernel, bias, model_softmax=model_softmax, output_kind=output_kind)
    return keras.Model(model.inputs, embedding), head.to_bytes()


def convert_keras(model, spec: ModelSpec, calibration: Calibration, output_kind: str,
                  preprocess: str) -> tuple[bytes, bytes]:
    """A Keras classifier -> (int8 .tflite bytes, float head .npz bytes); `output_kind` and
    `preprocess` as the float32 runtime resolved them."""
    backbone, head = backbone_and_head(model, spec, output_kind)
    preprocess = PREPROCESSORS[preprocess]
    content = convert_backbone(backbone, calibration.pixels.shape[1:3],
                               lambda c: _quantize(c, calibration.pixels, preprocess))
    return content, head


def convert_backbone(backbone, size: tuple[int, int], finish: Callable[[Any], bytes]) -> bytes:
    """A Keras backbone -> .tflite bytes: `finish(converter)` converts (quantizing or not).

    Keras 3's path to TFLite: export a SavedModel (variables frozen by the converter).
    """
    import tensorflow as tf
    h, w = size
    with tempfile.TemporaryDirectory(prefix='imagelabel-convert-') as folder:
        backbone.export(folder, format='tf_saved_model', verbose=False,
                        input_signature=[tf.TensorSpec((1, h, w, 3), tf.float32)])
        return finish(tf.lite.TFLiteConverter.from_saved_model(folder))


@contextlib.contextmanager
def saved_model_converter(spec: ModelSpec):
    """TFLite's converter for a SavedModel's serving_default signature, on a local copy
    of a gs:// folder (through FileSystems: its emulator, retries and credentials) while
    the block runs."""
    import tensorflow as tf

    from transforms.models.files import localized
    with localized(spec.path) as local:
        yield tf.lite.TFLiteConverter.from_saved_model(local, signature_keys=['serving_default'])


def convert_saved_model(spec: ModelSpec, runtime, calibration: Calibration
                        ) -> tuple[bytes, bytes]:
    """A loaded SavedModel's serving_default -> (int8 .tflite bytes, b'').

    Its outputs are kept, except that a final softmax hands over its logits (the
    runtime applies softmax in float32: see logits_instead_of_softmax), and the
    classifier's input is added as the embedding when the graph shows it. The file
    records how its scores are read (litert.Scoring): TensorFlow's output kind and
    whether the softmax moved.
    """
    dtype = runtime.input_dtype.as_numpy_dtype
    with saved_model_converter(spec) as converter:
        content = _quantize(converter, calibration.pixels, PREPROCESSORS[runtime.preprocess],
                            dtype)
    content, moved = logits_instead_of_softmax(expose_penultimate(content).content)
    return with_scoring(content, Scoring(runtime.output_kind, moved)), b''


def require() -> None:
    """LiteRT's converter comes with TensorFlow, and its runtime with the core install."""


def convert(spec: ModelSpec, runtime, calibration: Calibration,
            int8_runtime: str = 'litert') -> tuple[bytes, bytes]:
    """Convert a loaded float32 runtime's model for `int8_runtime` (its format says how)."""
    converter = RUNTIMES[int8_runtime].converter_module()
    if spec.format in ('keras', 'keras_application'):
        return converter.convert_keras(runtime.keras_model, spec, calibration,
                                       runtime.output_kind, runtime.preprocess)
    if spec.format == 'saved_model':
        return converter.convert_saved_model(spec, runtime, calibration)
    raise ValueError(f'{spec.format} models cannot be converted to int8')


def cached_files(cache: str, key: str, runtime: str = RUNTIME) -> CachedModel:
    """Where an int8 conversion for `runtime` lives in the cache (its model file and head)."""
    return CachedModel.at(cache, key, RUNTIMES[runtime].suffix)


#: Beside a conversion: the 'uri:content_sha256' of each image it was calibrated on.
CALIBRATION_LIST = '.calibration.json'


def store(files: CachedModel, content: bytes, head: bytes,
          calibration_names: Sequence[str] = ()) -> None:
    """Write a conversion to the cache; the model file last, so its presence means complete.

    The calibration set's names go with it, so that a later night's agreement check can
    leave those images out of its held-out slice (`calibration_names`). JSON, ASCII: a
    name may hold any character, a line break or a file name that is not UTF-8 included.
    """
    model_cache.store(files, content, {
        files.head: head,
        files.beside(CALIBRATION_LIST): json.dumps({'images': list(calibration_names)},
                                                   ensure_ascii=True).encode()})


def calibration_names(files: CachedModel) -> set[str]:
    """The images a cached conversion was calibrated on (empty: an entry from before
    they were recorded)."""
    raw = model_cache.read_beside(files, CALIBRATION_LIST)
    return set(json.loads(raw)['images']) if raw else set()


# --- the runtimes (workers; no TensorFlow) ------------------------------------------------

def int8_scores(head: FloatHead | None, softmaxes: int, embeddings: np.ndarray,
                raw: np.ndarray | None) -> Scores:
    """A batch's Scores from either int8 runtime: through the float32 head when the
    conversion kept one, else the model's own scores passed through softmax `softmaxes`
    times (`file_softmaxes`)."""
    if head is not None:
        return Scores(head.scores(embeddings), embeddings)
    for _ in range(softmaxes):
        raw = softmax(raw)
    return Scores(raw, embeddings)


def file_softmaxes(output_kind: str, moved: bool) -> int:
    """How many softmaxes a converted file's scores need to score as TensorFlow does.

    TensorFlow passes the model's output through softmax when the run takes it as
    logits (`output_kind`, as resolved by the float32 runtime or given by
    --model_outputs). A file whose final softmax was moved out (`moved`) emits that
    softmax's logits, so it owes one more: a softmax model taken as logits gets two,
    as it does on TensorFlow.
    """
    if output_kind not in ('logits', 'probabilities'):
        raise ValueError(f'output_kind {output_kind!r}: logits or probabilities')
    return int(moved) + int(output_kind == 'logits')


def int8_description(name: str, engine: str, runtime) -> str:
    """The one-line description both int8 runtimes (and LiteRT's float32 conversions) give
    (`engine`: what runs it)."""
    h, w = runtime.input_size
    return (f'{name}: {runtime.precision} on {engine}, input {h}x{w}, {runtime.num_outputs} '
            f'{runtime.output_kind}, embedding {runtime.embedding_dim}-d'
            + (', float32 head' if runtime.has_head else '') + f'; {runtime.layout}')


class Int8Runtime:
    """A cached int8 conversion on LiteRT, plus its float32 head when it has one.

    One image per invoke, like TFLiteRuntime (XNNPACK runs batch 1 at full speed),
    spread over an InterpreterPool (transforms.models.interpreters). A float32
    conversion (--float_runtime litert, models.float_litert) has the same files
    and runs here too, with `precision='float32'`: quantize() leaves float inputs be.
    """

    def __init__(self, spec: ModelSpec, *, threads: int | None = None, num_classes: int = 1000,
                 interpreters: int | None = None, precision: str = 'int8'):
        content, self._head, sha256 = read_conversion(spec.path, RUNTIMES['litert'].suffix)
        self.layout = choose_layout(interpreters, threads)
        try:
            self._pool = InterpreterPool(content, self.layout)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f'{spec.path} is not a loadable {precision} conversion: {e}') from e
        (self._in,) = self._pool.first.get_input_details()
        outs = self._pool.first.get_output_details()
        self.weights_sha256 = sha256
        if self._head is not None:
            self._scores, self._emb = None, outs[0]
            self.num_outputs = self._head.num_outputs
        else:
            widths = {i: int(o['shape'][-1]) for i, o in enumerate(outs) if len(o['shape']) == 2}
            picked = pick_outputs(widths, num_classes)
            if picked is None:
                raise ValueError(f'{spec.name}: cannot tell which int8 output holds the scores '
                                 f'(widths {list(widths.values())})')
            self._scores = outs[picked[0]]
            self._emb = outs[picked[1]] if picked[1] is not None else None
            self.num_outputs = widths[picked[0]]
        self.embedding_dim = int(np.prod(self._emb['shape'][1:])) if self._emb else 0
        # A float32 conversion of an integer-input SavedModel keeps its uint8 input: raw pixels.
        self._preprocess = PREPROCESSORS[spec.preprocess or (
            'raw' if self._in['dtype'] == np.uint8 else 'inception')]
        self.name = spec.name
        self.precision = precision
        self.input_size = (int(self._in['shape'][1]), int(self._in['shape'][2]))
        # What the run takes the model's outputs for: an explicit --model_outputs (or the
        # kind the launcher resolved), else what the conversion recorded TensorFlow
        # resolving, else what the graph shows. A Keras conversion's float32 head counts
        # its own softmaxes.
        if self._head is not None:
            self.output_kind, moved = 'logits', False
        else:
            scoring = scoring_of(content)
            moved = scoring.softmax_moved and picked[0] == 0  # it names the first output
            self.output_kind = (
                spec.outputs if spec.outputs in ('logits', 'probabilities')
                else scoring.outputs or ('probabilities' if moved or ends_in_softmax(content)
                                         else 'logits'))
        self._softmaxes = file_softmaxes(self.output_kind, moved)
        self.has_head = self._head is not None
        self.description = int8_description(spec.name, RUNTIME, self)

    def predict(self, pixels: Pixels) -> Scores:
        def model_input(i: int) -> np.ndarray:
            x = self._preprocess(one_image(pixels, i).astype(np.float32))
            return quantize(np.asarray(x, np.float32), self._in)

        scores = self._scores if self._head is None else None  # a head scores the embedding
        got = self._pool.invoke_each(len(pixels), model_input, self._in,
                                     [d for d in (self._emb, scores) if d])
        emb = got.pop(0) if self._emb else np.empty((len(pixels), 0), np.float32)
        raw = got.pop(0) if scores else None
        return int8_scores(self._head, self._softmaxes, emb, raw)
