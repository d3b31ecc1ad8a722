"""How far reduced precision moves a model's answers: int8 or bf16 against float32
(and a float32 conversion for LiteRT against TensorFlow's float32).

Pure functions on probability arrays; the launcher runs both models on a held-out
slice of the run's own images and stops the run when top-1 agreement is below
--min_agreement. Agreement only means something on trained weights: a random-weight
model's probabilities are nearly flat, so its top-1 is decided by noise at the
third decimal and any rounding reorders it (see README "int8").
"""
from __future__ import annotations

import dataclasses

import numpy as np

from transforms.models import float_litert


@dataclasses.dataclass(frozen=True)
class Agreement:
    """Reduced precision vs float32 on the same images."""
    precision: str         # 'int8', 'bf16', or 'float32-litert' (LiteRT vs TensorFlow)
    images: int
    top1: float            # fraction of images whose top-1 class is the same
    top5_overlap: float    # mean |top-5 ∩ top-5| / 5
    max_prob_diff: float   # the largest |p_low - p_float| over images and classes

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def measure(reference: np.ndarray, reduced: np.ndarray, precision: str) -> Agreement:
    """Agreement of `reduced` probabilities with `reference` (both (n, classes))."""
    if reference.shape != reduced.shape or reference.ndim != 2 or not len(reference):
        raise ValueError(f'cannot compare probabilities of shapes {reference.shape} and '
                         f'{reduced.shape}')
    k = min(5, reference.shape[1])
    top_ref = np.argsort(-reference, axis=1, kind='stable')[:, :k]
    top_low = np.argsort(-reduced, axis=1, kind='stable')[:, :k]
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(top_ref, top_low)])
    return Agreement(precision=precision, images=int(len(reference)),
                     top1=float(np.mean(top_ref[:, 0] == top_low[:, 0])),
                     top5_overlap=float(overlap),
                     max_prob_diff=float(np.max(np.abs(reference - reduced))))


#: The compared runtimes that are not a --precision: their flag, their reference, the way out.
_GATED = {float_litert.LABEL: ('--float_runtime litert', 'TensorFlow\'s float32',
                               'run on --float_runtime tensorflow')}


def _gated(precision: str) -> tuple[str, str, str]:
    """(the flag that chose it, what it is compared with, how to run without it)."""
    return _GATED.get(precision, (f'--precision {precision}', 'float32', 'run at float32'))


def describe(precision: str) -> str:
    """What was compared: 'int8 vs float32', "--float_runtime litert vs TensorFlow's float32"."""
    flag, reference, _ = _gated(precision)
    return f'{flag if precision in _GATED else precision} vs {reference}'


def check(agreement: Agreement, minimum: float) -> None:
    """ValueError (one line, how to fix) when top-1 agreement is below `minimum`."""
    if agreement.top1 < minimum:
        flag, reference, fix = _gated(agreement.precision)
        raise ValueError(
            f'{flag} agrees with {reference} on top-1 for only '
            f'{agreement.top1:.3f} of {agreement.images} held-out images (--min_agreement '
            f'{minimum}); {fix}, or lower --min_agreement if that is acceptable')
