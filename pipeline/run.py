"""The launcher's entry point: `python -m pipeline.run --input ... --output ...`.

Dataflow's Flex Template and `imagelabel run` both call `main`; the work lives
in `pipeline.launch`. This module only parses the command line: our flags, then
any Beam flag (a typo is an error, not a silently ignored option).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Sequence

from apache_beam.options import pipeline_options as beam_options

from pipeline.options import ImageLabelOptions, add_launcher_flags
from pipeline.usage import HelpFormatter, UsageError, raise_usage, setup_logging, usage_error


def parser() -> argparse.ArgumentParser:
    p = beam_options._BeamArgumentParser(  # noqa: SLF001 - supports Beam's value providers
        prog='imagelabel run', formatter_class=HelpFormatter, allow_abbrev=False,
        description='Label images with a Beam pipeline; write Parquet and/or BigQuery.',
        epilog='Any Beam pipeline option is accepted too, e.g. --runner DataflowRunner '
               '--project P --region R --temp_location gs://..., or '
               '--direct_running_mode multi_processing --direct_num_workers 2.')
    add_launcher_flags(p)
    p.error = raise_usage
    return p


def check_beam_flags(rest: Sequence[str]) -> None:
    """Anything our parser did not take must be a real Beam flag: typos are errors."""
    p = beam_options._BeamArgumentParser(allow_abbrev=False)  # noqa: SLF001
    seen = {}
    for cls in beam_options.PipelineOptions.__subclasses__():
        if cls is not ImageLabelOptions:
            seen.setdefault(str(cls), cls)
    for cls in seen.values():
        cls._add_argparse_args(p)  # noqa: SLF001
    _, unknown = p.parse_known_args(list(rest))
    flags = [a for a in unknown if a.startswith('--')]
    if flags:
        raise UsageError(f'unknown flag {flags[0]}; see imagelabel run --help')


_JOB_LABEL = re.compile(r'^[^=/]+=')  # key=value: no folder before the first '='


def is_job_label(value: str) -> bool:
    """Beam's `--labels` values: `key=value`, or the JSON form `{"key": "value"}`; a file
    that exists under a name like `k=v` is still a file."""
    return value.lstrip().startswith('{') or (
        bool(_JOB_LABEL.match(value)) and not os.path.exists(value))


def labels_alias(argv: Sequence[str]) -> list[str]:
    """`--labels FILE` means --labels_file; a Dataflow job label (`--labels key=value`,
    `--labels '{"key": "value"}'`) stays Beam's."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == '--labels' and i + 1 < len(out) and not is_job_label(out[i + 1]):
            out[i] = '--labels_file'
        elif arg.startswith('--labels=') and not is_job_label(arg[len('--labels='):]):
            out[i] = '--labels_file=' + arg[len('--labels='):]
    return out


def dry_run_alias(argv: Sequence[str]) -> list[str]:
    """A bare `--dry_run` means `--dry_run=true` (Beam's flag takes a value)."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == '--dry_run' and (i + 1 == len(out) or out[i + 1].startswith('-')):
            out[i] = '--dry_run=true'
    return out


def main(argv: Sequence[str] | None = None, *, started: float | None = None) -> int:
    """Parse, validate, run; print the summary. Exit 2 on bad input, 1 on a lost image.

    Without `argv` this is the process's own command: start-up counts from the
    process start (imports included). `started` overrides that clock.
    """
    if argv is None and started is None:  # `python -m pipeline.run`
        from pipeline import startup_gc
        from pipeline.clock import process_start_time
        startup_gc.pause()  # until the pipeline runs (pipeline.startup_gc says why)
        started = process_start_time()
    argv = dry_run_alias(labels_alias(sys.argv[1:] if argv is None else argv))
    if '-h' in argv or '--help' in argv:
        parser().print_help()
        return 0
    setup_logging()
    from pipeline.launch import execute, prepare  # imports TensorFlow: not for --help
    try:
        _, rest = parser().parse_known_args(list(argv))
        check_beam_flags(rest)
        launch = prepare(list(argv), started=started)
    except ValueError as e:  # a bad flag, input, model or output: the user's to fix
        return usage_error(e)
    summary = execute(launch)  # failures of the job itself keep their traceback
    if summary is None:
        return 0
    print(summary.render())
    return 0 if summary.balanced else 1


if __name__ == '__main__':
    sys.exit(main())
