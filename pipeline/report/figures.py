"""The report's figures as pure functions over column arrays (numpy/pyarrow, no I/O).

Vectorised so a million-row run takes well under a second here; the page and
`report.json` show exactly these values.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclasses.dataclass(frozen=True)
class Histogram:
    """Counts of top-1 scores in equal-width bins over [0, 1]."""
    edges: list[float]
    counts: list[int]

    def to_json(self) -> dict:
        return {'edges': self.edges, 'counts': self.counts}


@dataclasses.dataclass(frozen=True)
class LowConfidence:
    """Images whose top-1 score is below the threshold: the ones to look at first."""
    threshold: float
    images: int
    share: float

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def label_counts(top_labels: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    """Top label -> images, most frequent first (ties by name, so the order is stable)."""
    counts = pc.value_counts(top_labels).to_pylist()
    pairs = [(c['values'], int(c['counts'])) for c in counts if c['values'] is not None]
    return dict(sorted(pairs, key=lambda kv: (-kv[1], kv[0])))


def top1_scores(labels: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """labels[0].score of every row, as float64."""
    if len(labels) == 0:
        return np.zeros(0)
    first = pc.struct_field(pc.list_element(labels, 0), 'score')
    return np.asarray(first.to_numpy(zero_copy_only=False), dtype=np.float64)


def score_histogram(scores: np.ndarray, bins: int = 20) -> Histogram:
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts, _ = np.histogram(np.clip(scores, 0.0, 1.0), bins=edges)
    return Histogram([round(float(e), 6) for e in edges], [int(c) for c in counts])


def low_confidence(scores: np.ndarray, threshold: float) -> LowConfidence:
    n = int(np.count_nonzero(scores < threshold))
    return LowConfidence(threshold, n, n / len(scores) if len(scores) else 0.0)


def quotas(sizes: Sequence[int], budget: int) -> list[int]:
    """Tiles per label: all of a label when everything fits; else in proportion to size
    (largest remainder), with at least one per label while the budget allows (taken from
    the largest quotas), the most frequent labels first when it does not.
    """
    sizes = [int(s) for s in sizes]
    total = sum(sizes)
    if total <= budget:
        return sizes
    order = [i for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)) if sizes[i]]
    if len(order) >= budget:
        out = [0] * len(sizes)
        for i in order[:budget]:
            out[i] = 1
        return out
    exact = [budget * s / total for s in sizes]
    out = [int(x) for x in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - out[i]), -sizes[i], i))
    for i in by_remainder[:budget - sum(out)]:
        out[i] += 1
    for i in [i for i in order if out[i] == 0]:
        out[max(range(len(sizes)), key=lambda j: (out[j], -j))] -= 1
        out[i] = 1
    return out


def stratified_sample(codes: np.ndarray, budget: int, seed: int = 0) -> np.ndarray:
    """Row indices of a sample stratified by label code (see `quotas`), seeded so a report is
    reproducible; within a label the rows are a uniform random choice."""
    codes = np.asarray(codes)
    n = len(codes)
    if n <= budget:
        return np.arange(n)
    labels, inverse, sizes = np.unique(codes, return_inverse=True, return_counts=True)
    quota = np.asarray(quotas(sizes.tolist(), budget))
    keys = np.random.default_rng(seed).random(n)
    order = np.lexsort((keys, inverse))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    sorted_codes = inverse[order]
    rank = np.arange(n) - starts[sorted_codes]
    return np.sort(order[rank < quota[sorted_codes]])
