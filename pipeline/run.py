"""Launch a labeling run: validate everything cheap first, then run the graph.

`python -m pipeline.run --input ... --output ...` (the form Dataflow and the Flex
Template use) and `imagelabel run ...` both land in `run()`.
"""
from __future__ import annotations

import dataclasses
import gc
import json
import logging
import sys
import time
from typing import Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline.graph import ModelFacts, build
from pipeline.options import Settings, settings_from
from transforms.label import load_labeled_model
from transforms.models import REGISTRY, resolve_spec
from transforms.errors import NAMESPACE
from transforms.read import validate_source
from transforms.sinks import ERRORS_PREFIX, LABELS_PREFIX, output_pattern

_log = logging.getLogger('imagelabel')
SUMMARY_FILE = 'summary.json'


@dataclasses.dataclass
class RunSummary:
    """The end-of-run account: inputs = labeled + errors, always."""
    run_id: str
    model: str
    model_id: str
    listed: int
    inputs: int
    labeled: int
    errors: int
    errors_by_class: dict[str, int]
    read_retries: int
    seconds: float
    label_files: list[str]
    error_files: list[str]

    @property
    def balanced(self) -> bool:
        return self.inputs == self.labeled + self.errors

    @property
    def images_per_second(self) -> float:
        return self.inputs / self.seconds if self.seconds > 0 else 0.0

    def render(self) -> str:
        classes = ', '.join(f'{k} {v}' for k, v in sorted(self.errors_by_class.items()))
        lines = [
            f'imagelabel run {self.run_id}',
            f'  model      {self.model} (model_id {self.model_id})',
            f'  inputs     {self.inputs}  (listed {self.listed}, duplicate URIs dropped '
            f'{self.listed - self.inputs})',
            f'  labeled    {self.labeled}',
            f'  errors     {self.errors}' + (f'  ({classes})' if classes else ''),
            f'  retries    {self.read_retries} transient read failures retried',
            f'  time       {self.seconds:.1f} s, {self.images_per_second:.1f} images/s',
            *[f'  labels  -> {f}' for f in self.label_files],
            *[f'  errors  -> {f}' for f in self.error_files],
        ]
        if not self.balanced:
            lines.append(f'  MISMATCH: inputs {self.inputs} != labeled {self.labeled} + '
                         f'errors {self.errors}')
        return '\n'.join(lines)


def load_model_facts(s: Settings) -> ModelFacts:
    """Load the model once in the launcher: a bad model fails here, before any image is read."""
    spec = resolve_spec(s.model, weights=s.weights, labels=s.labels, preprocess=s.preprocess,
                        outputs=s.model_outputs)
    model = load_labeled_model(spec, batch_size=s.batch_size, precision=s.precision,
                               threads=s.model_threads, recipe=s.resize.value)
    if s.top_k > model.num_classes:
        raise ValueError(f'--top_k {s.top_k} is more than the model\'s {model.num_classes} classes')
    facts = ModelFacts(spec=spec, input_size=model.runtime.input_size, labels=model.labels,
                       model_id=model.model_id, description=model.runtime.description)
    del model
    gc.collect()
    return facts


def _existing_outputs(output: str) -> list[str]:
    patterns = [output_pattern(output, LABELS_PREFIX), output_pattern(output, ERRORS_PREFIX),
                FileSystems.join(output, SUMMARY_FILE)]
    return [m.path for r in FileSystems.match(patterns) for m in r.metadata_list]


def prepare_output(s: Settings) -> None:
    """Refuse to mix runs in one directory unless --overwrite; check it is writable."""
    existing = _existing_outputs(s.output)
    if existing and not s.overwrite:
        raise ValueError(f'--output {s.output} already holds a run ({len(existing)} files, e.g. '
                         f'{existing[0]}); pass --overwrite to replace it, or pick a new directory')
    try:
        FileSystems.mkdirs(s.output)
    except Exception:  # noqa: BLE001 - "already exists" is fine; the probe below decides
        pass
    probe = FileSystems.join(s.output, f'.imagelabel-write-test-{s.run_id}')
    try:
        FileSystems.create(probe).close()
        FileSystems.delete([probe])
    except Exception as e:  # noqa: BLE001
        raise ValueError(f'--output {s.output} is not writable: {type(e).__name__}: {e}') from e
    if existing:
        FileSystems.delete(existing)


