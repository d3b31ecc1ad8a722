"""What every runtime returns and promises, and the small pure helpers they share."""
from __future__ import annotations

from typing import NamedTuple, Protocol, Sequence, Union

import numpy as np

#: A batch of images: one (n, height, width, 3) uint8 array, or n (height, width, 3)
#: arrays. The runtimes that invoke one image at a time (LiteRT, OpenVINO) read them
#: where they are: stacking a batch of 32 MobileNet inputs took 7 ms, half of the
#: time between two model calls (bench/pool_probe.py, AMD EPYC Zen 3).
Pixels = Union[np.ndarray, Sequence[np.ndarray]]


def as_batch(pixels: Pixels) -> np.ndarray:
    """The batch as one array, for runtimes that take a batch tensor (Keras, SavedModel)."""
    return pixels if isinstance(pixels, np.ndarray) else np.stack(pixels)


def one_image(pixels: Pixels, i: int) -> np.ndarray:
    """Image i as a (1, height, width, 3) view, without copying the batch."""
    return pixels[i][np.newaxis]


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
    output_kind: str  # 'probabilities' or 'logits': what the run takes the model's outputs for
    precision: str    # the arithmetic really used (bf16 falls back to float32 without units)
    description: str

    def predict(self, pixels: Pixels) -> Scores: ...


def bucket_size(n: int, batch_size: int) -> int:
    """Fixed shape to pad n images to: the next power of two, capped at batch_size."""
    return min(1 << max(n - 1, 0).bit_length(), batch_size)


def looks_like_probabilities(scores: np.ndarray) -> bool:
    return bool(scores.min() >= 0 and np.allclose(scores.sum(axis=-1), 1.0, atol=1e-2))


def pick_outputs(widths: dict, num_classes: int) -> tuple | None:
    """(scores key, embedding key or None) among rank-2 outputs, by width.

    The scores are the one output as wide as the label set (or one wider: a background
    class); a single other output is the embedding. None if the scores are ambiguous.
    """
    scores = [k for k, width in widths.items() if width in (num_classes, num_classes + 1)]
    if len(scores) != 1:
        return None
    others = [k for k in widths if k != scores[0]]
    return scores[0], (others[0] if len(others) == 1 else None)
