"""BigQuery tables through Beam's `WriteToBigQuery`.

The table's schema is generated from the one Arrow schema (transforms.schema),
plus the run's date: labels is a REPEATED RECORD (index, label, score) and the
embedding a REPEATED FLOAT. Tables are partitioned by `run_date` and clustered
by `top_label`, `model_id` (errors: by `error`, `model_id`), so a dashboard over
last night's run reads one partition.

The dataset and both tables are created (or checked) at launch, through
google-cloud-bigquery, before the pipeline starts: a table whose schema does
not fit fails the job at once with the differing fields named, instead of
hours later in a load job. It also means partitioning and clustering are set
by us, not by whichever load job happens to create the table.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import re
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa

from transforms.schema import ERRORS_SCHEMA, LABELS_SCHEMA
from transforms.sinks.base import ERRORS, LABELS, RunInfo, Sink

METHODS = ('file_loads', 'streaming_inserts')
ERRORS_SUFFIX = '_errors'
RUN_DATE = 'run_date'
_RUN_DATE_DOC = 'The run\'s date (UTC, or --run_date): the partition the row is in.'
#: Clustering per table: the columns dashboards filter and group on.
CLUSTERING = {LABELS: ['top_label', 'model_id'], ERRORS: ['error', 'model_id']}
_SCHEMAS = {LABELS: LABELS_SCHEMA, ERRORS: ERRORS_SCHEMA}

_TABLE_SPEC = re.compile(
    r'^(?:(?P<project>[a-z][a-z0-9.:-]{4,61}[a-z0-9])[:.])?'
    r'(?P<dataset>[A-Za-z0-9_]{1,1024})\.(?P<table>[A-Za-z0-9_$-]{1,1024})$')


@dataclasses.dataclass(frozen=True)
class TableRef:
    project: str
    dataset: str
    table: str

    @property
    def spec(self) -> str:
        """PROJECT:DATASET.TABLE, the form Beam takes."""
        return f'{self.project}:{self.dataset}.{self.table}'

    @property
    def sql(self) -> str:
        """`PROJECT.DATASET.TABLE`, the form SQL and google-cloud-bigquery take."""
        return f'{self.project}.{self.dataset}.{self.table}'

    def sibling(self, suffix: str) -> 'TableRef':
        return dataclasses.replace(self, table=self.table + suffix)


def parse_table(spec: str, default_project: str | None = None) -> TableRef:
    """PROJECT:DATASET.TABLE, PROJECT.DATASET.TABLE, or DATASET.TABLE with --project."""
    m = _TABLE_SPEC.match(spec.strip())
    if not m:
        raise ValueError(f'--bigquery_table {spec!r} is not PROJECT:DATASET.TABLE or '
                         'PROJECT.DATASET.TABLE (dataset and table: letters, digits, _)')
    project = m['project'] or default_project
    if not project:
        raise ValueError(f'--bigquery_table {spec!r} names no project; write '
                         'PROJECT:DATASET.TABLE or pass --project')
    return TableRef(project, m['dataset'], m['table'])


# --- schema: derived from the Arrow schema -------------------------------------------

#: Arrow type test -> BigQuery type, first match wins.
_BQ_TYPES = ((pa.types.is_string, 'STRING'), (pa.types.is_integer, 'INTEGER'),
             (pa.types.is_floating, 'FLOAT'), (pa.types.is_timestamp, 'TIMESTAMP'),
             (pa.types.is_date, 'DATE'), (pa.types.is_boolean, 'BOOLEAN'),
             (pa.types.is_struct, 'RECORD'))


def _bq_type(t: pa.DataType) -> str:
    for test, name in _BQ_TYPES:
        if test(t):
            return name
    raise TypeError(f'no BigQuery type for Arrow type {t}')


def _bq_field(f: pa.Field) -> dict[str, Any]:
    t, mode = f.type, 'NULLABLE' if f.nullable else 'REQUIRED'
    if pa.types.is_list(t):
        t, mode = t.value_type, 'REPEATED'
    field: dict[str, Any] = {'name': f.name, 'type': _bq_type(t), 'mode': mode}
    doc = (f.metadata or {}).get(b'doc')
    if doc:
        field['description'] = doc.decode()
    if pa.types.is_struct(t):
        field['fields'] = [_bq_field(t.field(i)) for i in range(t.num_fields)]
    return field


def table_schema(table: str) -> dict[str, Any]:
    """The BigQuery schema (JSON form) of the labels or errors table, with run_date."""
    fields = [_bq_field(f) for f in _SCHEMAS[table]]
    fields.append({'name': RUN_DATE, 'type': 'DATE', 'mode': 'REQUIRED',
                   'description': _RUN_DATE_DOC})
    return {'fields': fields}


def schema_differences(expected: list[dict], actual: list[dict], prefix: str = '') -> list[str]:
    """Human lines for every field whose name, type or mode differs ('' when it fits)."""
    out = []
    have = {f['name']: f for f in actual}
    for f in expected:
        name = prefix + f['name']
        got = have.get(f['name'])
        if got is None:
            out.append(f'{name} is missing')
            continue
        want_type, got_type = f['type'], {'FLOAT64': 'FLOAT', 'INT64': 'INTEGER',
                                          'STRUCT': 'RECORD', 'BOOL': 'BOOLEAN'}.get(
            got['type'], got['type'])
        want_mode, got_mode = f.get('mode', 'NULLABLE'), got.get('mode') or 'NULLABLE'
        if want_type != got_type or want_mode != got_mode:
            out.append(f'{name} is {got_mode} {got_type}, expected {want_mode} {want_type}')
        elif 'fields' in f:
            out.extend(schema_differences(f['fields'], got.get('fields') or [], name + '.'))
    return out


# --- rows: the common row, as BigQuery's JSON takes it ---------------------------------

def _json_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.astype(np.float64).tolist()  # Python floats, without a Python loop
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S.%f UTC')
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value


def to_bigquery_row(row: dict[str, Any], run_date: str) -> dict[str, Any]:
    """numpy arrays -> lists of floats, datetimes -> TIMESTAMP strings, + run_date."""
    out = {k: _json_value(v) for k, v in row.items()}
    out[RUN_DATE] = run_date
    return out


# --- the sink ----------------------------------------------------------------------------

class BigQuerySink(Sink):
    """TABLE (labels) and TABLE_errors, partitioned by run_date, through WriteToBigQuery."""

    enabling_flag = '--bigquery_table'
    clear_may_fail = True
    #: How long the launch's own BigQuery calls (dataset, tables, the DELETE) keep retrying
    #: an endpoint that does not answer; the client's default is 600 s per call.
    api_deadline_s = 90.0

    def __init__(self, table: TableRef, *, method: str = 'file_loads',
                 temp_location: str | None = None, run_date: str, run_id: str = 'run',
                 api_deadline_s: float | None = None):
        super().__init__()
        if api_deadline_s is not None:
            self.api_deadline_s = api_deadline_s
        if method not in METHODS:
            raise ValueError(f'--bigquery_method {method!r}: choose one of {", ".join(METHODS)}')
        if method == 'file_loads' and not (temp_location or '').startswith('gs://'):
            raise ValueError(
                '--bigquery_method file_loads stages files in Cloud Storage: give '
                '--bigquery_temp gs://BUCKET/tmp (or --temp_location gs://...), or use '
                '--bigquery_method streaming_inserts')
        self.tables = {LABELS: table, ERRORS: table.sibling(ERRORS_SUFFIX)}
        self.method = method
        self.temp_location = temp_location
        self.run_date = run_date
        self.run_id = run_id

    @classmethod
    def add_flags(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            '--bigquery_table', default=None,
            help='Also (or only) write to BigQuery: PROJECT:DATASET.TABLE or '
            'PROJECT.DATASET.TABLE; errors go to TABLE_errors. Dataset and tables are '
            'created if needed, partitioned by run_date.')
        parser.add_argument(
            '--bigquery_method', default=None, choices=METHODS,
            help='With --bigquery_table: file_loads (the default), batch load jobs (free; '
            'stage files under --bigquery_temp); streaming_inserts: rows arrive as they are '
            'labeled (billed per GB).')
        parser.add_argument(
            '--bigquery_temp', default=None,
            help='gs:// folder where file_loads stages its files; default: --temp_location.')

    @classmethod
    def from_options(cls, flags: Any, run: RunInfo) -> 'BigQuerySink | None':
        if not flags.bigquery_table:
            for flag in ('bigquery_temp', 'bigquery_method'):
                if getattr(flags, flag):
                    raise ValueError(f'--{flag} is only used with --bigquery_table')
            return None
        method = flags.bigquery_method or 'file_loads'
        if method == 'streaming_inserts' and flags.bigquery_temp:
            raise ValueError('--bigquery_temp stages files for file_loads; streaming_inserts '
                             'stages none: leave out one of the two')
        from apache_beam.options.pipeline_options import GoogleCloudOptions
        gcp = flags.view_as(GoogleCloudOptions)
        from transforms.gcp import EMULATOR_PROJECT, using_emulators
        default_project = gcp.project or (EMULATOR_PROJECT if using_emulators() else None)
        return cls(parse_table(flags.bigquery_table, default_project),
                   method=method,
                   temp_location=flags.bigquery_temp or gcp.temp_location,
                   run_date=run.run_date, run_id=run.run_id)

    def describe(self) -> str:
        return f'BigQuery {self.tables[LABELS].sql} ({self.method})'

    def check(self) -> None:
        """Create the dataset and tables, or check the schemas of those that exist."""
        from google.cloud import bigquery
        ref = self.tables[LABELS]
        with self._client() as (client, bounded):
            client.create_dataset(bigquery.Dataset(f'{ref.project}.{ref.dataset}'),
                                  exists_ok=True, **bounded)
            for name, table in self.tables.items():
                ensure_table(client, table, name, bounded=bounded)

    def clear(self) -> None:
        """Empty this run's date partition of both tables: re-running a date replaces its
        rows, so a retried scheduled run leaves no duplicates; other dates are never
        touched."""
        with self._client() as (client, bounded):
            for table in self.tables.values():
                clear_partition(client, table, self.run_date, bounded=bounded)

    @contextlib.contextmanager
    def _client(self):
        """A client for the tables' project, and the `retry` and `timeout` its calls take:
        each request waits `api_deadline_s` at most (an endpoint that accepts and never
        answers), and retries stop after it. An API error, or no answer in time, is one
        line naming the table."""
        from google.api_core import exceptions
        from google.cloud import bigquery
        ref = self.tables[LABELS]
        try:
            yield (bigquery.Client(project=ref.project),
                   {'retry': bigquery.DEFAULT_RETRY.with_deadline(self.api_deadline_s),
                    'timeout': self.api_deadline_s})
        except exceptions.GoogleAPICallError as e:
            raise ValueError(f'--bigquery_table {ref.sql}: {type(e).__name__}: '
                             f'{getattr(e, "message", e)}') from e
        except exceptions.RetryError as e:
            from transforms.gcp import BIGQUERY_EMULATOR_HOST
            where = os.environ.get(BIGQUERY_EMULATOR_HOST) or 'BigQuery'
            cause = f'{type(e.cause).__name__}: {e.cause}'.splitlines()[0][:200]
            raise ValueError(f'--bigquery_table {ref.sql}: {where} did not answer within '
                             f'{self.api_deadline_s:g} s ({cause})') from e

    def written(self) -> dict[str, list[str]]:
        return {name: [f'bigquery:{t.sql} (run_date {self.run_date})']
                for name, t in self.tables.items()}

    def expand(self, tables):
        from apache_beam.io.gcp.bigquery import BigQueryDisposition, WriteToBigQuery
        method = (WriteToBigQuery.Method.FILE_LOADS if self.method == 'file_loads'
                  else WriteToBigQuery.Method.STREAMING_INSERTS)
        run_date = self.run_date
        for name, table in self.tables.items():
            extra = {'custom_gcs_temp_location': self.temp_location} if (
                self.method == 'file_loads') else {}
            _ = (tables[name]
                 | f'{name.title()}ToBigQueryJson' >> beam.Map(to_bigquery_row, run_date)
                 | f'Write{name.title()}BigQuery' >> WriteToBigQuery(
                     table.spec, schema=table_schema(name), method=method,
                     create_disposition=BigQueryDisposition.CREATE_NEVER,
                     write_disposition=BigQueryDisposition.WRITE_APPEND, **extra))


def clear_partition(client, table: TableRef, run_date: str, *,
                    bounded: dict | None = None) -> int:
    """Delete one date's rows (a partition-pruned DML delete); how many went. `bounded`:
    the `retry` and `timeout` each call takes."""
    from google.cloud import bigquery
    bounded = bounded or {'retry': bigquery.DEFAULT_RETRY}
    job = client.query(
        f'DELETE FROM `{table.sql}` WHERE {RUN_DATE} = @run_date',
        job_config=bigquery.QueryJobConfig(query_parameters=[
            bigquery.ScalarQueryParameter('run_date', 'DATE', run_date)]),
        # job_retry=None: with a job retry the client wraps the insert in a 600 s retry of
        # its own that `retry` does not bound. A DELETE job that fails is a launch refused
        # in one line (a scheduler retries the launch); each API call is still retried.
        job_retry=None, **bounded)
    job.result(**bounded)
    return int(job.num_dml_affected_rows or 0)


def ensure_table(client, table: TableRef, name: str, *, bounded: dict | None = None) -> None:
    """Create `table` with schema, partitioning and clustering, or check its schema fits.
    `bounded`: the `retry` and `timeout` each call takes."""
    from google.api_core import exceptions
    from google.cloud import bigquery
    bounded = bounded or {'retry': bigquery.DEFAULT_RETRY}
    schema = table_schema(name)['fields']
    try:
        existing = client.get_table(table.sql, **bounded)
    except exceptions.NotFound:
        t = bigquery.Table(table.sql, schema=[bigquery.SchemaField.from_api_repr(f)
                                              for f in schema])
        t.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY, field=RUN_DATE)
        t.clustering_fields = CLUSTERING[name]
        t.description = f'imagelabel {name} rows, one per image (transforms.schema)'
        client.create_table(t, **bounded)
        return
    diffs = schema_differences(schema, [f.to_api_repr() for f in existing.schema])
    if diffs:
        raise ValueError(f'BigQuery table {table.sql} exists with an incompatible schema: '
                         f'{"; ".join(diffs)}. Write to a new table, or migrate this one')
