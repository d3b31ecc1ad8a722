"""Launch a labeling run: validate everything cheap first, then run the graph.

`prepare` checks flags, input, model and outputs, and raises ValueError (one
clear line) for anything the user must fix, before any worker starts. `execute`
runs the prepared job and writes `summary.json`.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TestOptions

from pipeline import startup_gc
from pipeline.graph import ModelFacts, build
from pipeline.options import Settings, settings_from, sinks_from
from pipeline.summary import RunSummary, counter_values, summarize, write_summary
from pipeline.clock import now
from pipeline.model_prep import load_model_facts, summary_extras
from transforms.gcp import configure_emulators
from transforms.models import REGISTRY
from transforms.models.formats import batch_size_for
from transforms.listing import check_output_outside, validate_source
from transforms.sinks import Sink
from transforms.sinks.layout import partition_dir
from transforms.sinks.parquet import earlier_runs

_log = logging.getLogger('imagelabel')


@dataclasses.dataclass
class Launch:
    """A validated job, ready to run: everything that can be checked before it starts."""
    options: PipelineOptions
    settings: Settings
    model: ModelFacts
    sinks: list[Sink]
    local: bool
    started: float | None = None  # wall clock at launch: summary.json's start-up time


def is_local_runner(options: PipelineOptions) -> bool:
    runner = str(options.view_as(StandardOptions).runner or 'DirectRunner')
    return 'Direct' in runner or 'Prism' in runner


def _check_paths_reach_workers(s: Settings) -> None:
    """On a remote runner, workers cannot read the launcher's local files."""
    paths = {'--input': s.input, '--output': s.output, '--labels_file': s.labels,
             '--weights': s.weights, '--model': None if s.model in REGISTRY else s.model,
             '--head': s.head}
    local = [f'{flag} {path}' for flag, path in paths.items() if path and '://' not in path]
    if local:
        raise ValueError(f'{local[0]} is a local path, which workers on a remote runner '
                         'cannot read; use a gs:// URI')


def prepare(argv: Sequence[str] | None = None, *, started: float | None = None,
            clear: bool = True) -> Launch:
    """Validate flags, input, model and outputs; ValueError (one clear line) if anything is off.

    `started`: when the launch began (the process start, for `imagelabel run`);
    summary.json's start-up runs from it to the first batch. Default: now.
    `clear=False`: leave the date's partitions as they are, for a caller with checks of
    its own to make first; it calls `clear_outputs` once they pass.
    """
    configure_emulators()  # a malformed STORAGE/BIGQUERY_EMULATOR_HOST is a one-line error
    started = now() if started is None else started
    options = PipelineOptions(argv)
    s = settings_from(options)
    options.view_as(TestOptions).dry_run = s.dry_run  # Beam's runners see a bool, not 'false'
    local = is_local_runner(options)
    if not local:
        _check_paths_reach_workers(s)
    sinks = sinks_from(options, s, local=local)
    validate_source(s.input)
    check_output_outside(s.input, s.output)
    model = load_model_facts(s, local=local)
    if not s.dry_run:  # a dry run creates and deletes nothing
        for sink in sinks:  # all checked before any is cleared: a refusal deletes nothing
            sink.check()
    launch = Launch(options, s, model, sinks, local, started)
    if clear:
        clear_outputs(launch)
    return launch


def clear_outputs(launch: Launch) -> None:
    """Empty what the run replaces in sinks that clear at launch (BigQuery's date partition;
    the Parquet sink replaces its files at the job's end), once every check has passed.

    Sinks whose clear may still be refused (a remote DELETE) go first, so such a refusal
    costs no other sink its rows.
    """
    if launch.settings.dry_run:
        return
    for sink in sorted(launch.sinks, key=lambda sink: not sink.clear_may_fail):
        sink.clear()


def execute(launch: Launch) -> RunSummary | None:
    """Run a prepared job; return the summary (None on a remote runner: not waited for)."""
    s, model = launch.settings, launch.model
    _log.info('labeling %s with %s -> %s (run %s)', s.input, model.description,
              ', '.join(sink.describe() for sink in launch.sinks), s.run_id)
    start = time.monotonic()
    p = beam.Pipeline(options=launch.options)
    earlier = earlier_runs(s.output, s.run_date) if s.skip_existing else None
    if earlier is not None:
        _log.info('--skip_existing: comparing with %d labels and %d errors files of earlier '
                  'dates', len(earlier.labels), len(earlier.errors))
    build(p, s, model, launch.sinks, earlier=earlier,
          progress_every_s=10.0 if launch.local else None)
    startup_gc.resume()  # the launch is over; the run collects garbage as usual
    if s.dry_run:
        _log.info('dry run: %s', dry_run_check(p))
        return None
    result = p.run()
    if not launch.local:
        _log.info('submitted; the job runs on %s', launch.options.view_as(StandardOptions).runner)
        return None
    result.wait_until_finish()
    outputs: dict[str, list[str]] = {}
    for sink in launch.sinks:
        for table, places in sink.written().items():
            outputs.setdefault(table, []).extend(places)
    summary = summarize(counter_values(result), run_id=s.run_id, model=model.spec.name,
                        model_id=model.model_id, seconds=time.monotonic() - start,
                        outputs=outputs, run_date=s.run_date,
                        batch_size=batch_size_for(model.spec, s.batch_size),
                        **summary_extras(result, launch.started, model))
    if s.output:
        write_summary(summary, partition_dir(s.output, s.run_date))
    return summary


def dry_run_check(p: beam.Pipeline) -> str:
    """Serialize the built graph as a runner would (every DoFn pickled) and read it back."""
    proto = p.to_runner_api()
    beam.Pipeline.from_runner_api(proto, p.runner, p.options)
    steps = sum(1 for t in proto.components.transforms.values() if not t.subtransforms)
    return f'the job graph ({steps} steps) was built and validated; nothing was run'


def run(argv: Sequence[str] | None = None) -> RunSummary | None:
    """Validate, build and run the job (the library entry point)."""
    return execute(prepare(argv))
