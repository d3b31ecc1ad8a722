"""Accuracy figures as pure functions: top-k, recall per class, confusions, splits.

`imagelabel eval`, `imagelabel models --eval` and `imagelabel train-head` all
judge a classifier the way the tutorials do (top-1 and top-5 on labeled images,
a confusion matrix); the arithmetic lives here, free of I/O, so it is tested on
its own and cannot differ between the commands.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Iterable, Mapping, Sequence

import numpy as np

TOP_CONFUSIONS = 20


@dataclasses.dataclass(frozen=True)
class ClassRecall:
    index: int
    label: str
    images: int      # images of this class that got a labels row
    correct: int     # ... whose top-1 was this class
    errors: int      # images of this class that ended as error rows (or went missing)

    @property
    def recall(self) -> float | None:
        return self.correct / self.images if self.images else None


@dataclasses.dataclass(frozen=True)
class Confusion:
    true_index: int
    true_label: str
    predicted_index: int
    predicted_label: str
    count: int


@dataclasses.dataclass(frozen=True)
class EvalReport:
    """The figures of one evaluation; `top1`/`top5` over labeled images, `_all` over all.

    An image that failed (or has no row at all) counts as wrong in `top1_all` and
    `top5_all`, so a dataset that mostly fails to decode cannot look accurate.
    """
    count: int       # distinct manifest images with a true label
    labeled: int     # ... that got a labels row
    errors: int      # ... that got an errors row
    missing: int     # ... that got neither (never expected; reported, counted wrong)
    top1_hits: int
    top5_hits: int
    k: int           # the k of "top-5": 5, or fewer when there are fewer classes
    per_class: tuple[ClassRecall, ...]
    confusions: tuple[Confusion, ...]

    @property
    def top1(self) -> float | None:
        return self.top1_hits / self.labeled if self.labeled else None

    @property
    def top5(self) -> float | None:
        return self.top5_hits / self.labeled if self.labeled else None

    @property
    def top1_all(self) -> float | None:
        return self.top1_hits / self.count if self.count else None

    @property
    def top5_all(self) -> float | None:
        return self.top5_hits / self.count if self.count else None

    def to_json(self) -> dict:
        return {
            'count': self.count, 'labeled': self.labeled, 'errors': self.errors,
            'missing': self.missing, 'top1': self.top1, 'top5': self.top5,
            'top1_all': self.top1_all, 'top5_all': self.top5_all, 'top5_k': self.k,
            'per_class': [dataclasses.asdict(c) | {'recall': c.recall} for c in self.per_class],
            'confusions': [dataclasses.asdict(c) for c in self.confusions],
        }

    def render(self, *, confusions: int = 5) -> str:
        def pct(x: float | None) -> str:
            return '–' if x is None else f'{100 * x:.1f}%'
        worst = sorted((c for c in self.per_class if c.images), key=lambda c: (c.recall, c.index))
        lines = [
            f'  images     {self.count}  (labeled {self.labeled}, errors {self.errors}'
            + (f', missing {self.missing}' if self.missing else '') + ')',
            '             labeled   all images',
            f'  top-1      {pct(self.top1):>7}   {pct(self.top1_all):>7}',
            f'  top-{self.k}      {pct(self.top5):>7}   {pct(self.top5_all):>7}',
        ]
        if worst and worst[0].recall is not None and worst[0].recall < 1:
            lowest = ', '.join(f'{c.label} {pct(c.recall)}' for c in worst[:3])
            lines.append(f'  lowest recall  {lowest}')
        if self.confusions:
            lines.append('  most frequent confusions (true -> predicted)')
            lines.extend(f'  {c.count:>5}  {c.true_label} -> {c.predicted_label}'
                         for c in self.confusions[:confusions])
        return '\n'.join(lines)


def evaluate(truth: Mapping[str, int], predicted: Mapping[str, Sequence[int]],
             failed: Iterable[str], class_names: Sequence[str], *, k: int = 5,
             top_confusions: int = TOP_CONFUSIONS) -> EvalReport:
    """Score ranked predictions (best first) against true class indices, by URI.

    Predictions for URIs without a true label are ignored; a truth URI in `failed`
    is an error, one in neither mapping is missing. Both count wrong in the `_all` pair.
    """
    failed = set(failed)
    k = min(k, len(class_names))
    top1 = top5 = labeled = errors = missing = 0
    per = collections.defaultdict(lambda: [0, 0, 0])  # images, correct, errors
    confused: collections.Counter = collections.Counter()
    for uri, true in truth.items():
        ranked = predicted.get(uri)
        if ranked is None:
            if uri in failed:
                errors += 1
            else:
                missing += 1
            per[true][2] += 1
            continue
        labeled += 1
        per[true][0] += 1
        if len(ranked) and ranked[0] == true:
            top1 += 1
            per[true][1] += 1
        elif len(ranked):
            confused[(true, int(ranked[0]))] += 1
        if true in list(ranked)[:k]:
            top5 += 1
    per_class = tuple(ClassRecall(i, class_names[i], *per[i]) for i in sorted(per))
    ranked_confusions = sorted(confused.items(), key=lambda kv: (-kv[1], kv[0]))[:top_confusions]
    confusions = tuple(Confusion(t, class_names[t], p, class_names[p], n)
                       for (t, p), n in ranked_confusions)
    return EvalReport(count=len(truth), labeled=labeled, errors=errors, missing=missing,
                      top1_hits=top1, top5_hits=top5, k=k, per_class=per_class,
                      confusions=confusions)


def confusion_matrix(true: Sequence[int], predicted: Sequence[int], n: int) -> np.ndarray:
    """(n, n) counts: row = true class, column = predicted class."""
    m = np.zeros((n, n), np.int64)
    np.add.at(m, (np.asarray(true, np.int64), np.asarray(predicted, np.int64)), 1)
    return m


def majority_rate(labels: Sequence[int]) -> float:
    """The accuracy of always answering the most frequent class: the bar to beat."""
    if not len(labels):
        return 0.0
    return max(collections.Counter(labels).values()) / len(labels)


def stratified_split(labels: Sequence[int], test_fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices): each class split in the same proportion, seeded.

    Every class with at least two examples keeps at least one on each side, so the
    test split sees every class and training never misses one.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f'--test_fraction must be between 0 and 1, got {test_fraction}')
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        rng.shuffle(members)
        n_test = int(round(len(members) * test_fraction))
        n_test = min(max(n_test, 1), len(members) - 1) if len(members) >= 2 else 0
        test.extend(members[:n_test])
        train.extend(members[n_test:])
    return np.sort(np.asarray(train, np.int64)), np.sort(np.asarray(test, np.int64))
