"""A finished run's tables, read column by column (local or gs://).

The report and `imagelabel similar` both start here. Only the columns a caller
names are read, so a report over a million rows never touches the embeddings
(most of a labels file's bytes), and `similar` streams the embeddings batch by
batch instead of loading them. Tables are found directly in the output folder
and in its subfolders, so a dated layout (`OUTPUT/run_date=YYYY-MM-DD/`) reads
the same as a flat one.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.storage import open_raw
from transforms.schema import ERRORS_SCHEMA, LABELS_SCHEMA
from transforms.sinks.layout import SUMMARY_FILE



@dataclasses.dataclass(frozen=True)
class RunFiles:
    """Where one output folder's tables and summaries are."""
    output: str
    labels: list[str]
    errors: list[str]
    summaries: list[str]

    @property
    def empty(self) -> bool:
        return not (self.labels or self.errors)


def _hidden(path: str, root: str) -> bool:
    """Beam's `.temp-beam-*` folders (a crashed run) and other dot-folders are not the run."""
    rel = path[len(root):].lstrip('/')
    return any(part.startswith('.') for part in rel.split('/'))


def match_files(output: str, name: str) -> list[str]:
    """OUTPUT/NAME and OUTPUT/**/NAME (Beam's `**/` needs at least one folder), sorted."""
    root = output.rstrip('/')
    patterns = [FileSystems.join(root, name), FileSystems.join(root, '**', name)]
    found = {m.path for r in FileSystems.match(patterns) for m in r.metadata_list}
    return sorted(p for p in found if not _hidden(p, root))


def find_run(output: str) -> RunFiles:
    """The labels and errors Parquet files and summary.json files under `output`.

    Raises ValueError (one line) when the folder holds no run at all.
    """
    try:
        files = RunFiles(output=output, labels=match_files(output, 'labels-*.parquet'),
                         errors=match_files(output, 'errors-*.parquet'),
                         summaries=match_files(output, SUMMARY_FILE))
    except Exception as e:  # noqa: BLE001 - an unreachable bucket: the user's to fix
        raise ValueError(f'--output {output} cannot be listed: {type(e).__name__}: '
                         f'{str(e).splitlines()[0] if str(e) else ""}') from e
    if files.empty:
        raise ValueError(f'--output {output} holds no labels-*.parquet or errors-*.parquet '
                         '(directly or in subfolders); give the --output of an imagelabel run')
    return files


def read_summaries(files: RunFiles) -> list[dict]:
    """Every summary.json of the run(s), in path order (empty on Dataflow, which writes none)."""
    out = []
    for path in files.summaries:
        with open_raw(path) as f:
            out.append(json.loads(f.read()))
    return out


def _parquet_file(path: str, *, pre_buffer: bool = True) -> pq.ParquetFile:
    """pre_buffer=False for streaming: pyarrow otherwise keeps every pre-buffered row group
    of an iteration (measured: RSS grew by 1 GB per 100k rows of 2048-d embeddings)."""
    if '://' in path:
        return pq.ParquetFile(open_raw(path), pre_buffer=pre_buffer)
    return pq.ParquetFile(path, pre_buffer=pre_buffer)


def _select(available: pa.Schema, columns: Sequence[str]) -> list[str]:
    return [c for c in columns if c in available.names]


def read_columns(paths: Sequence[str], columns: Sequence[str], schema: pa.Schema, *,
                 required: Sequence[str] = ()) -> pa.Table:
    """The named columns of every file, concatenated; a column a file lacks comes back null.

    Older outputs may lack a newer column (e.g. `top_label`): callers then derive it. A
    `required` column a file lacks is a ValueError naming the file and the column.
    """
    wanted = pa.schema([schema.field(c) for c in columns])
    tables = []
    for path in paths:
        f = _parquet_file(path)
        present = _select(f.schema_arrow, columns)
        missing = [c for c in required if c not in present]
        if missing:
            raise ValueError(f'{path} has no {missing[0]} column')
        table = f.read(columns=present)
        for name in columns:
            if name not in present:
                table = table.append_column(wanted.field(name).with_nullable(True),
                                            pa.nulls(table.num_rows, wanted.field(name).type))
        tables.append(table.select(list(columns)).cast(
            pa.schema([wanted.field(c).with_nullable(True) for c in columns])))
    if not tables:
        return pa.table({c: pa.array([], wanted.field(c).type) for c in columns})
    return pa.concat_tables(tables)


def top_label_from_labels(labels: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The first label of each row's top-k list: `top_label`, for outputs older than it."""
    return pc.struct_field(pc.list_element(labels, 0), 'label')


def check_label_files(files: RunFiles, required: Sequence[str]) -> None:
    """One line naming the file, when a labels file lacks a column a tool cannot do without.

    `top_label` counts as present when `labels` is there to derive it from (older outputs).
    Reads each file's footer only.
    """
    for path in files.labels:
        names = _parquet_file(path, pre_buffer=False).schema_arrow.names
        missing = [c for c in required if c not in names
                   and not (c == 'top_label' and 'labels' in names)]
        if missing:
            raise ValueError(f'{path} has no {missing[0]} column: is it a labels file of '
                             'imagelabel run?')


def read_labels(files: RunFiles, columns: Sequence[str]) -> pa.Table:
    """Columns of the labels table; `top_label` is filled from `labels` where absent."""
    table = read_columns(files.labels, columns, LABELS_SCHEMA)
    if 'top_label' in columns and table.column('top_label').null_count:
        derived = top_label_from_labels(
            read_columns(files.labels, ['labels'], LABELS_SCHEMA).column('labels'))
        table = table.set_column(table.schema.get_field_index('top_label'), 'top_label',
                                 pc.coalesce(table.column('top_label'), derived))
    return table


def read_errors(files: RunFiles, columns: Sequence[str]) -> pa.Table:
    return read_columns(files.errors, columns, ERRORS_SCHEMA)


def iter_label_batches(files: RunFiles, columns: Sequence[str],
                       batch_rows: int = 4096) -> Iterator[pa.RecordBatch]:
    """The labels table in record batches of at most `batch_rows` rows, file by file.

    Memory stays at about one Parquet row group plus one batch, whatever the run's size.
    A file older than the `top_label` column gives `labels` instead, to derive it from.
    """
    for path in files.labels:
        f = _parquet_file(path, pre_buffer=False)
        present = _select(f.schema_arrow, columns)
        if 'top_label' in columns and 'top_label' not in present and 'labels' not in present:
            present.append('labels')
        yield from f.iter_batches(batch_size=batch_rows, columns=present)


def find_label_row(files: RunFiles, uris: Sequence[str], columns: Sequence[str]) -> dict | None:
    """The first labels row whose uri is one of `uris`, with `columns`.

    Reads only the `uri` column until a row group holds a hit, then that row group's
    other columns: a lookup costs a scan of the URIs, not of the embeddings.
    """
    wanted = pa.array(sorted(set(uris)), pa.string())
    for path in files.labels:
        f = _parquet_file(path, pre_buffer=False)
        present = _select(f.schema_arrow, columns)
        for group in range(f.num_row_groups):
            hits = pc.is_in(f.read_row_group(group, columns=['uri']).column('uri'), wanted)
            if pc.any(hits).as_py():
                table = f.read_row_group(group, columns=present).filter(hits)
                return table.slice(0, 1).to_pylist()[0]
    return None
