"""int8 on OpenVINO: NNCF post-training quantization at launch, OpenVINO on the workers.

Why a second int8 runtime: it is the faster on both CPU families measured
(`bench/int8_runtimes.py`, 2 threads): on AMD Zen 3 (AVX2 only) OpenVINO's int8
Inception-v3 did 8.67 images per CPU-second against LiteRT's 4.83 and Keras
float32's 3.91; on an Intel Xeon with AMX (Emerald Rapids) 32.1 against 19.4 and
4.8. Chosen with `--int8_runtime openvino`; needs the `openvino` extra
(`pip install 'imagelabel[openvino]'`), which is why LiteRT stays the default.

A conversion is one cache file: the OpenVINO IR (`.xml` text and `.bin` weights)
in one `.npz`, so that the cache's write-then-rename keeps it whole. Keras models
keep their final Dense in float32 (the `.head.npz` beside it, as for LiteRT), so
probabilities are not rounded; a SavedModel keeps all its outputs (OpenVINO's int8
leaves softmax in float32).
"""
from __future__ import annotations

import io
import tempfile
import threading

import numpy as np

from transforms.models.int8 import (RUNTIMES, backbone_and_head, file_softmaxes,
                                    int8_description, int8_scores, runtime_tag)
from transforms.models.model_cache import read_conversion
from transforms.models.interpreters import choose_layout
from transforms.models.runtime import Pixels, Scores, one_image, pick_outputs
from transforms.models.spec import PREPROCESSORS, ModelSpec

INSTALL_HINT = "pip install 'imagelabel[openvino]' (the openvino and nncf packages)"


def require(*, to_convert: bool = True) -> None:
    """ValueError with the install line if OpenVINO (and, to convert, NNCF) is missing.

    Workers only run the converted model: they need openvino, not NNCF, whose
    import costs about 0.5 s more per worker process.
    """
    try:
        import openvino  # noqa: F401
        if to_convert:
            import nncf  # noqa: F401
    except ImportError as e:
        raise ValueError(f'--int8_runtime openvino needs {INSTALL_HINT}; missing: {e.name}') from e


def pack(model) -> bytes:
    """An openvino.Model -> one .npz of its IR (xml text and bin weights)."""
    import openvino as ov
    with tempfile.TemporaryDirectory(prefix='imagelabel-ov-') as folder:
        ov.save_model(model, f'{folder}/m.xml', compress_to_fp16=False)
        with open(f'{folder}/m.xml', 'rb') as f:
            xml = f.read()
        with open(f'{folder}/m.bin', 'rb') as f:
            weights = f.read()
    buf = io.BytesIO()
    np.savez(buf, xml=np.frombuffer(xml, np.uint8), bin=np.frombuffer(weights, np.uint8))
    return buf.getvalue()


def _quantize(ov_model, pixels: np.ndarray, preprocess) -> bytes:
    import nncf
    samples = [np.asarray(preprocess(p[None].astype(np.float32)), np.float32) for p in pixels]
    # MIXED: symmetric weights, asymmetric activations; activations after ReLU (and raw
    # 0..255 inputs) are one-sided, so symmetric ones would waste half their range.
    quantized = nncf.quantize(ov_model, nncf.Dataset(samples), subset_size=len(samples),
                              preset=nncf.QuantizationPreset.MIXED)
    return pack(quantized)


def convert_keras(model, spec: ModelSpec, calibration, output_kind: str,
                  preprocess: str) -> tuple[bytes, bytes]:
    """A Keras classifier -> (int8 IR .npz bytes, float32 head .npz bytes); `output_kind`
    and `preprocess` as the float32 runtime resolved them."""
    import openvino as ov
    import tensorflow as tf

    backbone, head = backbone_and_head(model, spec, output_kind)  # the head stays in numpy
    h, w = calibration.pixels.shape[1:3]
    with tempfile.TemporaryDirectory(prefix='imagelabel-int8-') as folder:
        backbone.export(folder, format='tf_saved_model', verbose=False,
                        input_signature=[tf.TensorSpec((None, h, w, 3), tf.float32)])
        ov_model = ov.convert_model(folder)
    content = _quantize(ov_model, calibration.pixels, PREPROCESSORS[preprocess])
    return content, head


def convert_saved_model(spec: ModelSpec, runtime, calibration) -> tuple[bytes, bytes]:
    """A loaded SavedModel's serving signature -> (int8 IR .npz bytes, b''): outputs kept."""
    import openvino as ov
    if runtime.input_dtype.is_integer:
        raise ValueError(f'{spec.name}: --int8_runtime openvino takes float image inputs; '
                         'this SavedModel takes integers: use --int8_runtime litert')
    from transforms.models.files import localized
    with localized(spec.path) as local:  # a gs:// folder through FileSystems
        ov_model = ov.convert_model(local)
    return _quantize(ov_model, calibration.pixels, PREPROCESSORS[runtime.preprocess]), b''


