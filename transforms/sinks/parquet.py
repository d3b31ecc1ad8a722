"""Parquet files through Beam's Parquet file sink, one Hive partition per run date.

    OUTPUT/run_date=2026-11-23/labels-00000-of-00001.parquet
    OUTPUT/run_date=2026-11-23/errors-00000-of-00001.parquet
    OUTPUT/run_date=2026-11-23/summary.json

DuckDB (`hive_partitioning=true`) and BigQuery external tables read `run_date`
from the path. Re-running a date replaces that date's partition and nothing
else, so a retried scheduled run leaves no duplicate rows. A run writes both tables
into a hidden staging folder of the date (Beam's file sink: temporary files, renamed
once each table is complete) and moves them in once both are written, deleting the
earlier run's files then (`transforms.sinks.staging`), so a re-run that fails before that
leaves the date as the earlier run left it. A run that failed may leave complete
`labels-*` files in its staging folder: one-level globs (`OUTPUT/*/labels-*.parquet`)
do not reach them, `**` does (`layout.is_staged` tells them apart).
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import uuid
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import filebasedsink, parquetio
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow, GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

from transforms.schema import ERRORS_SCHEMA, LABELS_SCHEMA
from transforms.sinks.base import ERRORS, LABELS, RunInfo, Sink
from transforms.sinks.layout import (PARTITION_KEY, SUFFIX, SUMMARY_FILE, output_pattern,
                                     partition_dir, staging_dir, table_files)
from transforms.sinks.staging import PublishStaged

_SCHEMAS = {LABELS: LABELS_SCHEMA, ERRORS: ERRORS_SCHEMA}
_PARTITION = re.compile(r'/run_date=(\d{4}-\d{2}-\d{2})/')


def dictionary_columns(schema: pa.Schema, *, compliant_nested_types: bool = False) -> list[str]:
    """The Parquet columns (leaf paths) to dictionary-encode: all but floating-point ones.

    Embeddings and scores hardly repeat, so Parquet's default (try a dictionary,
    fall back to plain when it grows too large) was wasted work and left a
    dictionary page behind: for 1280-d embeddings, 0.098 ms per row and 7.8 MB
    per 1024 rows, against 0.018 ms and 5.4 MB without (AMD EPYC Zen 3). URIs,
    labels and ids still get dictionaries. The paths name list items as the
    writer will: `embedding.list.item` as Beam's sink writes them by default,
    `embedding.list.element` with compliant nested types (pyarrow ignores a
    path that matches nothing, so a wrong name would only lose a dictionary).
    """
    def leaves(path: str, kind: pa.DataType):
        if (pa.types.is_list(kind) or pa.types.is_large_list(kind)
                or pa.types.is_fixed_size_list(kind)):
            item = 'element' if compliant_nested_types else kind.value_field.name
            yield from leaves(f'{path}.list.{item}', kind.value_type)
        elif pa.types.is_struct(kind):
            for field in kind:
                yield from leaves(f'{path}.{field.name}', field.type)
        elif not pa.types.is_floating(kind):
            yield path
    return [path for field in schema for path in leaves(field.name, field.type)]


class _PlainFloatsParquetSink(parquetio._ParquetSink):  # noqa: SLF001 - only open() changes
    """Beam's Parquet sink, writing floating-point columns without a dictionary."""

    def open(self, temp_path):
        self._file_handle = filebasedsink.FileBasedSink.open(self, temp_path)
        return pq.ParquetWriter(
            self._file_handle, self._schema, compression=self._codec,
            use_deprecated_int96_timestamps=self._use_deprecated_int96_timestamps,
            use_compliant_nested_type=self._use_compliant_nested_type,
            use_dictionary=dictionary_columns(
                self._schema, compliant_nested_types=self._use_compliant_nested_type))


class WriteParquetTables(beam.PTransform):
    """What Beam's `WriteToParquetBatched` does for a bounded input (Arrow tables in,
    one row group each), with floating-point columns written plain (`dictionary_columns`)."""

    def __init__(self, file_path_prefix: str, schema: pa.Schema, *, file_name_suffix: str,
                 num_shards: int):
        super().__init__()
        self._sink = _PlainFloatsParquetSink(  # WriteToParquetBatched's own defaults
            file_path_prefix=file_path_prefix, schema=schema, codec='none',
            use_deprecated_int96_timestamps=False, use_compliant_nested_type=False,
            file_name_suffix=file_name_suffix, num_shards=num_shards, shard_name_template=None,
            mime_type='application/x-parquet', triggering_frequency=None)

    def expand(self, tables):
        return tables | 'Write' >> beam.io.Write(self._sink)


def sample_files(output: str) -> list[str]:
    """Files like those a run writes under OUTPUT (one date's first shards and summary):
    what an --input must not list (`listing.check_output_outside`)."""
    folder = partition_dir(output, '2000-01-01')
    return [FileSystems.join(folder, f'{table}-00000-of-00001{SUFFIX}') for table in _SCHEMAS] + [
        FileSystems.join(folder, SUMMARY_FILE)]


@dataclasses.dataclass(frozen=True)
class EarlierRuns:
    """The files of the partitions dated before this run's (what --skip_existing reads)."""
    labels: list[str]
    errors: list[str]


def earlier_runs(output: str, run_date: str) -> EarlierRuns:
    """List (names only, no rows) the labels and errors files of earlier dates."""
    found: dict[str, list[str]] = {}
    for table in _SCHEMAS:
        pattern = output_pattern(FileSystems.join(output, f'{PARTITION_KEY}=*'), table)
        paths = [m.path for r in FileSystems.match([pattern]) for m in r.metadata_list]
        found[table] = sorted(p for p in paths if (m := _PARTITION.search(p.replace('\\', '/')))
                              and m.group(1) < run_date)
    return EarlierRuns(found[LABELS], found[ERRORS])


