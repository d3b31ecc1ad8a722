"""Models as data: a registry of specs, and the runtimes that execute them.

A `ModelSpec` says everything the pipeline needs to know about a model (input
size, preprocessing, label set, where the embedding comes from, whether it emits
logits or probabilities). Adding a model is adding a registry entry, not an `if`.
A runtime turns a spec into one callable, `predict(uint8 pixels) -> Scores`,
that does preprocessing, the forward pass and softmax in one step.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.resources
import logging
import os
import shutil
import tempfile
import threading
from typing import Callable, Iterator, NamedTuple, Protocol

import numpy as np
from apache_beam.io.filesystems import FileSystems

from transforms.cpu import this_cpu
from transforms.read import open_raw

_log = logging.getLogger('imagelabel.models')

# --- preprocessing (pure functions; numpy arrays and TF tensors alike) ----------

_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)
_TORCH_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_TORCH_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _inception(x):
    return x / 127.5 - 1.0


def _unit(x):
    return x / 255.0


def _caffe(x):
    return x[..., ::-1] - _CAFFE_MEAN_BGR


def _torch(x):
    return (x / 255.0 - _TORCH_MEAN) / _TORCH_STD


def _raw(x):
    return x


#: name -> f(float pixels in 0..255, RGB) -> model input. Named after the Keras
#: `preprocess_input` mode each one reproduces.
PREPROCESSORS: dict[str, Callable] = {
    'inception': _inception,  # [-1, 1]: Inception, MobileNet, Xception ("tf" mode)
    'unit': _unit,            # [0, 1]
    'caffe': _caffe,          # BGR, ImageNet mean subtracted: ResNet50, VGG
    'torch': _torch,          # ImageNet mean/std: DenseNet
    'raw': _raw,              # 0..255 unchanged: uint8-quantized TFLite models
}

OUTPUT_KINDS = ('auto', 'probabilities', 'logits')
PRECISIONS = ('float32', 'bf16')


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the pipeline needs to know about a model, as data."""
    name: str
    format: str                           # 'keras_application' | 'keras' | 'saved_model' | 'tflite'
    path: str | None = None               # model file or folder (not for applications)
    application: str | None = None        # keras.applications constructor name
    weights: str | None = None            # weights file for an application (None: Keras download)
    input_size: tuple[int, int] | None = None   # (height, width); None: read from the model
    preprocess: str | None = None         # key of PREPROCESSORS; None: the format's default
    outputs: str = 'auto'                 # logits or probabilities; 'auto' detects
    embedding_layer: str | None = None    # None: the input of the final classification layer
    labels: str | None = None             # labels file; None: the bundled ImageNet names


#: Named models. Real users get ImageNet weights through Keras on first use.
REGISTRY: dict[str, ModelSpec] = {
    'inception_v3': ModelSpec(name='inception_v3', format='keras_application',
                              application='InceptionV3', input_size=(299, 299),
                              preprocess='inception', outputs='probabilities',
                              embedding_layer='avg_pool'),
    'mobilenet_v2': ModelSpec(name='mobilenet_v2', format='keras_application',
                              application='MobileNetV2', input_size=(224, 224),
                              preprocess='inception', outputs='probabilities'),
    'resnet50': ModelSpec(name='resnet50', format='keras_application',
                          application='ResNet50', input_size=(224, 224),
                          preprocess='caffe', outputs='probabilities',
                          embedding_layer='avg_pool'),
}


def resolve_spec(model: str, *, weights: str | None = None, labels: str | None = None,
                 preprocess: str | None = None, outputs: str | None = None) -> ModelSpec:
    """--model (a registry name or a model path) + overrides -> a ModelSpec."""
    if model in REGISTRY:
        spec = REGISTRY[model]
    else:
        lower = model.lower().rstrip('/')
        fmt = next((name for name, f in FORMATS.items() if f.suffixes and lower.endswith(f.suffixes)),
                   'saved_model' if _is_saved_model_dir(model) else None)
        if fmt is None:
            raise ValueError(
                f'--model {model!r} is neither a known model ({", ".join(sorted(REGISTRY))}) '
                'nor a .keras/.h5/.tflite file or SavedModel directory')
        spec = ModelSpec(name=os.path.basename(model.rstrip('/')), format=fmt, path=model)
    if weights and spec.format != 'keras_application':
        raise ValueError('--weights applies to named models such as inception_v3; '
                         f'{model} carries its own weights')
    if preprocess is not None and preprocess not in PREPROCESSORS:
        raise ValueError(f'--preprocess {preprocess!r} is unknown; choose one of '
                         f'{", ".join(PREPROCESSORS)}')
    if outputs is not None and outputs not in OUTPUT_KINDS:
        raise ValueError(f'--model_outputs must be one of {OUTPUT_KINDS}')
    if outputs == 'auto':
        outputs = None  # keep what the spec declares; detect only where it declares nothing
    changes = {k: v for k, v in dict(weights=weights, labels=labels, preprocess=preprocess,
                                     outputs=outputs).items() if v is not None}
    return dataclasses.replace(spec, **changes)


