"""Drift between two runs' top-label distributions: pure functions, no I/O.

A scheduled job's quiet failure is a change in *what* it sees (a camera moved, a
feed switched, the model file changed), not a crash. The total variation
distance between the two runs' top-label shares is one number for an alert
(0 = the same distribution, 1 = nothing in common); the risers, fallers,
appeared and vanished labels say what changed.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping


@dataclasses.dataclass(frozen=True)
class Change:
    """One label's share in both runs, in share points (percentage points)."""
    label: str
    before: float   # share of the previous run's images, 0..1
    after: float    # share of this run's images, 0..1

    @property
    def points(self) -> float:
        return 100.0 * (self.after - self.before)

    def to_json(self) -> dict:
        return {'label': self.label, 'before': self.before, 'after': self.after,
                'points': self.points}


@dataclasses.dataclass(frozen=True)
class Drift:
    """How this run's top labels differ from a previous run's."""
    total_variation: float
    current_images: int
    previous_images: int
    risers: list[Change]
    fallers: list[Change]
    appeared: list[str]    # top labels of this run that the previous run never gave
    vanished: list[str]    # top labels of the previous run that this run never gives

    def to_json(self) -> dict:
        return {'total_variation': self.total_variation,
                'current_images': self.current_images, 'previous_images': self.previous_images,
                'risers': [c.to_json() for c in self.risers],
                'fallers': [c.to_json() for c in self.fallers],
                'appeared': self.appeared, 'vanished': self.vanished}


def shares(counts: Mapping[str, int]) -> dict[str, float]:
    """Counts -> shares that sum to 1. ValueError for an empty or negative histogram."""
    if any(v < 0 for v in counts.values()):
        raise ValueError('label counts cannot be negative')
    total = sum(counts.values())
    if total <= 0:
        raise ValueError('a run with no labeled image has no label distribution')
    return {k: v / total for k, v in counts.items() if v > 0}


def total_variation(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Half the L1 distance between two distributions over labels: in [0, 1].

    Summed exactly (fsum) in label order, so the value does not depend on the
    hash seed or on which run comes first.
    """
    keys = sorted(set(p) | set(q))
    return 0.5 * math.fsum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in keys)


def compare(current: Mapping[str, int], previous: Mapping[str, int], *, top: int = 10) -> Drift:
    """Drift of `current` label counts against `previous` ones.

    Risers and fallers are the `top` largest moves each way (ties by label name);
    `appeared` and `vanished` list every label present in one run only, most frequent first.
    """
    p, q = shares(current), shares(previous)
    changes = [Change(k, q.get(k, 0.0), p.get(k, 0.0)) for k in set(p) | set(q)]
    risers = sorted((c for c in changes if c.after > c.before),
                    key=lambda c: (-(c.after - c.before), c.label))[:top]
    fallers = sorted((c for c in changes if c.after < c.before),
                     key=lambda c: (c.after - c.before, c.label))[:top]
    appeared = sorted((k for k in p if k not in q), key=lambda k: (-p[k], k))
    vanished = sorted((k for k in q if k not in p), key=lambda k: (-q[k], k))
    return Drift(total_variation=min(1.0, total_variation(p, q)),
                 current_images=sum(current.values()), previous_images=sum(previous.values()),
                 risers=risers, fallers=fallers, appeared=appeared, vanished=vanished)
