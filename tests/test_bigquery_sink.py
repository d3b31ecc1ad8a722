"""The BigQuery sink on our side of the wire: schema, rows, table names, flags.

The emulator accepts a missing REQUIRED field and answers a wrongly typed value
with HTTP 500 (see ../shared/notes/emulators.md), so what it would let through
is checked here, before anything is sent.
"""
from __future__ import annotations

import datetime
import json

import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.options import ImageLabelOptions
from transforms.postprocess import error_row, label_row
from transforms.schema import ERRORS_SCHEMA, LABELS_SCHEMA
from transforms.sinks import RunInfo, sinks_for
from transforms.sinks.bigquery import (BigQuerySink, TableRef, parse_table, schema_differences,
                                       table_schema, to_bigquery_row)

RUN = RunInfo(run_id='r1', run_date='2026-11-23', local=True)


def _label_row():
    from apache_beam.ml.inference.base import PredictionResult

    from transforms.label import ImageInfo, ImageScores
    probs = np.array([0.1, 0.6, 0.3], np.float32)
    result = PredictionResult(ImageInfo('gs://b/a.jpg', 'ab' * 32, 640, 480),
                              ImageScores(probs, np.array([0.5, -1.25], np.float32)), 'mid')
    return label_row(result, k=2, labels=['cat', 'dog', 'eel'], model='m', run_id='r1')


def test_table_specs_take_colon_and_dot_forms_and_a_default_project():
    assert parse_table('proj-1:ds.t') == TableRef('proj-1', 'ds', 't')
    assert parse_table('my-proj.ds_2.labels') == TableRef('my-proj', 'ds_2', 'labels')
    assert parse_table('ds.t', default_project='proj-x').spec == 'proj-x:ds.t'
    assert parse_table('proj-x:ds.t').sibling('_errors').sql == 'proj-x.ds.t_errors'
    with pytest.raises(ValueError, match='names no project'):
        parse_table('ds.t')
    with pytest.raises(ValueError, match='PROJECT:DATASET.TABLE'):
        parse_table('just-a-table')


def test_the_schema_is_generated_from_the_arrow_schema_plus_run_date():
    labels = {f['name']: f for f in table_schema('labels')['fields']}
    assert list(labels) == [f.name for f in LABELS_SCHEMA] + ['run_date']
    assert labels['labels']['mode'] == 'REPEATED' and labels['labels']['type'] == 'RECORD'
    assert [(f['name'], f['type']) for f in labels['labels']['fields']] == [
        ('index', 'INTEGER'), ('label', 'STRING'), ('score', 'FLOAT')]
    assert (labels['embedding']['mode'], labels['embedding']['type']) == ('REPEATED', 'FLOAT')
    assert labels['processed_at']['type'] == 'TIMESTAMP'
    assert labels['top_label'] == dict(labels['top_label'], type='STRING', mode='REQUIRED')
    assert labels['run_date']['type'] == 'DATE'
    assert labels['uri']['description'].startswith('The image URI')
    errors = {f['name']: f for f in table_schema('errors')['fields']}
    assert list(errors) == [f.name for f in ERRORS_SCHEMA] + ['run_date']
    assert errors['content_sha256']['mode'] == 'NULLABLE'


def test_a_label_row_becomes_json_bigquery_takes_with_every_required_field():
    row = to_bigquery_row(_label_row(), '2026-11-23')
    json.dumps(row)  # numpy arrays and datetimes are gone
    assert row['embedding'] == [0.5, -1.25]
    assert row['labels'] == [{'index': 1, 'label': 'dog', 'score': pytest.approx(0.6)},
                             {'index': 2, 'label': 'eel', 'score': pytest.approx(0.3)}]
    assert row['top_label'] == 'dog' and row['run_date'] == '2026-11-23'
    assert row['processed_at'].endswith(' UTC')
    datetime.datetime.strptime(row['processed_at'], '%Y-%m-%d %H:%M:%S.%f UTC')
    required = {f['name'] for f in table_schema('labels')['fields'] if f['mode'] == 'REQUIRED'}
    assert required <= set(row)  # the emulator would not notice a missing one
    types = {'STRING': str, 'INTEGER': int, 'DATE': str, 'TIMESTAMP': str}
    for f in table_schema('labels')['fields']:
        if f['type'] in types and f['mode'] == 'REQUIRED':
            assert isinstance(row[f['name']], types[f['type']]), f['name']
        if f['mode'] == 'NULLABLE':
            assert row[f['name']] is None or isinstance(row[f['name']], types[f['type']])


def test_an_error_row_becomes_json_with_a_null_hash_kept_null():
    from transforms.errors import Failure
    row = to_bigquery_row(error_row(Failure('gs://b/x', 'read', 'not_found', 'gone'),
                                    model_id='mid', run_id='r1'), '2026-11-23')
    assert row['content_sha256'] is None and row['error'] == 'not_found'
    assert set(row) == {f['name'] for f in table_schema('errors')['fields']}