def _is_saved_model_dir(path: str) -> bool:
    return FileSystems.exists(FileSystems.join(path, 'saved_model.pb'))


# --- labels ---------------------------------------------------------------------

def load_labels(path: str | None = None) -> list[str]:
    """Class names, one per line: a user file, or the ImageNet names we ship."""
    if path is None:
        text = importlib.resources.files('transforms').joinpath(
            'data/imagenet_labels.txt').read_text('utf-8')
    else:
        if not FileSystems.exists(path):
            raise ValueError(f'--labels file {path} does not exist')
        with open_raw(path) as f:
            text = f.read().decode('utf-8')
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise ValueError(f'labels file {path} is empty')
    return names


# --- shared helpers -----------------------------------------------------------------

@contextlib.contextmanager
def localized(path: str) -> Iterator[str]:
    """A local path for a model file or SavedModel folder given as any FileSystems URI.

    A remote file (gs://...) is copied to a temporary place and deleted when the
    block ends: the runtimes hold the model in memory once loaded, so no copy of
    a model outlives its load on a worker's disk.
    """
    if '://' not in path:
        if not os.path.exists(path):
            raise ValueError(f'model file {path} does not exist')
        yield path
        return
    folder = FileSystems.join(path.rstrip('/'), '')
    files = [] if FileSystems.exists(path) and not _is_saved_model_dir(path) else sorted(
        m.path for r in FileSystems.match([FileSystems.join(path.rstrip('/'), '**')])
        for m in r.metadata_list if not m.path.endswith('/'))
    if not files and not FileSystems.exists(path):
        raise ValueError(f'model file {path} does not exist')
    tmp = tempfile.mkdtemp(prefix='imagelabel-model-')
    try:
        if not files:  # one file
            local = os.path.join(tmp, os.path.basename(path))
            _copy_to_local(path, local)
        else:  # a folder (SavedModel): keep the layout under it
            local = os.path.join(tmp, os.path.basename(path.rstrip('/')))
            for f in files:
                target = os.path.join(local, f[len(folder):])
                os.makedirs(os.path.dirname(target), exist_ok=True)
                _copy_to_local(f, target)
        yield local
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _copy_to_local(uri: str, local: str) -> None:
    with open(local, 'wb') as out, open_raw(uri) as src:
        while chunk := src.read(1 << 24):
            out.write(chunk)


def file_fingerprint(path: str) -> str:
    """SHA-256 of a file, or of every file under a folder (sorted, with their names).

    Goes through FileSystems, so a gs:// SavedModel folder is fingerprinted in place.
    """
    h = hashlib.sha256()
    if FileSystems.match([path])[0].metadata_list and not os.path.isdir(path):
        paths = [path]
    else:
        pattern = FileSystems.join(path.rstrip('/'), '**')
        paths = sorted(m.path for r in FileSystems.match([pattern]) for m in r.metadata_list
                       if not os.path.isdir(m.path))
    for p in paths:
        if p != path:
            h.update(p[len(path):].lstrip('/').encode())
        with open_raw(p) as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class Scores(NamedTuple):
    """A batch's model outputs: probabilities over the label set, and embeddings."""
    probabilities: np.ndarray  # (n, num_classes) float32
    embeddings: np.ndarray     # (n, dim) float32; dim may be 0 when unavailable


class Runtime(Protocol):
    name: str
    weights_sha256: str
    input_size: tuple[int, int]
    num_outputs: int
    embedding_dim: int
    output_kind: str  # 'probabilities' or 'logits' (what the model emits; predict() softmaxes)
    precision: str    # the arithmetic really used (bf16 falls back to float32 without units)
    description: str

    def predict(self, pixels: np.ndarray) -> Scores: ...


