"""Where a run's files live: one folder per run date, the tables' shards, summary.json
and eval.json beside them, and the hidden staging folder a run writes into first.

    OUTPUT/run_date=2026-11-23/labels-00000-of-00001.parquet
    OUTPUT/run_date=2026-11-23/errors-00000-of-00001.parquet
    OUTPUT/run_date=2026-11-23/summary.json
    OUTPUT/run_date=2026-11-23/.staging-RUN-TOKEN/   (while a run writes: sinks.staging)

Names and listings only (no rows, no pipeline): the sink, the launcher, the summary and the
tools that read a run all find its files through here.
"""
from __future__ import annotations

import re

from apache_beam.io.filesystems import FileSystems

from transforms.sinks.base import ERRORS, LABELS

SUFFIX = '.parquet'
#: The run's machine interface (pipeline.summary writes it into the run's partition).
SUMMARY_FILE = 'summary.json'
#: `imagelabel eval`'s scores of the date's rows (pipeline.evaluate writes it beside).
EVAL_FILE = 'eval.json'
#: A run's tables are written in DATE/.staging-TOKEN/, then moved in (`staging.publish_staged`).
STAGING_PREFIX = '.staging-'
PARTITION_KEY = 'run_date'
TABLES = (LABELS, ERRORS)
_STAGED = re.compile(rf'/{PARTITION_KEY}=[^/]+/{re.escape(STAGING_PREFIX)}')


def partition_dir(output: str, run_date: str) -> str:
    """OUTPUT/run_date=YYYY-MM-DD: where one date's files live."""
    return FileSystems.join(output, f'{PARTITION_KEY}={run_date}')


def output_pattern(folder: str, table: str) -> str:
    """FOLDER/labels-*.parquet: one run's shards of a table."""
    return FileSystems.join(folder, f'{table}-*{SUFFIX}')


def table_files(folder: str) -> dict[str, list[str]]:
    """Table name -> its shards in FOLDER, sorted."""
    return {table: sorted(m.path for r in FileSystems.match([output_pattern(folder, table)])
                          for m in r.metadata_list) for table in TABLES}


def partition_files(folder: str) -> list[str]:
    """The date's tables, summary.json and eval.json: what a run of the date writes (an
    eval, too), and replaces."""
    patterns = [output_pattern(folder, t) for t in TABLES] + [
        FileSystems.join(folder, name) for name in (SUMMARY_FILE, EVAL_FILE)]
    return [m.path for r in FileSystems.match(patterns) for m in r.metadata_list]


def staging_dir(folder: str, token: str) -> str:
    """Where a run writes its tables before they replace the date's: a dot-folder inside
    the date, which `--skip_existing`, `report` and one-level globs over the dates
    (`OUTPUT/*/labels-*.parquet`) do not reach."""
    return FileSystems.join(folder, f'{STAGING_PREFIX}{token}')


def is_staged(path: str) -> bool:
    """Whether a file lies in a date's staging folder: a run's, not yet in place, or one
    that failed. Readers that glob below a date (`**/labels-*.parquet`) leave it out.
    Only a folder right below a date counts: an --output named `.staging-x` is not one."""
    return _STAGED.search(path.replace('\\', '/')) is not None
