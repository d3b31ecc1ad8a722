""".tflite models on LiteRT (ai_edge_litert): no TensorFlow import anywhere here."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from typing import NamedTuple

import numpy as np

from transforms.models.files import localized
from transforms.models.interpreters import InterpreterPool, choose_layout, quantize
from transforms.models.runtime import Pixels, Scores, looks_like_probabilities, one_image, softmax
from transforms.models.spec import PREPROCESSORS, ModelSpec, _raw

_log = logging.getLogger('imagelabel.models')


_PASSTHROUGH_OPS = {'RESHAPE', 'SQUEEZE', 'SOFTMAX', 'DEQUANTIZE', 'QUANTIZE'}
_CLASSIFIER_OPS = {'CONV_2D', 'FULLY_CONNECTED'}


class PatchedModel(NamedTuple):
    """A .tflite model with its classifier's input added as an output (if found)."""
    content: bytes
    has_embedding: bool
    ends_in_softmax: bool | None  # None: the graph could not be read


def _read_graph(content: bytes):
    """(unpacked model, its first subgraph, tensor -> producing op, op name of an op)."""
    from ai_edge_litert import schema_py_generated as schema
    ops = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith('_')}
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(content, 0))
    graph = model.subgraphs[0]
    producer = {t: op for op in graph.operators for t in op.outputs}

    def name(op) -> str:
        code = model.operatorCodes[op.opcodeIndex]
        return ops.get(max(code.builtinCode, code.deprecatedBuiltinCode), 'CUSTOM')
    return model, graph, producer, name


def _pack(model, size_hint: int) -> bytes:
    import flatbuffers
    builder = flatbuffers.Builder(size_hint + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b'TFL3')
    return bytes(builder.Output())


def expose_penultimate(content: bytes) -> PatchedModel:
    """Add the classifier's input (the embedding) to the model's outputs.

    The XNNPACK delegate keeps intermediate tensors internal, so the embedding
    can only be read if it is a model output. We walk back from the output through
    reshapes/softmax to the final CONV_2D or FULLY_CONNECTED op and append its input
    to the subgraph's outputs in the flatbuffer.
    """
    model, graph, producer, name = _read_graph(content)
    chain, embedding = _output_chain(graph, producer, name)
    ends_in_softmax = 'SOFTMAX' in chain
    if embedding is None:
        return PatchedModel(content, False, ends_in_softmax)
    graph.outputs = np.append(graph.outputs, embedding).astype(np.int32)
    return PatchedModel(_pack(model, len(content)), True, ends_in_softmax)


def _output_chain(graph, producer, name) -> tuple[list[str], int | None]:
    """The ops from the first output back through reshapes, softmax and (de)quantize to
    the classifier (CONV_2D or FULLY_CONNECTED): their names, and the classifier's input
    tensor (None when the walk meets another op first)."""
    tensor, chain = int(graph.outputs[0]), []
    while tensor in producer:
        op = producer[tensor]
        chain.append(name(op))
        if chain[-1] in _CLASSIFIER_OPS:
            return chain, int(op.inputs[0])
        if chain[-1] not in _PASSTHROUGH_OPS:
            break
        tensor = int(op.inputs[0])
    return chain, None


@dataclasses.dataclass(frozen=True)
class Scoring:
    """How a converted file's scores are read, as its conversion recorded it.

    `outputs`: what the run takes the model's outputs for, as TensorFlow resolved it when
    the file was made (None: not recorded; the graph decides). `softmax_moved`: the final
    softmax was taken out of the file's first output (`logits_instead_of_softmax`), which
    therefore emits that softmax's logits and is owed the softmax back.
    """
    outputs: str | None = None
    softmax_moved: bool = False


_SCORING = 'imagelabel scoring: '  # the prefix of a file description that holds a Scoring


def with_scoring(content: bytes, scoring: Scoring) -> bytes:
    """The file with `scoring` in its description (TFLite's free-text model description)."""
    model = _read_graph(content)[0]
    model.description = (_SCORING + json.dumps(dataclasses.asdict(scoring))).encode()
    return _pack(model, len(content))


def scoring_of(content: bytes) -> Scoring:
    """What the file's conversion recorded (`with_scoring`), or Scoring() if nothing."""
    from ai_edge_litert import schema_py_generated as schema
    text = (schema.Model.GetRootAsModel(content, 0).Description() or b'').decode(
        errors='replace')
    if not text.startswith(_SCORING):
        return Scoring()
    return Scoring(**json.loads(text[len(_SCORING):]))