def bucket_size(n: int, batch_size: int) -> int:
    """Fixed shape to pad n images to: the next power of two, capped at batch_size."""
    return min(1 << max(n - 1, 0).bit_length(), batch_size)


# --- Keras -------------------------------------------------------------------------

def _configure_tensorflow_threads(threads: int | None) -> None:
    import tensorflow as tf
    if not threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TF already initialised in this process: keep its pools
        _log.warning('TensorFlow is already initialised here; --model_threads %d ignored',
                     threads)


def _final_dense(model):
    import keras
    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.Dense):
            return layer
    raise ValueError(f'model {model.name} has no Dense classification layer to take '
                     'the embedding from; register it in transforms.models.REGISTRY with '
                     'its embedding_layer')


def _classifier_head(model, embedding):
    """A float32 callable embedding -> model output, if the top is Dense [+ softmax]."""
    import keras
    dense = _final_dense(model)
    rest = model.layers[model.layers.index(dense) + 1:]
    if dense.input is not embedding or any(
            not isinstance(layer, (keras.layers.Softmax, keras.layers.Activation)) for layer in rest):
        _log.warning('%s: the classifier head is not Dense [+ softmax], so under bf16 the '
                     'scores are computed in bf16 too (rounded to 8 bits of mantissa)',
                     model.name)
        return None

    def head(x):
        x = dense(x)
        for layer in rest:
            x = layer(x)
        return x
    return head


def _emits_probabilities(model) -> bool:
    import keras
    last = model.layers[-1]
    act = getattr(last, 'activation', None)
    return isinstance(last, keras.layers.Softmax) or getattr(act, '__name__', '') == 'softmax'


@contextlib.contextmanager
def onednn_bf16_calls():
    """Run TF function calls on this thread with oneDNN's bf16 graph rewrite.

    The rewrite (a Grappler pass) turns convolutions and matmuls into fused bf16
    oneDNN kernels (AVX512-BF16 / AMX); on our CPU it measured well ahead of
    Keras's per-layer mixed_bfloat16 policy. Grappler's options travel with each
    function call in a thread-local FunctionCallOptions, so setting them here for
    our own calls leaves every other model in the process in float32. (TF has no
    public per-function switch, tf.config.optimizer's is process-wide, so this uses
    the eager context's thread-local call options.)
    """
    from tensorflow.core.protobuf import rewriter_config_pb2
    from tensorflow.python.eager import context
    ctx = context.context()
    config = ctx.config  # a fresh ConfigProto copy
    config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = (
        rewriter_config_pb2.RewriterConfig.ON)
    previous = ctx.function_call_options  # this thread's
    ctx.function_call_options = context.FunctionCallOptions(config_proto=config)
    try:
        yield
    finally:
        ctx.function_call_options = previous


