"""The sink registry: the options choose the sinks; each converts the common rows itself."""
from __future__ import annotations

import datetime
import pathlib

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


def _date_with_an_earlier_run_and_a_staged_one(tmp_path):
    """A date written by an earlier run (3 labels shards, 2 errors shards, summary, eval),
    this run's two tables staged (each file holding its own name), and the staging
    folders of three runs that failed: two of them two days ago (one after writing, one
    before its writers opened a file), one a minute ago."""
    import os
    import time
    from transforms.sinks.parquet import staging_dir
    day = tmp_path / 'run_date=2026-01-01'
    staging = pathlib.Path(staging_dir(str(day), 'run-abc'))
    earlier = ['labels-00000-of-00003.parquet', 'labels-00001-of-00003.parquet',
               'labels-00002-of-00003.parquet', 'errors-00000-of-00001.parquet',
               'errors-00001-of-00002.parquet', 'summary.json', 'eval.json', 'notes.txt']
    for name in earlier:
        (day / name).parent.mkdir(parents=True, exist_ok=True)
        (day / name).write_text(f'earlier {name}')
    for name in ('labels-00000-of-00001.parquet', 'errors-00000-of-00001.parquet'):
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_text(f'ours {name}')
    late = pathlib.Path(staging_dir(str(day), 'failed-late')) / 'labels-00000-of-00001.parquet'
    late.parent.mkdir()
    late.write_text('left by a run that failed before publishing')
    (pathlib.Path(staging_dir(str(day), 'failed-early')) / 'beam-temp-labels-1a2b').mkdir(
        parents=True)
    young = pathlib.Path(staging_dir(str(day), 'young')) / 'beam-temp-labels-5e6f' / 'x.parquet'
    young.parent.mkdir(parents=True)
    young.write_text('a run of the date still going, or one that failed a minute ago')
    two_days_ago = time.time() - 2 * 24 * 3600
    for token in ('failed-late', 'failed-early'):
        for root, dirs, files in os.walk(staging_dir(str(day), token)):
            for path in [root] + [os.path.join(root, f) for f in files]:
                os.utime(path, (two_days_ago, two_days_ago))
    return day, staging


def _contents(day) -> dict[str, str]:
    """The date's files, and its folders (hidden ones included) as None."""
    return {f.name: f.read_text() if f.is_file() else None for f in sorted(day.iterdir())}


OURS_IN_PLACE = {'.staging-young': None,
                 'errors-00000-of-00001.parquet': 'ours errors-00000-of-00001.parquet',
                 'labels-00000-of-00001.parquet': 'ours labels-00000-of-00001.parquet',
                 'notes.txt': 'earlier notes.txt'}


def test_publishing_moves_the_staged_tables_in_and_deletes_the_earlier_runs_files(tmp_path):
    from transforms.sinks.parquet import publish_staged
    day, staging = _date_with_an_earlier_run_and_a_staged_one(tmp_path)
    tables = publish_staged(str(day), str(staging))
    # The same-named errors file is replaced, other shard counts and the earlier summary
    # and eval go, a file that is not the run's stays; this run's staging folder goes, and
    # so do those of the runs that failed two days ago; the young one stays.
    assert _contents(day) == OURS_IN_PLACE
    assert [pathlib.Path(t).name for t in tables] == [
        'errors-00000-of-00001.parquet', 'labels-00000-of-00001.parquet']


def test_publishing_again_after_a_crash_midway_or_after_success_ends_the_same(tmp_path):
    from apache_beam.io.filesystems import FileSystems
    from transforms.sinks import parquet
    day, staging = _date_with_an_earlier_run_and_a_staged_one(tmp_path)
    real_delete = FileSystems.delete

    def crash_on_delete(paths):  # the worker dies once the renames are done
        raise OSError('worker lost')
    FileSystems.delete = staticmethod(crash_on_delete)
    try:
        with pytest.raises(OSError, match='worker lost'):
            parquet.publish_staged(str(day), str(staging))
    finally:
        FileSystems.delete = staticmethod(real_delete)
    # Both tables moved already: a retry must not take them for an earlier run's files.
    assert not list(staging.glob('*.parquet'))
    parquet.publish_staged(str(day), str(staging))
    assert _contents(day) == OURS_IN_PLACE
    parquet.publish_staged(str(day), str(staging))  # a third attempt: nothing left to do
    assert _contents(day) == OURS_IN_PLACE


def test_a_record_cut_short_by_a_crash_is_listed_again(tmp_path):
    from transforms.sinks.parquet import publish_staged
    day, staging = _date_with_an_earlier_run_and_a_staged_one(tmp_path)
    (staging / '_publishing.json').write_text('["labels-000')  # written before any move
    publish_staged(str(day), str(staging))
    assert _contents(day) == OURS_IN_PLACE


def test_publish_staged_as_a_step_publishes_once_for_all_the_written_files(tmp_path,
                                                                          monkeypatch):
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from transforms.sinks import parquet
    day, staging = _date_with_an_earlier_run_and_a_staged_one(tmp_path)
    calls = []
    real = parquet.publish_staged
    monkeypatch.setattr(parquet, 'publish_staged',
                        lambda *args: calls.append(args) or real(*args))
    with TestPipeline() as p:
        _ = (p | beam.Create([str(staging / name) for name in (
                'labels-00000-of-00001.parquet', 'errors-00000-of-00001.parquet')])
             | parquet.PublishStaged(str(day), str(staging)))
    assert calls == [(str(day), str(staging))]
    assert _contents(day) == OURS_IN_PLACE


def test_every_sink_flag_is_declared_by_its_sink_and_listed_in_run_help():
    from conftest import run_cli
    help_text = run_cli('run', '--help').out
    for flag in ('--output', '--bigquery_table', '--bigquery_method',
                 '--bigquery_temp'):
        assert flag in help_text