def summarize(result, s: Settings, model: ModelFacts, seconds: float) -> RunSummary:
    counters = result.metrics().query(
        beam.metrics.MetricsFilter().with_namespace(NAMESPACE))['counters']
    by_name: dict[str, int] = {}
    for c in counters:
        by_name[c.key.metric.name] = by_name.get(c.key.metric.name, 0) + int(
            c.committed if c.committed is not None else c.attempted or 0)
    classes = {k[len('errors_'):].replace('_', '/', 1): v for k, v in by_name.items()
               if k.startswith('errors_') and v}

    def files(prefix: str) -> list[str]:
        return sorted(m.path for r in FileSystems.match([output_pattern(s.output, prefix)])
                      for m in r.metadata_list)

    return RunSummary(
        run_id=s.run_id, model=model.spec.name, model_id=model.model_id,
        listed=by_name.get('listed', 0), inputs=by_name.get('inputs', 0),
        labeled=by_name.get('labeled', 0), errors=by_name.get('errors', 0),
        errors_by_class=classes, read_retries=by_name.get('read_retries', 0), seconds=seconds,
        label_files=files(LABELS_PREFIX), error_files=files(ERRORS_PREFIX))


def write_summary(summary: RunSummary, output: str) -> None:
    data = dataclasses.asdict(summary) | {'images_per_second': summary.images_per_second}
    with FileSystems.create(FileSystems.join(output, SUMMARY_FILE)) as f:
        f.write(json.dumps(data, indent=2).encode())


@dataclasses.dataclass
class Launch:
    """A validated job, ready to run: everything that can be checked before it starts."""
    options: PipelineOptions
    settings: Settings
    model: ModelFacts
    local: bool


def _is_local_runner(options: PipelineOptions) -> bool:
    runner = str(options.view_as(StandardOptions).runner or 'DirectRunner')
    return 'Direct' in runner or 'Prism' in runner


def _check_paths_reach_workers(s: Settings) -> None:
    """On a remote runner, workers cannot read the launcher's local files."""
    paths = {'--input': s.input, '--output': s.output, '--labels_file': s.labels,
             '--weights': s.weights, '--model': None if s.model in REGISTRY else s.model}
    local = [f'{flag} {path}' for flag, path in paths.items() if path and '://' not in path]
    if local:
        raise ValueError(f'{local[0]} is a local path, which workers on a remote runner '
                         'cannot read; use a gs:// URI')


def prepare(argv: Sequence[str] | None = None) -> Launch:
    """Validate flags, input, model and output; ValueError (one clear line) if anything is off."""
    options = PipelineOptions(argv)
    s = settings_from(options)
    local = _is_local_runner(options)
    if not local:
        _check_paths_reach_workers(s)
    validate_source(s.input)
    model = load_model_facts(s)
    prepare_output(s)
    return Launch(options, s, model, local)


def execute(launch: Launch) -> RunSummary | None:
    """Run a prepared job; return the summary (None on a remote runner: not waited for)."""
    s, model = launch.settings, launch.model
    _log.info('labeling %s with %s -> %s (run %s)', s.input, model.description, s.output,
              s.run_id)
    start = time.monotonic()
    p = beam.Pipeline(options=launch.options)
    build(p, s, model, progress_every_s=10.0 if launch.local else None)
    result = p.run()
    if not launch.local:
        _log.info('submitted; the job runs on %s', launch.options.view_as(StandardOptions).runner)
        return None
    result.wait_until_finish()
    summary = summarize(result, s, model, time.monotonic() - start)
    write_summary(summary, s.output)
    return summary


def run(argv: Sequence[str] | None = None) -> RunSummary | None:
    """Validate, build and run the job (the library entry point)."""
    return execute(prepare(argv))


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.cli import main as cli_main
    return cli_main(['run', *(sys.argv[1:] if argv is None else argv)])


if __name__ == '__main__':
    sys.exit(main())