class KerasRuntime:
    """A Keras classifier compiled to one tf.function: uint8 in, (probs, embedding) out.

    Both outputs come from one forward pass. Batches are padded to a fixed shape
    (powers of two up to the batch size) so the function is traced a bounded
    number of times and runs the same kernels every call.
    """

    def __init__(self, model, spec: ModelSpec, weights_sha256: str, *, batch_size: int,
                 precision: str = 'float32'):
        import tensorflow as tf
        import keras
        if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4 or model.inputs[0].shape[-1] != 3:
            raise ValueError(f'{spec.name}: expected one image input of shape '
                             f'(batch, height, width, 3), got {[tuple(i.shape) for i in model.inputs]}')
        in_h, in_w = model.inputs[0].shape[1:3]
        if spec.input_size:
            in_h, in_w = spec.input_size
        if in_h is None or in_w is None:
            raise ValueError(f'{spec.name}: the model does not fix its input size')
        if spec.embedding_layer:
            embedding = model.get_layer(spec.embedding_layer).output
        else:
            embedding = _final_dense(model).input
        kind = spec.outputs
        if kind == 'auto':
            kind = 'probabilities' if _emits_probabilities(model) else 'logits'
        preprocess = PREPROCESSORS[spec.preprocess or 'inception']
        if precision == 'bf16' and not this_cpu().has_bf16:
            # oneDNN would silently leave the graph in float32: say so, and record
            # the precision really used (it goes into model_id and summary.json).
            _log.warning('--precision bf16: this CPU (%s) has no bf16 units, so the model '
                         'runs in float32', this_cpu().describe())
            precision = 'float32'
        head = _classifier_head(model, embedding) if precision == 'bf16' else None
        self._head: Callable | None = None

        if head is None:
            both = keras.Model(model.inputs, [model.outputs[0], embedding])

            @tf.function(reduce_retracing=False)
            def serve(pixels):
                x = preprocess(tf.cast(pixels, tf.float32))
                out, emb = both(x, training=False)
                out = tf.cast(out, tf.float32)
                if kind == 'logits':
                    out = tf.nn.softmax(out)
                return out, tf.cast(emb, tf.float32)
        else:
            # bf16: the backbone runs under the bf16 rewrite, but the classifier head
            # (final Dense + softmax, ~0.1% of the FLOPs) runs in float32 on the
            # embedding, so probabilities are not rounded to bf16's 8-bit mantissa
            # (which ties close scores and scrambles the top-k order).
            backbone = keras.Model(model.inputs, embedding)

            @tf.function(reduce_retracing=False)
            def serve(pixels):
                x = preprocess(tf.cast(pixels, tf.float32))
                return tf.cast(backbone(x, training=False), tf.float32)

            @tf.function(reduce_retracing=False)
            def serve_head(emb):
                out = tf.cast(head(emb), tf.float32)
                return tf.nn.softmax(out) if kind == 'logits' else out

            self._head = serve_head.get_concrete_function(
                tf.TensorSpec((None, int(embedding.shape[-1])), tf.float32))
        self._serve = serve
        self._concrete: dict[int, Callable] = {}
        self._lock = threading.Lock()
        self.name = spec.name
        self.weights_sha256 = weights_sha256
        self.input_size = (int(in_h), int(in_w))
        self.batch_size = batch_size
        self.precision = precision
        self.num_outputs = int(model.outputs[0].shape[-1])
        self.embedding_dim = int(embedding.shape[-1])
        self.output_kind = kind
        self.description = (f'{spec.name}: Keras, input {in_h}x{in_w}, {self.num_outputs} '
                            f'{kind}, embedding {self.embedding_dim}-d, {precision}')

    def _function(self, size: int):
        import tensorflow as tf
        fn = self._concrete.get(size)
        if fn is None:
            with self._lock:
                fn = self._concrete.get(size)
                if fn is None:
                    fn = self._serve.get_concrete_function(
                        tf.TensorSpec((size, *self.input_size, 3), tf.uint8))
                    self._concrete[size] = fn
        return fn

    def predict(self, pixels: np.ndarray) -> Scores:
        probs, embs = [], []
        for start in range(0, len(pixels), self.batch_size):
            chunk = pixels[start:start + self.batch_size]
            size = bucket_size(len(chunk), self.batch_size)
            if size != len(chunk):
                pad = np.zeros((size - len(chunk), *chunk.shape[1:]), np.uint8)
                chunk_in = np.concatenate([chunk, pad])
            else:
                chunk_in = chunk
            if self._head is not None:
                with onednn_bf16_calls():
                    e = self._function(size)(chunk_in)
                p = self._head(e)  # float32, outside the bf16 rewrite
            else:
                with onednn_bf16_calls() if self.precision == 'bf16' else contextlib.nullcontext():
                    p, e = self._function(size)(chunk_in)
            probs.append(p.numpy()[:len(chunk)])
            embs.append(e.numpy()[:len(chunk)])
        return Scores(np.concatenate(probs), np.concatenate(embs))


def _load_keras_model(spec: ModelSpec):
    """(keras.Model, weights fingerprint) for an application or a model file."""
    import keras
    if spec.format == 'keras_application':
        constructor = getattr(keras.applications, spec.application)
        if spec.weights:
            with localized(spec.weights) as local:
                return constructor(weights=local), file_fingerprint(local)
        # Real users: Keras downloads the ImageNet weights on first use, checks
        # their hash and caches them under ~/.keras/models.
        model = constructor(weights='imagenet')
        return model, _keras_weights_fingerprint(model)
    if spec.format == 'keras':
        with localized(spec.path) as local:
            try:
                model = keras.models.load_model(local, compile=False)
            except Exception as e:  # noqa: BLE001 - reported as one clear line
                raise ValueError(f'{spec.path} is not a loadable Keras model: {type(e).__name__}: '
                                 f'{str(e).splitlines()[0] if str(e) else ""}') from e
            return model, file_fingerprint(local)
    raise ValueError(f'{spec.format} is not a Keras format')


