"""The launcher's model work: load once, (convert to int8,) check agreement, describe.

`load_model_facts` runs at launch, before any image is read: a bad model or a
reduced precision that disagrees with float32 fails here with one clear line.
It loads through the process-wide cache (`transforms.label.shared_labeled_model`),
so a DirectRunner worker in this process reuses the launcher's model.
"""
from __future__ import annotations

import time

from pipeline.graph import ModelFacts
from pipeline.options import Settings
from transforms.cpu import this_cpu
from transforms.label import shared_labeled_model
from transforms.models import resolve_spec


def load_model_facts(s: Settings) -> ModelFacts:
    """Load the model once in the launcher: a bad model fails here, before any image is read."""
    spec = resolve_spec(s.model, weights=s.weights, labels=s.labels, preprocess=s.preprocess,
                        outputs=s.model_outputs)
    model = shared_labeled_model(spec, batch_size=s.batch_size, precision=s.precision,
                                 threads=s.model_threads, recipe=s.resize.value)
    if s.top_k > model.num_classes:
        raise ValueError(f'--top_k {s.top_k} is more than the model\'s {model.num_classes} classes')
    return ModelFacts(spec=spec, input_size=model.runtime.input_size, labels=model.labels,
                      model_id=model.model_id, description=model.runtime.description,
                      precision=s.precision, precision_used=model.runtime.precision)


def summary_extras(result, started: float | None, model: ModelFacts) -> dict:
    """The RunSummary fields the launcher adds: start-up time, CPU, precision, agreement."""
    from pipeline.summary import first_batch_unix_ms
    first = first_batch_unix_ms(result)
    cpu = this_cpu()
    return dict(
        startup_seconds=(round(first / 1000 - started, 3) if first and started else None),
        precision=model.precision_used, cpu=cpu.model, cpu_units=cpu.units,
        agreement=model.agreement)


def now() -> float:
    """Wall-clock seconds: the start-up clock is compared with worker timestamps."""
    return time.time()