def test_schema_differences_name_missing_retyped_and_nested_fields():
    want = table_schema('labels')['fields']
    have = [dict(f) for f in want if f['name'] != 'embedding']
    for f in have:
        if f['name'] == 'width':
            f['type'] = 'STRING'
        if f['name'] == 'labels':
            f['fields'] = [dict(x, type='STRING') if x['name'] == 'score' else x
                           for x in f['fields']]
    assert schema_differences(want, have) == [
        'labels.score is REQUIRED STRING, expected REQUIRED FLOAT',
        'embedding is missing',
        'width is REQUIRED STRING, expected REQUIRED INTEGER']
    # Standard SQL names for the same types are the same types.
    same = [dict(f, type={'FLOAT': 'FLOAT64', 'INTEGER': 'INT64'}.get(f['type'], f['type']))
            for f in want]
    assert schema_differences(want, same) == []


def _flags(*argv):
    return PipelineOptions(list(argv)).view_as(ImageLabelOptions)


def test_file_loads_without_a_gs_temp_location_is_refused_with_the_fix():
    with pytest.raises(ValueError, match='--bigquery_temp gs://'):
        sinks_for(_flags('--bigquery_table', 'proj-1:d.t'), RUN)
    with pytest.raises(ValueError, match='streaming_inserts'):
        sinks_for(_flags('--bigquery_table', 'proj-1:d.t', '--temp_location', '/tmp/x'), RUN)
    (sink,) = sinks_for(_flags('--bigquery_table', 'proj-1:d.t', '--temp_location', 'gs://b/t'), RUN)
    assert isinstance(sink, BigQuerySink) and sink.temp_location == 'gs://b/t'
    (sink,) = sinks_for(_flags('--bigquery_table', 'proj-1:d.t', '--bigquery_method',
                               'streaming_inserts'), RUN)
    assert sink.method == 'streaming_inserts' and sink.tables['errors'].table == 't_errors'


@pytest.mark.parametrize('flags, message', [
    (['--bigquery_temp', 'gs://b/t'], '--bigquery_temp is only used with --bigquery_table'),
    (['--bigquery_method', 'streaming_inserts'],
     '--bigquery_method is only used with --bigquery_table'),
    (['--bigquery_table', 'proj-1:d.t', '--bigquery_method', 'streaming_inserts',
      '--bigquery_temp', 'gs://b/t'], 'streaming_inserts stages none'),
])
def test_bigquery_flags_that_contradict_each_other_are_refused(flags, message):
    with pytest.raises(ValueError, match=message):
        sinks_for(_flags('--output', '/tmp/o', *flags), RUN)


def test_file_loads_is_the_method_when_none_is_given():
    (_, sink) = sinks_for(_flags('--output', '/tmp/o', '--bigquery_table', 'proj-1:d.t',
                                 '--bigquery_temp', 'gs://b/t'), RUN)
    assert sink.method == 'file_loads'


def test_the_table_project_defaults_to_the_project_flag():
    (sink,) = sinks_for(_flags('--bigquery_table', 'd.t', '--project', 'proj-y',
                               '--bigquery_method', 'streaming_inserts'), RUN)
    assert sink.tables['labels'].spec == 'proj-y:d.t'


@pytest.mark.parametrize('endpoint', ['closed', 'silent'])
def test_a_bigquery_endpoint_that_does_not_answer_is_one_line_after_the_deadline(monkeypatch,
                                                                                  endpoint):
    # The client's own retry keeps trying a refused connection for 600 s per call, and waits
    # forever on one that is accepted and never answered; the launch gives up after the
    # sink's deadline (90 s by default, 1 s here) and says where.
    import socket
    import google.auth
    from google.auth.credentials import AnonymousCredentials
    server = socket.socket()
    server.bind(('127.0.0.1', 0))
    port = server.getsockname()[1]
    if endpoint == 'silent':
        server.listen(16)  # the kernel accepts connections; nothing ever reads or replies
    else:
        server.close()  # a port nothing listens on
    monkeypatch.setenv('BIGQUERY_EMULATOR_HOST', f'http://127.0.0.1:{port}')
    monkeypatch.setattr(google.auth, 'default',
                        lambda *a, **k: (AnonymousCredentials(), 'my-project'))
    sink = BigQuerySink(parse_table('my-project:ds.labels'), method='streaming_inserts',
                        run_date='2026-11-24', api_deadline_s=1)
    try:
        for step in (sink.check, sink.clear):
            with pytest.raises(ValueError) as e:
                step()
            assert str(e.value).startswith(
                f'--bigquery_table my-project.ds.labels: http://127.0.0.1:{port} did not '
                'answer within 1 s (')
            assert '\n' not in str(e.value)
    finally:
        server.close()