def _float_lists(values: list[Any], type_: pa.DataType) -> pa.Array:
    """Embeddings (numpy arrays, or lists from an earlier run's rows) as one Arrow list
    column, copied as one float32 block: a list of Python floats per row cost more
    than everything else the sink does."""
    arrays = [np.asarray(v, np.float32).reshape(-1) for v in values]
    offsets = np.zeros(len(arrays) + 1, np.int32)
    np.cumsum([a.size for a in arrays], out=offsets[1:])
    flat = np.concatenate(arrays) if arrays else np.zeros(0, np.float32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat), type=type_)


def rows_to_batch(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
    """Common rows -> one Arrow record batch of `schema`; a missing nullable field is null."""
    columns = []
    for field in schema:
        values = [row.get(field.name) for row in rows]
        if pa.types.is_list(field.type) and pa.types.is_float32(field.type.value_type):
            columns.append(_float_lists(values, field.type))
        else:
            columns.append(pa.array(values, type=field.type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


class RowsToArrowTables(beam.DoFn):
    """Common rows -> Arrow tables of about `row_group_bytes` (one Parquet row group each).

    What Beam's WriteToParquet does inside (_RowDictionariesToArrowTable), but with
    columns built from numpy (rows_to_batch) instead of per-row Python lists.
    """

    def __init__(self, schema: pa.Schema, *, batch_rows: int = 256,
                 row_group_bytes: int = 64 * 1024 * 1024):
        self._schema = schema
        self._batch_rows = batch_rows
        self._row_group_bytes = row_group_bytes

    def start_bundle(self):
        self._rows: list[dict[str, Any]] = []
        self._batches: list[pa.RecordBatch] = []
        self._bytes = 0
        self._window = None

    def process(self, row: dict[str, Any], window=beam.DoFn.WindowParam):
        self._window = window
        self._rows.append(row)
        if len(self._rows) >= self._batch_rows:
            self._flush_rows()
            if self._bytes >= self._row_group_bytes:
                yield self._table()

    def finish_bundle(self):
        self._flush_rows()
        if not self._batches:
            return
        table = self._table()
        if self._window is None or isinstance(self._window, GlobalWindow):
            yield GlobalWindows.windowed_value_at_end_of_window(table)
        else:
            yield WindowedValue(table, self._window.max_timestamp(), [self._window])

    def _flush_rows(self) -> None:
        if self._rows:
            batch = rows_to_batch(self._rows, self._schema)
            self._batches.append(batch)
            self._bytes += batch.nbytes
            self._rows = []

    def _table(self) -> pa.Table:
        table = pa.Table.from_batches(self._batches, schema=self._schema)
        self._batches, self._bytes = [], 0
        return table


class ParquetSink(Sink):
    """OUTPUT/run_date=D/labels-SSSSS-of-NNNNN.parquet and errors-... (a run with no errors
    writes an empty file)."""

    enabling_flag = '--output'

    def __init__(self, output: str, *, run_date: str, run_id: str = 'run', num_shards: int = 0):
        super().__init__()
        self.output = output.rstrip('/') or '/'
        self.run_date = run_date
        self.folder = partition_dir(self.output, run_date)
        self._run_id = run_id
        # Fixed when the launcher builds the graph, so every worker stages in one place.
        self.staging = staging_dir(self.folder, f'{run_id}-{uuid.uuid4().hex[:12]}')
        self._num_shards = num_shards

    @classmethod
    def add_flags(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            '--output', help='Output folder (local or gs://). Each run writes '
            'run_date=YYYY-MM-DD/labels-*.parquet, errors-*.parquet and summary.json; '
            're-running a date replaces that date\'s files only, once the new ones are '
            'written (a re-run that fails leaves them as they were).')

    @classmethod
    def from_options(cls, flags: Any, run: RunInfo) -> 'ParquetSink | None':
        if not flags.output:
            return None
        wild = sorted({c for c in flags.output if c in '*?['})
        if wild:  # Beam's file sinks match, rename and delete through patterns
            raise ValueError(f'--output {flags.output} holds {" ".join(wild)}, which Beam\'s '
                             'file sinks read as a pattern; choose a folder name without them')
        return cls(flags.output, run_date=run.run_date, run_id=run.run_id)

    def describe(self) -> str:
        return f'Parquet in {self.folder}'

    def check(self) -> None:
        """The folder exists (made if not) and takes a file."""
        try:
            FileSystems.mkdirs(self.folder)
        except Exception:  # noqa: BLE001 - "already exists" is fine; the probe below decides
            pass
        probe = FileSystems.join(self.folder, f'.imagelabel-write-test-{self._run_id}')
        try:
            FileSystems.create(probe).close()
            FileSystems.delete([probe])
        except Exception as e:  # noqa: BLE001
            raise ValueError(f'--output {self.output} is not writable: '
                             f'{type(e).__name__}: {e}') from e

    def written(self) -> dict[str, list[str]]:
        return table_files(self.folder)

    def expand(self, tables):
        written = [tables[table]
                   | f'{table.title()}ToArrow' >> beam.ParDo(RowsToArrowTables(schema))
                   | f'Write{table.title()}Parquet' >> WriteParquetTables(
                       FileSystems.join(self.staging, table), schema, file_name_suffix=SUFFIX,
                       num_shards=self._num_shards)
                   for table, schema in _SCHEMAS.items()]
        _ = (tuple(written) | 'AllWritten' >> beam.Flatten()
             | 'PublishStaged' >> PublishStaged(self.folder, self.staging))