def _keras_weights_fingerprint(model) -> str:
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


class SavedModelRuntime:
    """A TF SavedModel's serving_default signature.

    Outputs are chosen by width: the scores are the output with one column per
    class (or per class plus background); a second rank-2 output, if there is
    exactly one, is the embedding.
    """

    def __init__(self, spec: ModelSpec, *, num_classes: int):
        import tensorflow as tf
        with localized(spec.path) as local:  # TF's own gs:// ignores the emulator setting
            try:
                loaded = tf.saved_model.load(local)
                sig = loaded.signatures['serving_default']
            except Exception as e:  # noqa: BLE001
                raise ValueError(f'{spec.path} is not a loadable SavedModel with a '
                                 f'serving_default signature: {type(e).__name__}') from e
        (arg_name, arg_spec), = sig.structured_input_signature[1].items()
        if len(arg_spec.shape) != 4 or arg_spec.shape[-1] != 3:
            raise ValueError(f'{spec.name}: expected an image input (batch, height, width, 3), '
                             f'got {arg_spec.shape}')
        h, w = spec.input_size or tuple(arg_spec.shape[1:3])
        if h is None or w is None:
            raise ValueError(f'{spec.name}: the model does not fix its input size')
        outputs = {k: v for k, v in sig.structured_outputs.items() if len(v.shape) == 2}
        widths = {k: v.shape[-1] for k, v in outputs.items()}
        scores = [k for k, width in widths.items() if width in (num_classes, num_classes + 1)]
        if len(scores) != 1:
            raise ValueError(f'{spec.name}: cannot tell which output holds the {num_classes} '
                             f'class scores (rank-2 outputs and widths: {widths}); pass --labels '
                             'with one name per class')
        others = [k for k in outputs if k != scores[0]]
        self._loaded, self._sig, self._arg = loaded, sig, arg_name
        self._scores_key = scores[0]
        self._emb_key = others[0] if len(others) == 1 else None
        self._integer_input = arg_spec.dtype.is_integer
        self._preprocess = PREPROCESSORS[spec.preprocess or
                                         ('raw' if self._integer_input else 'inception')]
        self._dtype = arg_spec.dtype
        self.name = spec.name
        self.weights_sha256 = file_fingerprint(spec.path)
        self.precision = 'float32'
        self.input_size = (int(h), int(w))
        self.num_outputs = int(widths[self._scores_key])
        self.embedding_dim = int(widths[self._emb_key]) if self._emb_key else 0
        self.output_kind = spec.outputs
        if self.output_kind == 'auto':  # decide once, on a probe, never per batch
            probe = self._raw_scores(np.full((1, *self.input_size, 3), 128, np.uint8))[0]
            self.output_kind = 'probabilities' if _looks_like_probabilities(probe) else 'logits'
        self.description = (f'{spec.name}: SavedModel, input {h}x{w}, {self.num_outputs} '
                            f'{self.output_kind}, embedding {self.embedding_dim}-d')

    def _raw_scores(self, pixels: np.ndarray):
        import tensorflow as tf
        x = tf.cast(self._preprocess(tf.cast(pixels, tf.float32)), self._dtype)
        out = self._sig(**{self._arg: x})
        return out[self._scores_key].numpy().astype(np.float32), out

    def predict(self, pixels: np.ndarray) -> Scores:
        scores, out = self._raw_scores(pixels)
        if self.output_kind == 'logits':
            scores = softmax(scores)
        emb = (out[self._emb_key].numpy().reshape(len(pixels), -1).astype(np.float32)
               if self._emb_key else np.zeros((len(pixels), 0), np.float32))
        return Scores(scores, emb)


def _looks_like_probabilities(scores: np.ndarray) -> bool:
    return bool(scores.min() >= 0 and np.allclose(scores.sum(axis=-1), 1.0, atol=1e-2))


# --- TFLite on LiteRT ---------------------------------------------------------------

_PASSTHROUGH_OPS = {'RESHAPE', 'SQUEEZE', 'SOFTMAX', 'DEQUANTIZE', 'QUANTIZE'}
_CLASSIFIER_OPS = {'CONV_2D', 'FULLY_CONNECTED'}