class OpenVINORuntime:
    """A cached OpenVINO int8 conversion, plus its float32 head when it has one.

    Compiled for throughput: OpenVINO picks how many streams (parallel inferences)
    the cores take, and a batch's images go to an AsyncInferQueue with one request
    per stream, each image as soon as a request is free. The GIL is released while
    OpenVINO runs.
    """

    def __init__(self, spec: ModelSpec, *, threads: int | None = None, num_classes: int = 1000,
                 interpreters: int | None = None):
        require(to_convert=False)
        import openvino as ov
        blob, self._head, sha256 = read_conversion(spec.path, RUNTIMES['openvino'].suffix)
        try:
            with np.load(io.BytesIO(blob)) as npz:
                xml, weights = npz['xml'].tobytes().decode(), npz['bin']
            core = ov.Core()
            model = core.read_model(model=xml, weights=ov.Tensor(weights))
            shape = list(model.inputs[0].get_partial_shape().get_min_shape())
            model.reshape([1, *shape[1:]])
            config: dict = {'PERFORMANCE_HINT': 'THROUGHPUT'}  # OpenVINO fills the cores
            if threads or interpreters:  # as asked: streams x threads, like LiteRT's layout
                layout = choose_layout(interpreters, threads)
                config.update(NUM_STREAMS=layout.interpreters,
                              INFERENCE_NUM_THREADS=layout.interpreters * layout.threads_each)
            self._compiled = core.compile_model(model, 'CPU', config)
        except Exception as e:  # noqa: BLE001 - one clear line
            raise ValueError(f'{spec.path} is not a loadable OpenVINO int8 model: '
                             f'{str(e).splitlines()[0] if str(e) else type(e).__name__}') from e
        self.weights_sha256 = sha256
        outs = self._compiled.outputs
        widths = {i: int(o.get_partial_shape()[-1].get_length()) for i, o in enumerate(outs)
                  if o.get_partial_shape().rank.get_length() == 2}
        if self._head is not None:
            self._scores, self._emb = None, 0
            self.num_outputs = self._head.num_outputs
        else:
            picked = pick_outputs(widths, num_classes)
            if picked is None:
                raise ValueError(f'{spec.name}: cannot tell which int8 output holds the scores '
                                 f'(widths {list(widths.values())})')
            self._scores, self._emb = picked
            self.num_outputs = widths[self._scores]
        self.embedding_dim = widths.get(self._emb, 0) if self._emb is not None else 0
        in_shape = self._compiled.inputs[0].get_partial_shape()
        self.input_size = (int(in_shape[1].get_length()), int(in_shape[2].get_length()))
        self._preprocess = PREPROCESSORS[spec.preprocess or 'inception']
        self._requests = int(self._compiled.get_property('OPTIMAL_NUMBER_OF_INFER_REQUESTS'))
        # One request per stream, made once; a batch at a time (Beam may call from threads).
        self._queue = ov.AsyncInferQueue(self._compiled, self._requests)
        self._queue.set_callback(self._landed)
        self._queue_lock = threading.Lock()
        self.name = spec.name
        self.precision = 'int8'
        self.layout = f'{self._requests} OpenVINO stream(s)'
        self.output_kind = 'logits' if self._head is not None else (
            spec.outputs if spec.outputs != 'auto' else 'probabilities')
        self._softmaxes = file_softmaxes(self.output_kind, moved=False)  # outputs kept
        self.has_head = self._head is not None
        self.description = int8_description(spec.name, runtime_tag('openvino'), self)

    def _landed(self, request, userdata) -> None:
        """An image is done (OpenVINO's thread): copy its outputs into the batch's arrays."""
        i, emb, raw, failures = userdata
        try:
            if self._emb is not None:
                emb[i] = request.get_output_tensor(self._emb).data.reshape(-1)
            if raw is not None:
                raw[i] = request.get_output_tensor(self._scores).data.reshape(-1)
        except BaseException as e:  # noqa: BLE001 - re-raised on the calling thread
            failures.append(e)

    def predict(self, pixels: Pixels) -> Scores:
        n = len(pixels)
        emb = np.empty((n, self.embedding_dim), np.float32)
        raw = None if self._head is not None else np.empty((n, self.num_outputs), np.float32)
        failures: list[BaseException] = []
        with self._queue_lock:
            for i in range(n):
                x = np.asarray(self._preprocess(one_image(pixels, i).astype(np.float32)),
                               np.float32)
                self._queue.start_async({0: x}, (i, emb, raw, failures))
            self._queue.wait_all()
        if failures:
            raise failures[0]
        return int8_scores(self._head, self._softmaxes, emb, raw)


