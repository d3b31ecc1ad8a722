"""The sink registry: the options choose the sinks; each converts the common rows itself."""
from __future__ import annotations

import datetime

import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.options import ImageLabelOptions
from transforms.schema import LABELS_SCHEMA
from transforms.sinks import SINKS, RunInfo, Sink, sinks_for
from transforms.sinks.bigquery import BigQuerySink
from transforms.sinks.parquet import ParquetSink, RowsToArrowTables, rows_to_batch

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


def _label_row(uri, embedding, **extra):
    return {'uri': uri, 'labels': [{'index': 3, 'label': 'cat', 'score': 0.5}],
            'top_label': 'cat', 'embedding': embedding, 'model': 'm', 'model_id': 'id',
            'content_sha256': '0' * 64, 'width': 4, 'height': 3, 'run_id': 'r',
            'processed_at': datetime.datetime(2026, 11, 24, tzinfo=datetime.timezone.utc),
            **extra}


def test_the_parquet_sink_writes_embedding_arrays_and_earlier_lists_as_the_same_column():
    fresh = np.array([0.25, 1.5, -2.0], np.float32)
    rows = [_label_row('a', fresh), _label_row('b', [1.0, 2.0, 3.0], source_size=7)]
    batch = rows_to_batch(rows, LABELS_SCHEMA)
    assert batch.schema == LABELS_SCHEMA
    back = batch.to_pylist()
    assert back[0]['embedding'] == [0.25, 1.5, -2.0]
    assert back[1]['embedding'] == [1.0, 2.0, 3.0]
    assert back[0]['source_size'] is None and back[1]['source_size'] == 7  # missing: null
    assert back[1]['labels'] == [{'index': 3, 'label': 'cat', 'score': 0.5}]
    assert isinstance(rows[0]['embedding'], np.ndarray)  # the common row is not changed


def test_rows_to_arrow_tables_emits_every_row_once_in_tables_of_the_schema():
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to
    import apache_beam as beam
    rows = [_label_row(f'u{i}', np.full(5, i, np.float32)) for i in range(600)]
    with TestPipeline() as p:
        tables = (p | beam.Create(rows, reshuffle=False)
                  | beam.ParDo(RowsToArrowTables(LABELS_SCHEMA, batch_rows=256)))
        got = tables | beam.FlatMap(lambda t: [(r['uri'], r['embedding'][0])
                                               for r in t.to_pylist()])
        assert_that(got, equal_to([(f'u{i}', float(i)) for i in range(600)]))


@pytest.mark.parametrize('compliant', [False, True])
def test_floating_point_columns_are_the_only_ones_written_without_a_dictionary(compliant):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from transforms.sinks.parquet import dictionary_columns
    paths = dictionary_columns(LABELS_SCHEMA, compliant_nested_types=compliant)
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_batches([rows_to_batch(
        [_label_row('a', np.arange(4, dtype=np.float32))], LABELS_SCHEMA)]), buffer,
        use_compliant_nested_type=compliant, use_dictionary=paths)
    meta = pq.ParquetFile(io.BytesIO(buffer.getvalue())).metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings
                 for i in range(meta.num_columns)}
    # Every path names a real column of the file, as pyarrow writes it...
    assert set(paths) <= set(encodings)
    # ...and exactly the floating-point ones (embedding, scores) go without a dictionary.
    plain = {p for p, e in encodings.items() if 'RLE_DICTIONARY' not in e}
    assert plain == set(encodings) - set(paths)
    assert {p.split('.')[0] + '.' + p.split('.')[-1] for p in plain} == {
        'embedding.item' if not compliant else 'embedding.element', 'labels.score'}


def test_the_parquet_sink_writes_embeddings_plain_and_uris_with_a_dictionary(tmp_path):
    import apache_beam as beam
    import pyarrow as pa
    import pyarrow.parquet as pq
    from apache_beam.testing.test_pipeline import TestPipeline
    from transforms.sinks.parquet import WriteParquetTables
    rows = [_label_row(f'u{i % 3}', np.random.default_rng(i).random(64, np.float32))
            for i in range(300)]
    with TestPipeline() as p:
        table = pa.Table.from_batches([rows_to_batch(rows, LABELS_SCHEMA)])
        _ = (p | beam.Create([table], reshuffle=False)
             | WriteParquetTables(str(tmp_path / 'labels'), LABELS_SCHEMA,
                                  file_name_suffix='.parquet', num_shards=1))
    (written,) = tmp_path.glob('labels-*.parquet')
    meta = pq.ParquetFile(written).metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings
                 for i in range(meta.num_columns)}
    assert 'RLE_DICTIONARY' not in encodings['embedding.list.item']
    assert 'RLE_DICTIONARY' in encodings['uri']
    back = pq.read_table(written)
    assert back.num_rows == 300 and back.column('embedding')[5].as_py() == pytest.approx(
        rows[5]['embedding'].tolist())


def test_every_sink_flag_is_declared_by_its_sink_and_listed_in_run_help():
    from conftest import run_cli
    help_text = run_cli('run', '--help').out
    for flag in ('--output', '--bigquery_table', '--bigquery_method',
                 '--bigquery_temp'):
        assert flag in help_text
