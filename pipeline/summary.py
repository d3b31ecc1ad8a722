"""The end-of-run account, and `summary.json`: the machine interface of a run.

Tools, bench scripts and tests read `summary.json`, never the printed text,
so the printed lines can change for people without breaking programs.
"""
from __future__ import annotations

import dataclasses
import json

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline.agreement import describe
from transforms import metrics
from transforms.sinks.layout import SUMMARY_FILE, partition_dir



@dataclasses.dataclass
class RunSummary:
    """The end-of-run account: inputs = skipped + reused + labeled + errors, always."""
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
    storage_clients: int = 0
    run_date: str = ''
    skipped: int = 0
    reused: int = 0
    retried: int = 0
    outputs: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    # From launch to the first batch entering the model: imports, model load (and int8
    # conversion or its cache hit, and the agreement check), graph start. Launch is the
    # process start for `imagelabel run` (pipeline.clock), prepare() for an in-process call.
    startup_seconds: float | None = None
    # From the first batch entering the model to the end (outputs written): the run
    # without its start-up. labeled / labeling_seconds is its steady rate.
    labeling_seconds: float | None = None
    precision: str = 'float32'        # the arithmetic really used (bf16 may fall back)
    cpu: str = ''                     # the launcher's CPU model name
    cpu_units: list[str] = dataclasses.field(default_factory=list)  # AVX2, AVX512-VNNI, AMX...
    precision_hint: str | None = None  # a faster precision this CPU has, with its measured factor
    agreement: dict | None = None     # reduced precision vs float32 (pipeline.agreement)
    batch_size: int | None = None     # images per model call: --batch_size or the model's default

    @property
    def balanced(self) -> bool:
        return self.inputs == self.skipped + self.reused + self.labeled + self.errors

    @property
    def images_per_second(self) -> float:
        return self.inputs / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_images_per_second(self) -> float | None:
        """Labeled images per second once the first batch reached the model."""
        if not self.labeling_seconds or self.labeling_seconds <= 0:
            return None
        return self.labeled / self.labeling_seconds

    def render(self) -> str:
        classes = ', '.join(f'{k} {v}' for k, v in sorted(self.errors_by_class.items()))
        lines = [
            f'imagelabel run {self.run_id}' + (f' (run_date {self.run_date})'
                                                if self.run_date else ''),
            f'  model      {self.model} (model_id {self.model_id})',
            f'  inputs     {self.inputs}  (listed {self.listed}, duplicate URIs dropped '
            f'{self.listed - self.inputs})',
            *([f'  skipped    {self.skipped}  (unchanged since an earlier run)',
               f'  reused     {self.reused}  (content labeled before; rows copied)']
              if self.skipped or self.reused else []),
            *([f'  retried    {self.retried}  (an earlier transient failure, read again; '
               'now labeled, reused or an error)'] if self.retried else []),
            f'  labeled    {self.labeled}',
            f'  errors     {self.errors}' + (f'  ({classes})' if classes else ''),
            f'  retries    {self.read_retries} transient read failures retried',
            f'  time       {self.seconds:.1f} s, {self.images_per_second:.1f} images/s'
            + (f' (start-up {self.startup_seconds:.1f} s)' if self.startup_seconds is not None
               else '')
            + (f'; after start-up {self.steady_images_per_second:.1f} images/s'
               if self.steady_images_per_second else ''),
        ]
        if self.cpu:
            lines.append(f'  cpu        {self.cpu} ({", ".join(self.cpu_units) or "no AVX2"}); '
                         f'precision {self.precision}')
        if self.agreement:
            a = self.agreement
            lines.append(f'  agreement  {describe(a["precision"])} on {a["images"]} images: '
                         f'top-1 {a["top1"]:.3f}, top-5 overlap {a["top5_overlap"]:.3f}, '
                         f'max prob diff {a["max_prob_diff"]:.4f}')
        if self.precision_hint:
            lines.append(f'  hint       {self.precision_hint}')
        for table, places in self.outputs.items():
            lines.extend(f'  {table:<7} -> {place}' for place in places)
        if not self.balanced:
            lines.append(f'  MISMATCH: inputs {self.inputs} != skipped {self.skipped} + '
                         f'reused {self.reused} + labeled {self.labeled} + errors {self.errors}')
        return '\n'.join(lines)

    def to_json(self) -> dict:
        steady = self.steady_images_per_second
        return dataclasses.asdict(self) | {
            'images_per_second': self.images_per_second, 'balanced': self.balanced,
            'steady_images_per_second': round(steady, 3) if steady else None}


def counter_values(result) -> dict[str, int]:
    """Every imagelabel counter of a finished pipeline, by name."""
    counters = result.metrics().query(
        beam.metrics.MetricsFilter().with_namespace(metrics.NAMESPACE))['counters']
    by_name: dict[str, int] = {}
    for c in counters:
        by_name[c.key.metric.name] = by_name.get(c.key.metric.name, 0) + int(
            c.committed if c.committed is not None else c.attempted or 0)
    return by_name


def first_batch_unix_ms(result) -> int | None:
    """When the first batch entered the model, from the batch clock distribution."""
    dists = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(
        metrics.NAMESPACE).with_name(metrics.BATCH_START_UNIX_MS))['distributions']
    mins = [d.committed.min if d.committed is not None else d.attempted.min for d in dists
            if (d.committed or d.attempted) is not None]
    mins = [m for m in mins if m is not None]
    return min(mins) if mins else None


def summarize(counts: dict[str, int], *, run_id: str, model: str, model_id: str,
              seconds: float, outputs: dict[str, list[str]], run_date: str = '',
              **extra) -> RunSummary:
    """`extra`: the optional RunSummary fields (startup_seconds, precision, cpu, ...)."""
    return RunSummary(
        run_id=run_id, model=model, model_id=model_id,
        listed=counts.get(metrics.LISTED, 0), inputs=counts.get(metrics.INPUTS, 0),
        labeled=counts.get(metrics.LABELED, 0), errors=counts.get(metrics.ERRORS, 0),
        errors_by_class=metrics.errors_by_class(counts),
        read_retries=counts.get(metrics.READ_RETRIES, 0), seconds=seconds, outputs=outputs,
        storage_clients=counts.get(metrics.STORAGE_CLIENTS, 0), run_date=run_date,
        skipped=counts.get(metrics.SKIPPED, 0), reused=counts.get(metrics.REUSED, 0),
        retried=counts.get(metrics.RETRIED, 0), **extra)


def write_summary(summary: RunSummary, folder: str) -> str:
    """FOLDER/summary.json (a run's own partition, OUTPUT/run_date=D/)."""
    path = FileSystems.join(folder, SUMMARY_FILE)
    with FileSystems.create(path) as f:
        f.write(json.dumps(summary.to_json(), indent=2).encode())
    return path


def read_summary(output: str, run_date: str | None = None) -> dict:
    """summary.json of a finished run (local or gs://).

    `output` may be a run's own folder, or the --output root: then the run of
    `run_date`, or of the latest date there.
    """
    from transforms.storage import open_raw
    if run_date:
        path = FileSystems.join(partition_dir(output, run_date), SUMMARY_FILE)
    else:
        direct = FileSystems.join(output, SUMMARY_FILE)
        found = sorted(m.path for r in FileSystems.match(
            [FileSystems.join(output, 'run_date=*', SUMMARY_FILE)]) for m in r.metadata_list)
        path = direct if FileSystems.exists(direct) or not found else found[-1]
    with open_raw(path) as f:
        return json.loads(f.read())
