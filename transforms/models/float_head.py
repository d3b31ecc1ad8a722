"""A Keras classifier's final Dense, run in float32 beside a converted backbone.

int8 (LiteRT and OpenVINO) and `--float_runtime litert` convert a Keras model only
up to its embedding; the final Dense runs here, in numpy, so probabilities are not
rounded to int8's 256 steps and the embedding is TensorFlow's layer. It must score
exactly as TensorFlow does (`transforms.models.keras.KerasRuntime`): the model's
own output, passed through softmax once more when `--model_outputs` takes it as
logits. So a head counts its softmaxes: the model's own (its Dense's activation,
or a Softmax layer after it) plus the one for logits. With `--model_outputs auto`
that is usually one; an explicit `--model_outputs` can make it 0 (a linear Dense
taken as probabilities) or 2 (a softmax taken as logits).

Stored as `key.head.npz` beside the converted model (kernel, bias, softmaxes). A
file written before `softmaxes` existed was always scored with one.
"""
from __future__ import annotations

import dataclasses
import io

import numpy as np

from transforms.models.runtime import softmax


@dataclasses.dataclass(frozen=True, eq=False)
class FloatHead:
    """`scores(embeddings)` = softmax applied `softmaxes` times to embeddings @ kernel + bias."""
    kernel: np.ndarray  # (embedding_dim, classes) float32
    bias: np.ndarray    # (classes,) float32
    softmaxes: int = 1

    @classmethod
    def of_dense(cls, kernel, bias, *, model_softmax: bool, output_kind: str) -> 'FloatHead':
        """The head of a model whose final Dense is (kernel, bias), scored as TensorFlow does.

        `model_softmax`: the model itself ends in a softmax. `output_kind`: what the run
        takes the model's outputs for ('logits' are passed through softmax, 'probabilities'
        are not).
        """
        if output_kind not in ('logits', 'probabilities'):
            raise ValueError(f'output_kind {output_kind!r}: logits or probabilities')
        return cls(np.asarray(kernel, np.float32), np.asarray(bias, np.float32),
                   int(model_softmax) + int(output_kind == 'logits'))

    @property
    def num_outputs(self) -> int:
        return int(self.kernel.shape[1])

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        out = embeddings @ self.kernel + self.bias
        for _ in range(self.softmaxes):
            out = softmax(out)
        return out.astype(np.float32)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, kernel=self.kernel, bias=self.bias, softmaxes=np.int8(self.softmaxes))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, raw: bytes) -> 'FloatHead':
        with np.load(io.BytesIO(raw)) as npz:
            softmaxes = int(npz['softmaxes']) if 'softmaxes' in npz.files else 1
            return cls(npz['kernel'], npz['bias'], softmaxes)
