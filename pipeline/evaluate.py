"""`imagelabel eval`: label a manifest of labeled images with the `run` pipeline, and score it.

Check a model (or a model plus `--head`) on your own labeled images before a big
run. The labels come from the very pipeline `run` uses (same read, decode,
resize recipe and model call), so the figures are the ones a run will get; eval
then joins the labels and errors tables with the manifest on `uri` and writes
`eval.json` (the machine interface) beside `summary.json`, in the date's partition
(an eval on another date does not overwrite it; a later run of the date removes it
with the rows it scored, and an eval writes its own).

The manifest is a CSV with a `uri` column and a true label per row: `label_index`
(the class index, 0-999 for ImageNet) or `label` (a class name of the model, or of
the head). Every row is checked before the job starts; a bad one is named by line.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import sys
from typing import Sequence

from apache_beam.io.filesystems import FileSystems

from pipeline.accuracy import EvalReport, evaluate
from pipeline.report.data import read_columns
from pipeline.summary import RunSummary
from pipeline.usage import UsageError, setup_logging, usage_error
from transforms.schema import ERRORS_SCHEMA, LABELS_SCHEMA
from transforms.sinks.layout import EVAL_FILE, partition_dir

TOP_K = 5
DESCRIPTION = ('Label a CSV manifest of labeled images (a uri column, and label_index or '
               'label) with the same pipeline as imagelabel run, then score it: top-1, top-5, '
               f'recall per class and the most frequent confusions, printed and in {EVAL_FILE} '
               'in --output. Every imagelabel run flag applies (--model, --resize, --head...).')


@dataclasses.dataclass(frozen=True)
class TruthRow:
    """One manifest row's true label, as written (checked against the classes later)."""
    line: int
    uri: str                 # resolved like the pipeline resolves it
    index: int | None = None
    label: str | None = None


def parse_truth(text: str, manifest: str) -> list[TruthRow]:
    """The manifest's labeled rows; ValueError naming the line of any row without a usable label."""
    from transforms.listing import resolve_relative
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in reader.fieldnames or []]
    reader.fieldnames = columns
    if 'uri' not in columns:
        raise ValueError(f'{manifest} has no "uri" column (columns: {columns})')
    if 'label_index' in columns:
        column = 'label_index'
    elif 'label' in columns:
        column = 'label'
    else:
        raise ValueError(f'{manifest} has no label_index or label column (columns: {columns}); '
                         'eval needs the true label of every image')
    rows = []
    for row in reader:
        uri, value = (row.get('uri') or '').strip(), (row.get(column) or '').strip()
        line = reader.line_num
        if not uri:
            if value:
                raise ValueError(f'{manifest} line {line}: a {column} without a uri')
            continue
        if not value:
            raise ValueError(f'{manifest} line {line}: {uri} has no {column}')
        resolved = resolve_relative(uri, manifest)
        if column == 'label':
            rows.append(TruthRow(line, resolved, label=value))
            continue
        try:
            rows.append(TruthRow(line, resolved, index=int(value)))
        except ValueError:
            raise ValueError(f'{manifest} line {line}: label_index {value!r} is not an '
                             'integer') from None
    if not rows:
        raise ValueError(f'{manifest} lists no labeled images')
    return rows


def resolve_truth(rows: Sequence[TruthRow], class_names: Sequence[str], manifest: str
                  ) -> dict[str, int]:
    """URI -> true class index; ValueError naming the line of an unknown or conflicting label."""
    by_name = {name: i for i, name in enumerate(class_names)}
    truth: dict[str, int] = {}
    first_line: dict[str, int] = {}
    for r in rows:
        if r.label is not None:
            if r.label not in by_name:
                raise ValueError(f'{manifest} line {r.line}: label {r.label!r} is not one of '
                                 f'the model\'s {len(class_names)} class names')
            index = by_name[r.label]
        else:
            index = r.index
            if not 0 <= index < len(class_names):
                raise ValueError(f'{manifest} line {r.line}: label_index {index} is outside '
                                 f'0..{len(class_names) - 1} (the model has '
                                 f'{len(class_names)} classes)')
        if r.uri in truth and truth[r.uri] != index:
            raise ValueError(f'{manifest} line {r.line}: {r.uri} is labeled again, differently '
                             f'from line {first_line[r.uri]}')
        truth.setdefault(r.uri, index)
        first_line.setdefault(r.uri, r.line)
    return truth


@dataclasses.dataclass
class Evaluation:
    """A finished eval: the run's summary, the figures, and what was evaluated."""
    summary: RunSummary
    report: EvalReport
    model: str
    model_id: str
    manifest: str
    resize: str
    head: str | None
    path: str              # where eval.json was written

    def to_json(self) -> dict:
        return {'model': self.model, 'model_id': self.model_id, 'manifest': self.manifest,
                'resize': self.resize, 'head': self.head,
                'run_id': self.summary.run_id} | self.report.to_json()

    def render(self) -> str:
        head = f' + head {self.head}' if self.head else ''
        return (f'imagelabel eval: {self.model}{head} on {self.manifest} ({self.resize} resize)\n'
                + self.report.render())


