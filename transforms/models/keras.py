"""Keras models (applications and .keras/.h5 files) as one compiled tf.function.

TensorFlow and Keras are imported inside the functions, never at module level:
a .tflite run must not pay TensorFlow's import.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import logging
import threading
from typing import Any, Callable

import numpy as np

from transforms.cpu import this_cpu
from transforms.models.files import file_fingerprint, localized
from transforms.models.keras_graph import (classifier_top, embedding_output,
                                           emits_probabilities)
from transforms.models.runtime import Pixels, Scores, as_batch, bucket_size
from transforms.models.spec import PREPROCESSORS, ModelSpec
from transforms.models.tf_import import import_tensorflow

_log = logging.getLogger('imagelabel.models')


def configure_tensorflow_threads(threads: int | None) -> None:
    tf = import_tensorflow()  # the process's first TensorFlow import, without scikit-learn
    if not threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TF already initialised in this process: keep its pools
        _log.warning('TensorFlow is already initialised here; --model_threads %d ignored',
                     threads)


def _classifier_head(model, embedding):
    """A float32 callable embedding -> model output, if the top is Dense [+ softmax]."""
    top = classifier_top(model, embedding)
    if top is None:
        _log.warning('%s: the classifier head is not Dense [+ softmax], so under bf16 the '
                     'scores are computed in bf16 too (rounded to 8 bits of mantissa)',
                     model.name)
        return None
    dense, rest = top

    def head(x):
        x = dense(x)
        for layer in rest:
            x = layer(x)
        return x
    return head


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
        embedding = embedding_output(model, spec)
        kind = spec.outputs
        if kind == 'auto':
            kind = 'probabilities' if emits_probabilities(model) else 'logits'
        self.preprocess = spec.preprocess or 'inception'  # read by the launch-time conversions
        preprocess = PREPROCESSORS[self.preprocess]
        if precision == 'bf16' and not this_cpu().has_bf16:
            # oneDNN would silently leave the graph in float32: say so, and record
            # the precision really used (summary.json; model_id keys on the one asked for).
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
        self.keras_model = model  # the int8 converter starts from it (transforms.models.int8)
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

    def predict(self, pixels: Pixels) -> Scores:
        pixels = as_batch(pixels)
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


_LOAD_LOCK = threading.Lock()


@contextlib.contextmanager
def _replaced_in_this_thread(owner, name: str, make: Callable[[Callable], Callable]):
    """`owner.name` replaced by `make(original)` in this thread for the with-block.

    Other threads keep the original while it is replaced. An owner without the
    attribute (another TensorFlow or Keras version) is left alone: the load then
    takes the ordinary way.
    """
    original = getattr(owner, name, None)
    if original is None:
        yield
        return
    here, replacement = threading.get_ident(), make(original)

    def dispatch(*args, **kwargs):
        return (replacement if threading.get_ident() == here else original)(*args, **kwargs)

    setattr(owner, name, dispatch)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextlib.contextmanager
def quick_variables():
    """While a model with stored weights loads, create its variables without two wasted costs.

    Loading assigns every stored variable its value right after creating it
    (Keras raises when the file lacks one), so what creation does first is waste:
    - Keras computes an initial value for each variable (a random draw) and
      assigns it. Here a variable is created unset
      (`tf.Variable`'s own `UninitializedVariable`, which TensorFlow's checkpoint
      restore uses the same way) and gets its first value from the load. Measured
      on AMD EPYC Zen 3: 0.15 s of Inception-v3's 2 s load for skipping the random
      draws (PyTorch's `skip_init` and transformers' `no_init_weights` skip them
      the same way), 0.19 s more for skipping the zeros that replaced them.
    - TensorFlow gives each variable's handle op a `debug_name` attribute (the
      variable's name, used only in error messages), and eager execution caches
      op kernels by their attributes, so each of Inception-v3's 378 variables
      built its own kernel: 0.19 s of a 1.75 s load, measured alone in fresh
      processes on the same CPU. Without the name, they share one kernel.
    Only the loading thread is affected: a variable another thread creates
    meanwhile starts the ordinary way. So does a variable that the load leaves
    unset, after it (a Dropout's or RandomFlip's seed state: files do not hold it).
    A model whose layers read their variables before the load sets them cannot
    load this way: `load_keras_model` then loads it the ordinary way (`_quickly`).
    """
    import_tensorflow()
    try:
        from keras.src.backend.tensorflow.core import Variable
        from tensorflow.python.ops import resource_variable_ops
    except ImportError:
        Variable = resource_variable_ops = None  # noqa: N806 - the load takes the ordinary way

    created: list[tuple[Any, Callable]] = []  # (variable, its initializer), in this thread

    def unset(original):
        def initialize(self, initializer):
            created.append((self, initializer))
            self._initialize(resource_variable_ops.UninitializedVariable(  # noqa: SLF001
                shape=self._shape, dtype=self._dtype, trainable=self.trainable,  # noqa: SLF001
                name=self.name, aggregation=self._map_aggregation(self.aggregation),  # noqa: SLF001
                synchronization=self._map_synchronization(self.synchronization)))  # noqa: SLF001
        return initialize

    def unnamed(original):
        def handle(*args, **kwargs):
            kwargs.pop('debug_name', None)
            return original(*args, **kwargs)
        return handle

    gen_ops = getattr(resource_variable_ops, 'gen_resource_variable_ops', None)
    with _LOAD_LOCK, \
            _replaced_in_this_thread(Variable, '_initialize_with_initializer', unset), \
            _replaced_in_this_thread(gen_ops, 'var_handle_op', unnamed):
        yield
    for variable, initializer in created:
        if not variable.value.is_initialized():
            variable.assign(initializer(variable.shape, dtype=variable.dtype))


def load_keras_model(spec: ModelSpec):
    """(keras.Model, weights fingerprint) for an application or a model file."""
    import_tensorflow()
    import keras
    if spec.format == 'keras_application':
        constructor = getattr(keras.applications, spec.application)
        if spec.weights:
            with localized(spec.weights) as local, _fingerprinting(local) as fingerprint:
                return _quickly(lambda: constructor(weights=local), spec), fingerprint.result()
        # Real users: Keras downloads the ImageNet weights on first use, checks
        # their hash and caches them under ~/.keras/models.
        try:
            model = _quickly(lambda: constructor(weights='imagenet'), spec)
        except Exception as e:  # noqa: BLE001 - Keras raises a bare Exception for a fetch
            if not _is_fetch_failure(e):
                raise
            cause = (str(e).splitlines() or [''])[0]
            cause = cause.rsplit(': ', 1)[-1] if ' -- ' not in cause else cause.split(' -- ')[-1]
            raise ValueError(f'--model {spec.name}: cannot download its ImageNet weights '
                             f'({cause.strip()[:200]}); on a machine without internet access, '
                             'pass --weights with a local or gs:// copy of the weights '
                             'file') from e
        return model, _keras_weights_fingerprint(model)
    if spec.format == 'keras':
        with localized(spec.path) as local, _fingerprinting(local) as fingerprint:
            try:
                model = _quickly(lambda: keras.models.load_model(local, compile=False), spec)
            except Exception as e:  # noqa: BLE001 - reported as one clear line
                raise ValueError(f'{spec.path} is not a loadable Keras model: {type(e).__name__}: '
                                 f'{str(e).splitlines()[0] if str(e) else ""}') from e
            return model, fingerprint.result()
    raise ValueError(f'{spec.format} is not a Keras format')


def _is_fetch_failure(e: BaseException) -> bool:
    """Keras could not download weights (it raises a bare Exception that says so)."""
    return 'fetch failure' in str(e) or isinstance(e, OSError) and 'http' in str(e)


def _quickly(load: Callable[[], Any], spec: ModelSpec):
    """`load()` with quick_variables(), or, if that fails, once more the ordinary way.

    A layer that reads its own variables while it is built, before the load sets
    them (an adapted Normalization computes its mean and variance then, as in
    EfficientNet), fails on an unset variable; the ordinary load gives it initial
    values to read, and the file's values replace them as usual. A file that
    cannot load fails the ordinary way too, with the ordinary error.
    """
    try:
        with quick_variables():
            return load()
    except Exception as e:  # noqa: BLE001 - the ordinary load decides
        if _is_fetch_failure(e):  # no download twice: the ordinary way fetches the same
            raise
        _log.info('%s: loading again without quick variable creation (%s: %s)', spec.name,
                  type(e).__name__, str(e).splitlines()[0] if str(e) else '')
    return load()


@contextlib.contextmanager
def _fingerprinting(path: str):
    """The file's fingerprint (a Future), hashed on another core while the model loads.

    hashlib and file reads release the GIL, so hashing Inception-v3's 95 MB
    file (about 0.08 s on AMD EPYC Zen 3) overlaps the load instead of following it.
    """
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='fingerprint') as pool:
        yield pool.submit(file_fingerprint, path)


def _keras_weights_fingerprint(model) -> str:
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()
