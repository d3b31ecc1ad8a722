"""Parquet files through Beam's `WriteToParquet`, with the one Arrow schema.

Beam's file sinks write to a temporary folder and rename on success, so a
crashed run never leaves `labels-*` files that look complete.
"""
from __future__ import annotations

import argparse
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import WriteToParquet

from transforms.schema import ERRORS_SCHEMA, LABELS_SCHEMA
from transforms.sinks.base import ERRORS, LABELS, RunInfo, Sink

SUFFIX = '.parquet'
SUMMARY_FILE = 'summary.json'
_SCHEMAS = {LABELS: LABELS_SCHEMA, ERRORS: ERRORS_SCHEMA}


def output_pattern(output_dir: str, table: str) -> str:
    """DIR/labels-*.parquet: one run's shards of a table."""
    return FileSystems.join(output_dir, f'{table}-*{SUFFIX}')


def to_parquet_row(row: dict[str, Any]) -> dict[str, Any]:
    """The common row, as pyarrow takes it: float32 arrays as lists of Python floats."""
    out = dict(row)
    emb = out.get('embedding')
    if isinstance(emb, np.ndarray):
        out['embedding'] = emb.astype(np.float32).tolist()
    return out


class ParquetSink(Sink):
    """DIR/labels-SSSSS-of-NNNNN.parquet and DIR/errors-... (a run with no errors writes an empty file)."""

    enabling_flag = '--output'

    def __init__(self, output: str, *, overwrite: bool = False, run_id: str = 'run',
                 num_shards: int = 0):
        super().__init__()
        self.output = output.rstrip('/') or '/'
        self._overwrite = overwrite
        self._run_id = run_id
        self._num_shards = num_shards

    @classmethod
    def add_flags(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            '--output', help='Output directory (local or gs://) for labels-*.parquet, '
            'errors-*.parquet and summary.json.')
        parser.add_argument('--overwrite', action='store_true', default=False,
                            help='Replace the outputs of an earlier run in --output '
                            '(refused otherwise).')

    @classmethod
    def from_options(cls, flags: Any, run: RunInfo) -> 'ParquetSink | None':
        if not flags.output:
            return None
        return cls(flags.output, overwrite=bool(flags.overwrite), run_id=run.run_id)

    def describe(self) -> str:
        return f'Parquet in {self.output}'

    def _existing(self) -> list[str]:
        patterns = [output_pattern(self.output, t) for t in _SCHEMAS] + [
            FileSystems.join(self.output, SUMMARY_FILE)]
        return [m.path for r in FileSystems.match(patterns) for m in r.metadata_list]

    def prepare(self) -> None:
        """Refuse to mix runs in one directory unless --overwrite; check it is writable."""
        existing = self._existing()
        if existing and not self._overwrite:
            raise ValueError(f'--output {self.output} already holds a run ({len(existing)} '
                             f'files, e.g. {existing[0]}); pass --overwrite to replace it, '
                             'or pick a new directory')
        try:
            FileSystems.mkdirs(self.output)
        except Exception:  # noqa: BLE001 - "already exists" is fine; the probe below decides
            pass
        probe = FileSystems.join(self.output, f'.imagelabel-write-test-{self._run_id}')
        try:
            FileSystems.create(probe).close()
            FileSystems.delete([probe])
        except Exception as e:  # noqa: BLE001
            raise ValueError(f'--output {self.output} is not writable: '
                             f'{type(e).__name__}: {e}') from e
        if existing:
            FileSystems.delete(existing)

    def written(self) -> dict[str, list[str]]:
        return {table: sorted(m.path for r in FileSystems.match(
            [output_pattern(self.output, table)]) for m in r.metadata_list)
            for table in _SCHEMAS}

    def expand(self, tables):
        for table, schema in _SCHEMAS.items():
            _ = (tables[table]
                 | f'{table.title()}ToArrow' >> beam.Map(to_parquet_row)
                 | f'Write{table.title()}Parquet' >> WriteToParquet(
                     FileSystems.join(self.output, table), schema, file_name_suffix=SUFFIX,
                     num_shards=self._num_shards, record_batch_size=256))