def evaluate_manifest(argv: Sequence[str]) -> Evaluation:
    """Validate, run the labeling pipeline over the manifest, score it, write eval.json.

    ValueError (one line) for anything wrong before the job starts. Used by `eval`
    and by `models --eval`.
    """
    from apache_beam.options.pipeline_options import PipelineOptions
    from pipeline.launch import clear_outputs, execute, is_local_runner, prepare
    from pipeline.options import dry_run_from
    from pipeline.run import check_beam_flags, dry_run_alias, labels_alias, parser
    from transforms.listing import read_text
    argv = dry_run_alias(labels_alias(argv))  # as `run` reads them
    args, rest = parser().parse_known_args(list(argv))
    check_beam_flags(rest)
    if not args.input or not args.input.lower().endswith('.csv'):
        raise UsageError('--input must be a CSV manifest with a uri column and a label_index '
                         'or label column')
    if not args.output:
        raise UsageError('--output is required: eval writes the labels, errors, summary.json '
                         f'and {EVAL_FILE} there')
    options = PipelineOptions(list(argv))
    if not is_local_runner(options):
        raise UsageError('eval runs on the local runner: it reads the labels back to score them')
    if dry_run_from(options):
        raise UsageError('eval runs the job to score it, which --dry_run would not; check the '
                         'flags with imagelabel run --dry_run')
    if not FileSystems.exists(args.input):
        raise UsageError(f'--input {args.input} does not exist')
    try:
        text = read_text(args.input)
    except (OSError, UnicodeDecodeError) as e:  # a folder named .csv, unreadable, not text
        raise UsageError(f'--input {args.input} cannot be read: {type(e).__name__}: '
                         f'{e}'.splitlines()[0]) from e
    rows = parse_truth(text, args.input)
    output_existed = FileSystems.exists(args.output)
    # Loads the model once (its class names check the labels); sinks that clear the date at
    # launch (BigQuery) do so only once the checks below pass too.
    launch = prepare(list(argv), clear=False)
    s, model = launch.settings, launch.model
    try:
        if s.top_k < min(TOP_K, len(model.labels)):
            raise UsageError(f'eval scores top-{TOP_K}: pass --top_k {TOP_K} or more')
        truth = resolve_truth(rows, model.labels, args.input)
    except ValueError:
        _remove_if_empty(args.output, output_existed)  # prepare made it; the job never ran
        raise
    clear_outputs(launch)
    summary = execute(launch)  # local: returns when the job is done
    # The Parquet files in --output (other sinks, e.g. a BigQuery table, may be listed too).
    labels = read_columns(_parquet(summary.outputs.get('labels', [])), ['uri', 'labels'],
                          LABELS_SCHEMA).to_pylist()
    errors = read_columns(_parquet(summary.outputs.get('errors', [])), ['uri'],
                          ERRORS_SCHEMA).to_pylist()
    predicted = {r['uri']: [x['index'] for x in r['labels']] for r in labels}
    report = evaluate(truth, predicted, (r['uri'] for r in errors), model.labels, k=TOP_K)
    result = Evaluation(summary, report, model=model.spec.name, model_id=model.model_id,
                        manifest=args.input, resize=s.resize.value, head=s.head,
                        path=FileSystems.join(partition_dir(s.output, s.run_date), EVAL_FILE))
    with FileSystems.create(result.path) as f:
        f.write(json.dumps(result.to_json(), indent=2).encode())
    return result


def _parquet(places: Sequence[str]) -> list[str]:
    return [p for p in places if p.endswith('.parquet')]


def _remove_if_empty(folder: str, existed: bool) -> None:
    """Undo the folders prepare made (the root and its empty run_date= partition)."""
    import os
    if existed or '://' in folder or not os.path.isdir(folder):
        return
    for root, _, _ in sorted(os.walk(folder), key=lambda w: -len(w[0])):
        if not os.listdir(root):
            os.rmdir(root)


def main(argv: Sequence[str]) -> int:
    """Print the run's summary and the eval table; exit 2 on bad input, 1 on a lost image."""
    argv = list(argv)
    if '-h' in argv or '--help' in argv:
        from pipeline.run import parser
        p = parser()
        p.prog = 'imagelabel eval'
        p.description = DESCRIPTION
        p.print_help()
        return 0
    setup_logging()
    try:
        result = evaluate_manifest(argv)
    except ValueError as e:
        return usage_error(e)
    print(result.summary.render())
    print(result.render())
    print(f'  eval    -> {result.path}')
    return 0 if result.summary.balanced else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