class PatchedModel(NamedTuple):
    """A .tflite model with its classifier's input added as an output (if found)."""
    content: bytes
    has_embedding: bool
    ends_in_softmax: bool | None  # None: the graph could not be read


def expose_penultimate(content: bytes) -> PatchedModel:
    """Add the classifier's input (the embedding) to the model's outputs.

    The XNNPACK delegate keeps intermediate tensors internal, so the embedding
    can only be read if it is a model output. We walk back from the output through
    reshapes/softmax to the final CONV_2D or FULLY_CONNECTED op and append its input
    to the subgraph's outputs in the flatbuffer.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema
    ops = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith('_')}
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(content, 0))
    graph = model.subgraphs[0]
    producer = {t: op for op in graph.operators for t in op.outputs}
    tensor, chain = int(graph.outputs[0]), []
    embedding = None
    while tensor in producer:
        op = producer[tensor]
        code = model.operatorCodes[op.opcodeIndex]
        name = ops.get(max(code.builtinCode, code.deprecatedBuiltinCode), 'CUSTOM')
        chain.append(name)
        if name in _CLASSIFIER_OPS:
            embedding = int(op.inputs[0])
            break
        if name not in _PASSTHROUGH_OPS:
            break
        tensor = int(op.inputs[0])
    ends_in_softmax = 'SOFTMAX' in chain
    if embedding is None:
        return PatchedModel(content, False, ends_in_softmax)
    graph.outputs = np.append(graph.outputs, embedding).astype(np.int32)
    builder = flatbuffers.Builder(len(content) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b'TFL3')
    return PatchedModel(bytes(builder.Output()), True, ends_in_softmax)


class TFLiteRuntime:
    """A .tflite classifier on LiteRT (float, uint8- or int8-quantized), one image per invoke.

    Quantized models with fixed-shape reshapes cannot be batch-resized under
    XNNPACK, and at batch 1 the interpreter already runs at full speed, so a batch
    is a loop of invokes on one interpreter (guarded by a lock: an interpreter is
    not thread-safe, and Beam shares the model across a worker's threads).
    """

    def __init__(self, spec: ModelSpec, *, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter
        with localized(spec.path) as local, open(local, 'rb') as f:
            content = f.read()
        self.weights_sha256 = hashlib.sha256(content).hexdigest()
        try:
            graph = expose_penultimate(content)
        except Exception as e:  # noqa: BLE001 - unparseable: the interpreter will say why
            _log.warning('%s: could not read the model graph (%s): no embedding, and '
                         'logits/probabilities will be decided by a probe', spec.name, e)
            graph = PatchedModel(content, has_embedding=False, ends_in_softmax=None)
        patched, has_embedding = graph.content, graph.has_embedding
        try:
            self._interp = Interpreter(model_content=patched,
                                       num_threads=threads or os.cpu_count() or 1)
            self._interp.allocate_tensors()
        except Exception as e:  # noqa: BLE001 - one clear line
            raise ValueError(f'{spec.path} is not a loadable TFLite model: '
                             f'{str(e).splitlines()[0] if str(e) else type(e).__name__}') from e
        (inp,) = self._interp.get_input_details()
        if len(inp['shape']) != 4 or inp['shape'][-1] != 3:
            raise ValueError(f'{spec.name}: expected an image input (1, height, width, 3), '
                             f'got shape {list(inp["shape"])}')
        outs = self._interp.get_output_details()
        self._in = inp
        self._out = outs[0]
        self._emb = outs[-1] if has_embedding and len(outs) > 1 else None
        self._quantized_input = bool(np.issubdtype(inp['dtype'], np.integer))
        # uint8 models take raw pixels (their input scale is 1/128 around 128); others
        # (float, int8) take [-1, 1], quantized with the input tensor's own parameters.
        self._preprocess = PREPROCESSORS[spec.preprocess or (
            'raw' if inp['dtype'] == np.uint8 else 'inception')]
        kind = spec.outputs
        self._lock = threading.Lock()
        self.name = spec.name
        self.precision = 'float32'  # as requested; the file's own quantization is in model_id
        self.input_size = (int(inp['shape'][1]), int(inp['shape'][2]))
        self.num_outputs = int(self._out['shape'][-1])
        self.embedding_dim = int(np.prod(self._emb['shape'][1:])) if self._emb else 0
        if kind == 'auto':
            if graph.ends_in_softmax is None:  # unknown graph: probe once
                probe = self._invoke(np.full((1, *self.input_size, 3), 128, np.uint8))[0]
                kind = 'probabilities' if _looks_like_probabilities(probe) else 'logits'
            else:
                kind = 'probabilities' if graph.ends_in_softmax else 'logits'
        self.output_kind = kind
        self.description = (f'{spec.name}: TFLite {np.dtype(inp["dtype"]).name}, '
                            f'input {self.input_size[0]}x{self.input_size[1]}, {self.num_outputs} {kind}, '
                            f'embedding {self.embedding_dim}-d')

    @staticmethod
    def _dequantize(values: np.ndarray, detail) -> np.ndarray:
        scale, zero = detail['quantization']
        if scale:
            return (values.astype(np.float32) - zero) * scale
        return values.astype(np.float32)

    def _model_input(self, pixels: np.ndarray) -> np.ndarray:
        dtype = self._in['dtype']
        if self._preprocess is _raw:
            return pixels.astype(dtype)
        x = self._preprocess(pixels.astype(np.float32))
        if self._quantized_input:
            scale, zero = self._in['quantization']
            info = np.iinfo(dtype)
            return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
        return np.asarray(x, dtype=dtype)

    def _invoke(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw (dequantized) outputs and embeddings, one invoke per image."""
        n = len(pixels)
        raw = np.empty((n, self.num_outputs), np.float32)
        emb = np.empty((n, self.embedding_dim), np.float32)
        with self._lock:
            for i in range(n):
                self._interp.set_tensor(self._in['index'], self._model_input(pixels[i:i + 1]))
                self._interp.invoke()
                raw[i] = self._dequantize(self._interp.get_tensor(self._out['index']),
                                          self._out).reshape(-1)
                if self._emb:
                    emb[i] = self._dequantize(self._interp.get_tensor(self._emb['index']),
                                              self._emb).reshape(-1)
        return raw, emb

    def predict(self, pixels: np.ndarray) -> Scores:
        raw, emb = self._invoke(pixels)
        return Scores(softmax(raw) if self.output_kind == 'logits' else raw, emb)


# --- entry point ----------------------------------------------------------------------

def _load_keras(spec: ModelSpec, *, batch_size: int, precision: str, **_) -> Runtime:
    model, fingerprint = _load_keras_model(spec)
    return KerasRuntime(model, spec, fingerprint, batch_size=batch_size, precision=precision)


def _load_saved_model(spec: ModelSpec, *, num_classes: int, **_) -> Runtime:
    return SavedModelRuntime(spec, num_classes=num_classes)


def _load_tflite(spec: ModelSpec, *, threads: int | None, **_) -> Runtime:
    return TFLiteRuntime(spec, threads=threads)


@dataclasses.dataclass(frozen=True)
class ModelFormat:
    """How one kind of model is recognised and run."""
    suffixes: tuple[str, ...]        # file name endings that select it ('' = never by name)
    load: Callable[..., Runtime]
    supports_bf16: bool
    uses_tensorflow: bool


FORMATS: dict[str, ModelFormat] = {
    'keras_application': ModelFormat((), _load_keras, True, True),
    'keras': ModelFormat(('.keras', '.h5', '.hdf5'), _load_keras, True, True),
    'saved_model': ModelFormat((), _load_saved_model, False, True),  # a folder with saved_model.pb
    'tflite': ModelFormat(('.tflite',), _load_tflite, False, False),
}


def load_runtime(spec: ModelSpec, *, batch_size: int = 32, precision: str = 'float32',
                 threads: int | None = None, num_classes: int = 1000) -> Runtime:
    """Load a spec's model once; every failure is a ValueError with one clear line."""
    if precision not in PRECISIONS:
        raise ValueError(f'--precision must be one of {PRECISIONS}')
    fmt = FORMATS[spec.format]
    if precision == 'bf16' and not fmt.supports_bf16:
        raise ValueError(f'--precision bf16 applies to Keras models; a {spec.format} model '
                         'runs at the precision it was converted with')
    if fmt.uses_tensorflow:
        _configure_tensorflow_threads(threads)
    return fmt.load(spec, batch_size=batch_size, precision=precision, threads=threads,
                    num_classes=num_classes)
