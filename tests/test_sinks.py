"""The sink registry: the options choose the sinks; each converts the common rows itself."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.options import ImageLabelOptions
from transforms.schema import LABELS_SCHEMA
from transforms.sinks import SINKS, RunInfo, Sink, sinks_for
from transforms.sinks.bigquery import BigQuerySink
from transforms.sinks.parquet import ParquetSink, to_parquet_row

RUN = RunInfo(run_id='r1', run_date='2026-11-23', local=True)


def _flags(*argv):
    return PipelineOptions(list(argv)).view_as(ImageLabelOptions)


def test_every_registered_sink_is_a_sink_with_its_own_enabling_flag():
    assert {cls.enabling_flag for cls in SINKS} == {'--output', '--bigquery_table'}
    for cls in SINKS:
        assert issubclass(cls, Sink)


def test_the_options_choose_parquet_bigquery_or_both():
    assert [type(s) for s in sinks_for(_flags('--output', '/tmp/o'), RUN)] == [ParquetSink]
    both = sinks_for(_flags('--output', '/tmp/o', '--bigquery_table', 'proj-1:d.t',
                            '--bigquery_method', 'streaming_inserts'), RUN)
    assert [type(s) for s in both] == [ParquetSink, BigQuerySink]
    only_bq = sinks_for(_flags('--bigquery_table', 'proj-1:d.t', '--bigquery_method',
                               'streaming_inserts'), RUN)
    assert [type(s) for s in only_bq] == [BigQuerySink]


def test_no_sink_at_all_is_an_error_naming_every_enabling_flag():
    with pytest.raises(ValueError, match='give --output or --bigquery_table'):
        sinks_for(_flags(), RUN)


def test_the_parquet_sink_turns_the_embedding_array_into_what_arrow_takes():
    row = {'embedding': np.array([0.25, 1.5], np.float32), 'uri': 'a'}
    out = to_parquet_row(row)
    assert out['embedding'] == [0.25, 1.5] and isinstance(out['embedding'], list)
    assert isinstance(row['embedding'], np.ndarray)  # the common row is not changed
    arr = pa.array([out['embedding']], type=LABELS_SCHEMA.field('embedding').type)
    assert arr.to_pylist() == [[0.25, 1.5]]


def test_every_sink_flag_is_declared_by_its_sink_and_listed_in_run_help():
    from conftest import run_cli
    help_text = run_cli('run', '--help').out
    for flag in ('--output', '--bigquery_table', '--bigquery_method',
                 '--bigquery_temp'):
        assert flag in help_text