def logits_instead_of_softmax(content: bytes) -> tuple[bytes, bool]:
    """Make the first output the logits a final SOFTMAX (and DEQUANTIZE) would take;
    (the file, whether it had such a softmax).

    A fully quantized softmax has an output scale of 1/256: every probability under
    0.002 reads as 0, so most of a 1000-class top-5 is zeros. The logits, quantized
    with their own range, keep the ranking; the runtime applies softmax in float32
    (the caller records it: `Scoring.softmax_moved`). A model whose output is not a
    softmax comes back unchanged.
    """
    model, graph, producer, name = _read_graph(content)
    tensor = int(graph.outputs[0])
    if tensor in producer and name(producer[tensor]) == 'DEQUANTIZE':
        tensor = int(producer[tensor].inputs[0])
    if tensor not in producer or name(producer[tensor]) != 'SOFTMAX':
        return content, False
    outputs = np.array(graph.outputs, np.int32)
    outputs[0] = int(producer[tensor].inputs[0])
    graph.outputs = outputs
    return _pack(model, len(content)), True


def ends_in_softmax(content: bytes) -> bool:
    """Whether the first output comes out of a SOFTMAX (through reshapes/dequantize)."""
    _, graph, producer, name = _read_graph(content)
    return 'SOFTMAX' in _output_chain(graph, producer, name)[0]


class TFLiteRuntime:
    """A .tflite classifier on LiteRT (float, uint8- or int8-quantized), one image per invoke.

    Quantized models with fixed-shape reshapes cannot be batch-resized under
    XNNPACK, and at batch 1 the interpreter already runs at full speed, so a batch
    is a loop of invokes, spread over an InterpreterPool (by default one
    single-threaded interpreter per core; see transforms.models.interpreters).
    """

    def __init__(self, spec: ModelSpec, *, threads: int | None = None,
                 interpreters: int | None = None):
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
        self.layout = choose_layout(interpreters, threads)
        try:
            self._pool = InterpreterPool(patched, self.layout)
        except Exception as e:  # noqa: BLE001 - one clear line
            raise ValueError(f'{spec.path} is not a loadable TFLite model: '
                             f'{str(e).splitlines()[0] if str(e) else type(e).__name__}') from e
        (inp,) = self._pool.first.get_input_details()
        if len(inp['shape']) != 4 or inp['shape'][-1] != 3:
            raise ValueError(f'{spec.name}: expected an image input (1, height, width, 3), '
                             f'got shape {list(inp["shape"])}')
        outs = self._pool.first.get_output_details()
        self._in = inp
        self._out = outs[0]
        self._emb = outs[-1] if has_embedding and len(outs) > 1 else None
        # uint8 models take raw pixels (their input scale is 1/128 around 128); others
        # (float, int8) take [-1, 1], quantized with the input tensor's own parameters.
        self._preprocess = PREPROCESSORS[spec.preprocess or (
            'raw' if inp['dtype'] == np.uint8 else 'inception')]
        kind = spec.outputs
        self.name = spec.name
        self.precision = 'float32'  # as requested; the file's own quantization is in model_id
        # What the file computes in, for summary.json's `precision`: a quantized file's
        # integer input type (uint8, int8), else float32. Not `precision`, which keys
        # model_id: a .tflite's model_id stays what earlier runs recorded.
        self.arithmetic = (np.dtype(inp['dtype']).name
                           if np.issubdtype(inp['dtype'], np.integer) else 'float32')
        self.input_size = (int(inp['shape'][1]), int(inp['shape'][2]))
        self.num_outputs = int(self._out['shape'][-1])
        self.embedding_dim = int(np.prod(self._emb['shape'][1:])) if self._emb else 0
        if kind == 'auto':
            if graph.ends_in_softmax is None:  # unknown graph: probe once
                probe = self._invoke(np.full((1, *self.input_size, 3), 128, np.uint8))[0]
                kind = 'probabilities' if looks_like_probabilities(probe) else 'logits'
            else:
                kind = 'probabilities' if graph.ends_in_softmax else 'logits'
        self.output_kind = kind
        self.description = (f'{spec.name}: TFLite {np.dtype(inp["dtype"]).name}, '
                            f'input {self.input_size[0]}x{self.input_size[1]}, {self.num_outputs} {kind}, '
                            f'embedding {self.embedding_dim}-d; {self.layout}')

    def _model_input(self, pixels: np.ndarray) -> np.ndarray:
        if self._preprocess is _raw:  # uint8 pixels: no copy (set_tensor makes the one)
            return np.asarray(pixels, self._in['dtype'])
        return quantize(self._preprocess(pixels.astype(np.float32)), self._in)

    def _invoke(self, pixels: Pixels) -> tuple[np.ndarray, np.ndarray]:
        """Raw (dequantized) outputs and embeddings, one invoke per image."""
        n = len(pixels)
        raw, *emb = self._pool.invoke_each(
            n, lambda i: self._model_input(one_image(pixels, i)), self._in,
            [self._out] + ([self._emb] if self._emb else []))
        return raw, emb[0] if emb else np.empty((n, 0), np.float32)

    def predict(self, pixels: Pixels) -> Scores:
        raw, emb = self._invoke(pixels)
        return Scores(softmax(raw) if self.output_kind == 'logits' else raw, emb)
