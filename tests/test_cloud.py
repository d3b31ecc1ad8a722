"""gs:// end to end and BigQuery tables, against real emulators on 127.0.0.1.

The same 12 real photos and 2 broken files are labeled twice: from local disk,
and from the GCS emulator (input, model and output all gs://, plus BigQuery).
The two runs must agree row for row.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import point_at_emulators, read_parquet_rows, run_cli

PHOTOS = 12
BROKEN = {'broken.jpg': b'this is not an image', 'truncated.jpg': None}


def _inputs(assets, folder: pathlib.Path) -> dict[str, bytes]:
    photos = sorted((assets / 'imagenet_sample' / 'images').glob('*.JPEG'))[::83][:PHOTOS]
    files = {p.name: p.read_bytes() for p in photos}
    files['broken.jpg'] = BROKEN['broken.jpg']
    files['truncated.jpg'] = photos[0].read_bytes()[:2000]
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def _upload(bucket, prefix: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        bucket.blob(f'{prefix}/{name}').upload_from_string(data)


@pytest.fixture(scope='module')
def runs(request, assets, mobilenet_v2_quant, tmp_path_factory):
    """A local run and a gs:// + BigQuery run over the same files, made once for this module."""
    cloud = request.getfixturevalue('cloud_module')
    tmp = tmp_path_factory.mktemp('cloud')
    files = _inputs(assets, tmp / 'in')
    local = run_cli('run', '--input', tmp / 'in', '--output', tmp / 'out',
                    '--model', mobilenet_v2_quant, '--run_id', 'local')
    assert local.code == 0, local.err

    bucket = cloud.gcs.client().bucket('imagelabel-test')
    _upload(bucket, 'e2e/in', files)
    bucket.blob('e2e/m.tflite').upload_from_filename(str(mobilenet_v2_quant))
    table = f'{cloud.project}:e2e.labels'
    remote = run_cli('run', '--input', 'gs://imagelabel-test/e2e/in/',
                     '--output', 'gs://imagelabel-test/e2e/out/',
                     '--model', 'gs://imagelabel-test/e2e/m.tflite',
                     '--bigquery_table', table, '--bigquery_temp', 'gs://imagelabel-test/tmp',
                     '--run_id', 'remote', '--run_date', '2026-11-20')
    assert remote.code == 0, remote.err
    return dict(cloud=cloud, local_out=tmp / 'out', files=files, table=table, tmp=tmp,
                local=local, remote=remote)


@pytest.fixture(scope='module')
def cloud_module(gcs_emulator, bq_emulator):
    """The `cloud` settings, for this module's shared runs."""
    mp = pytest.MonkeyPatch()
    yield point_at_emulators(mp, gcs_emulator, bq_emulator)
    mp.undo()


def _by_name(rows: list[dict]) -> dict[str, dict]:
    return {r['uri'].rsplit('/', 1)[1]: r for r in rows}


def test_a_gs_run_writes_the_same_label_rows_as_a_local_run_on_the_same_files(runs):
    local = _by_name(read_parquet_rows(runs['local_out'], 'labels'))
    remote_rows = read_parquet_rows('gs://imagelabel-test/e2e/out', 'labels')
    remote = _by_name(remote_rows)
    assert len(local) == PHOTOS and set(remote) == set(local)
    for row in remote_rows:
        assert row['uri'].startswith('gs://imagelabel-test/e2e/in/')
    for name, l in local.items():
        r = remote[name]
        assert r['uri'].replace('gs://imagelabel-test/e2e/in/', '') == name
        assert r['top_label'] == l['top_label'] == l['labels'][0]['label']
        assert [x['index'] for x in r['labels']] == [x['index'] for x in l['labels']]
        for a, b in zip(r['labels'], l['labels']):
            assert abs(a['score'] - b['score']) <= 1e-5
        assert r['content_sha256'] == l['content_sha256'] and r['model_id'] == l['model_id']
        assert len(r['embedding']) == 1280


def test_broken_files_are_error_rows_in_parquet_and_in_the_errors_table(runs):
    parquet = {n: r['error'] for n, r in _by_name(
        read_parquet_rows('gs://imagelabel-test/e2e/out', 'errors')).items()}
    assert parquet == {'broken.jpg': 'not_an_image', 'truncated.jpg': 'truncated'}
    client = runs['cloud'].bq.client()
    table = runs['table'].replace(':', '.')
    rows = client.query(f'SELECT uri, stage, error, run_id, CAST(run_date AS STRING) AS d '
                        f'FROM `{table}_errors` ORDER BY uri').result()
    got = {r['uri'].rsplit('/', 1)[1]: (r['stage'], r['error'], r['run_id'], r['d'])
           for r in rows}
    assert got == {'broken.jpg': ('decode', 'not_an_image', 'remote', '2026-11-20'),
                   'truncated.jpg': ('decode', 'truncated', 'remote', '2026-11-20')}


def test_the_bigquery_table_holds_the_same_rows_as_the_parquet_files(runs):
    client = runs['cloud'].bq.client()
    table = runs['table'].replace(':', '.')
    result = client.query(
        f'SELECT uri, top_label, labels, embedding, model_id, run_id, '
        f'CAST(run_date AS STRING) AS d FROM `{table}`').result()
    bq = {r['uri']: r for r in result}
    parquet = {r['uri']: r for r in read_parquet_rows('gs://imagelabel-test/e2e/out', 'labels')}
    assert set(bq) == set(parquet) and len(bq) == PHOTOS
    for uri, p in parquet.items():
        b = bq[uri]
        assert b['top_label'] == p['top_label'] and b['model_id'] == p['model_id']
        assert b['run_id'] == 'remote' and b['d'] == '2026-11-20'
        assert [(x['index'], x['label']) for x in b['labels']] == [
            (x['index'], x['label']) for x in p['labels']]
        assert max(abs(x['score'] - y['score']) for x, y in zip(b['labels'], p['labels'])) < 1e-6
        assert len(b['embedding']) == len(p['embedding']) == 1280
        assert max(abs(x - y) for x, y in zip(b['embedding'], p['embedding'])) < 1e-6


def test_the_table_is_partitioned_by_run_date_and_clustered_by_top_label(runs):
    client = runs['cloud'].bq.client()
    for name, first in (('labels', 'top_label'), ('labels_errors', 'error')):
        t = client.get_table(f'{runs["cloud"].project}.e2e.{name}')
        assert t.time_partitioning.field == 'run_date'
        assert t.clustering_fields[0] == first and 'model_id' in t.clustering_fields
        fields = {f.name: f for f in t.schema}
        assert fields['run_date'].field_type == 'DATE'
        if name == 'labels':
            assert fields['labels'].mode == 'REPEATED'
            assert fields['labels'].field_type in ('RECORD', 'STRUCT')
            assert [f.name for f in fields['labels'].fields] == ['index', 'label', 'score']
            assert fields['embedding'].mode == 'REPEATED'
            assert fields['embedding'].field_type in ('FLOAT', 'FLOAT64')


def test_summary_json_lands_in_the_gs_output_folder_and_balances(runs):
    from pipeline.summary import read_summary
    s = read_summary('gs://imagelabel-test/e2e/out')
    assert s['inputs'] == PHOTOS + 2 and s['labeled'] == PHOTOS and s['errors'] == 2
    assert s['balanced'] and s['run_id'] == 'remote'
    assert s['storage_clients'] >= 1
    assert any(p.startswith('bigquery:') for p in s['outputs']['labels'])
    assert s['outputs']['labels'][0].startswith(
        'gs://imagelabel-test/e2e/out/run_date=2026-11-20/labels-')


def test_the_readme_bigquery_query_runs_on_the_emulator(runs):
    """The README's BigQuery SQL, verbatim but for the table name, against the emulator."""
    from test_docs import readme_sql_blocks
    client = runs['cloud'].bq.client()
    table = runs['table'].replace(':', '.')
    blocks = readme_sql_blocks('bigquery')
    assert blocks, 'the README has no ```sql bigquery example'
    parquet = read_parquet_rows('gs://imagelabel-test/e2e/out', 'labels')
    expected_top = {}
    for r in parquet:
        expected_top[r['top_label']] = expected_top.get(r['top_label'], 0) + 1
    for sql in blocks:
        rows = list(client.query(sql.replace('PROJECT.DATASET.TABLE', table)).result())
        assert rows, sql
        if 'top_label' in sql and 'COUNT' in sql.upper():
            assert {r[0]: r[1] for r in rows}.items() <= expected_top.items()


def test_a_manifest_mixing_gs_uris_and_relative_names_with_a_gs_keras_model_and_labels(
        runs, tiny_keras_model):
    """--input manifest, --model .keras, --labels_file: all gs://; relative names resolve."""
    cloud = runs['cloud']
    bucket = cloud.gcs.client().bucket('imagelabel-test')
    names = sorted(n for n in runs['files'] if n.endswith('.JPEG'))[:3]
    _upload(bucket, 'mix/here', {n: runs['files'][n] for n in names[:2]})
    bucket.blob('mix/tiny.keras').upload_from_filename(str(tiny_keras_model))
    bucket.blob('mix/labels.txt').upload_from_string(
        '\n'.join(f'class {i}' for i in range(1000)))
    manifest = f'uri\nhere/{names[0]}\nhere/{names[1]}\ngs://imagelabel-test/e2e/in/{names[2]}\n'
    bucket.blob('mix/manifest.csv').upload_from_string(manifest)
    copies = model_copies('tiny.keras')
    result = run_cli('run', '--input', 'gs://imagelabel-test/mix/manifest.csv',
                     '--output', 'gs://imagelabel-test/mix/out',
                     '--model', 'gs://imagelabel-test/mix/tiny.keras',
                     '--labels', 'gs://imagelabel-test/mix/labels.txt')
    assert result.code == 0, result.err
    rows = read_parquet_rows('gs://imagelabel-test/mix/out', 'labels')
    assert sorted(r['uri'] for r in rows) == sorted([
        f'gs://imagelabel-test/mix/here/{names[0]}', f'gs://imagelabel-test/mix/here/{names[1]}',
        f'gs://imagelabel-test/e2e/in/{names[2]}'])
    assert all(r['top_label'].startswith('class ') for r in rows)
    # The model copied from gs:// to local disk was deleted once loaded.
    assert model_copies('tiny.keras') == copies


def test_storage_emulator_host_alone_points_python_m_pipeline_run_at_the_emulator(
        runs, mobilenet_v2_quant):
    """A fresh process, no flags about emulators or credentials: the one setting suffices."""
    cloud = runs['cloud']
    env = {k: v for k, v in os.environ.items()
           if k not in ('BIGQUERY_EMULATOR_HOST', 'GOOGLE_CLOUD_PROJECT', 'NO_GCE_CHECK')}
    env['STORAGE_EMULATOR_HOST'] = cloud.gcs.url
    env['PYTHONPATH'] = str(pathlib.Path(__file__).resolve().parents[1])
    proc = subprocess.run(
        [sys.executable, '-m', 'pipeline.run', '--input', 'gs://imagelabel-test/e2e/in/',
         '--output', 'gs://imagelabel-test/e2e/out-sub', '--model',
         'gs://imagelabel-test/e2e/m.tflite'],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from pipeline.summary import read_summary
    s = read_summary('gs://imagelabel-test/e2e/out-sub')
    assert s['labeled'] == PHOTOS and s['errors'] == 2


def test_an_existing_table_with_another_schema_fails_the_launch_naming_the_fields(
        runs, mobilenet_v2_quant):
    from google.cloud import bigquery
    cloud = runs['cloud']
    client = cloud.bq.client()
    client.create_dataset('old', exists_ok=True)
    client.create_table(bigquery.Table(f'{cloud.project}.old.labels', schema=[
        bigquery.SchemaField('uri', 'STRING', mode='REQUIRED'),
        bigquery.SchemaField('top_label', 'INTEGER'),
    ]))
    result = run_cli('run', '--input', runs['tmp'] / 'in', '--model', mobilenet_v2_quant,
                     '--bigquery_table', f'{cloud.project}.old.labels',
                     '--bigquery_method', 'streaming_inserts')
    assert result.code == 2
    (line,) = result.err.strip().splitlines()
    assert 'incompatible schema' in line and 'labels is missing' in line
    assert 'top_label is NULLABLE INTEGER, expected REQUIRED STRING' in line
    assert client.query(f'SELECT COUNT(*) FROM `{cloud.project}.old.labels`').result().total_rows


def test_bigquery_alone_with_streaming_inserts_needs_no_output_folder(runs):
    cloud = runs['cloud']
    result = run_cli('run', '--input', runs['tmp'] / 'in',
                     '--model', 'gs://imagelabel-test/e2e/m.tflite',
                     '--bigquery_table', f'{cloud.project}.stream.labels',
                     '--bigquery_method', 'streaming_inserts', '--run_date', '2026-11-21')
    assert result.code == 0, result.err
    client = cloud.bq.client()
    n = list(client.query(f'SELECT COUNT(*) FROM `{cloud.project}.stream.labels` '
                          "WHERE run_date = '2026-11-21'").result())[0][0]
    e = list(client.query(f'SELECT COUNT(*) FROM `{cloud.project}.stream.labels_errors`'
                          ).result())[0][0]
    assert (n, e) == (PHOTOS, 2)
    assert 'bigquery:' in result.out and 'Parquet' not in result.err.split('labeling')[0]


def test_summary_json_is_valid_json_with_the_storage_client_count(runs):
    text = runs['cloud'].gcs.client().bucket('imagelabel-test').blob(
        'e2e/out/run_date=2026-11-20/summary.json').download_as_text()
    assert json.loads(text)['storage_clients'] <= 4


def test_a_gs_glob_input_labels_just_the_matching_objects(runs):
    result = run_cli('run', '--input', 'gs://imagelabel-test/e2e/in/*.JPEG',
                     '--output', 'gs://imagelabel-test/e2e/out-glob',
                     '--model', 'gs://imagelabel-test/e2e/m.tflite')
    assert result.code == 0, result.err
    from pipeline.summary import read_summary
    s = read_summary('gs://imagelabel-test/e2e/out-glob')
    assert (s['inputs'], s['labeled'], s['errors']) == (PHOTOS, PHOTOS, 0)  # no .jpg matched


def test_named_model_weights_load_from_gs_and_leave_no_local_copy(runs, tmp_path):
    import keras

    from transforms.label import load_labeled_model
    from transforms.models import file_fingerprint, resolve_spec
    keras.utils.set_random_seed(3)
    local = tmp_path / 'mobilenet_v2.weights.h5'
    keras.applications.MobileNetV2(weights=None).save_weights(local)
    runs['cloud'].gcs.client().bucket('imagelabel-test').blob(
        'weights/mobilenet_v2.weights.h5').upload_from_filename(str(local))
    before = model_copies('mobilenet_v2.weights.h5')
    model = load_labeled_model(
        resolve_spec('mobilenet_v2', weights='gs://imagelabel-test/weights/mobilenet_v2.weights.h5'),
        batch_size=1, precision='float32', threads=None, recipe='crop')
    assert model.model_id.startswith(file_fingerprint(str(local))[:16])
    assert model_copies('mobilenet_v2.weights.h5') == before


def model_copies(name: str) -> set[pathlib.Path]:
    """Local copies of a gs:// model file anywhere in the temp folder (the old way or ours)."""
    import tempfile
    root = pathlib.Path(tempfile.gettempdir())
    return set(root.glob(f'*{name}')) | set(root.glob(f'imagelabel-model-*/**/{name}'))


def test_rerunning_a_date_replaces_its_bigquery_partition_and_keeps_other_dates(runs):
    cloud = runs['cloud']
    client = cloud.bq.client()
    table = f'{cloud.project}.redo.labels'

    def counts():
        return dict(list(client.query(
            f'SELECT CAST(run_date AS STRING), COUNT(*) FROM `{table}` GROUP BY 1').result()))

    for date in ('2026-11-01', '2026-11-02', '2026-11-02'):  # the second date twice
        result = run_cli('run', '--input', runs['tmp'] / 'in',
                         '--model', 'gs://imagelabel-test/e2e/m.tflite',
                         '--bigquery_table', table, '--bigquery_method', 'streaming_inserts',
                         '--run_date', date)
        assert result.code == 0, result.err
    assert counts() == {'2026-11-01': PHOTOS, '2026-11-02': PHOTOS}
    errors = dict(list(client.query(
        f'SELECT CAST(run_date AS STRING), COUNT(*) FROM `{table}_errors` GROUP BY 1').result()))
    assert errors == {'2026-11-01': 2, '2026-11-02': 2}


def _objects_below(folder: str) -> list[str]:
    from apache_beam.io.filesystems import FileSystems
    return sorted(m.path[len(folder) + 1:] for r in FileSystems.match([f'{folder}/**'])
                  for m in r.metadata_list)


def test_rerunning_a_date_on_gs_moves_the_staged_files_in_and_keeps_a_young_leftover(runs):
    from apache_beam.io.filesystems import FileSystems
    out = 'gs://imagelabel-test/redo-parquet/out'
    day = f'{out}/run_date=2026-11-03'
    with FileSystems.create(f'{day}/.staging-other-run/labels-00000-of-00001.parquet') as f:
        f.write(b'a run of this date still going, or one that failed a minute ago')
    for run_id in ('first', 'second'):
        result = run_cli('run', '--input', runs['tmp'] / 'in', '--output', out,
                         '--model', 'gs://imagelabel-test/e2e/m.tflite', '--run_id', run_id,
                         '--run_date', '2026-11-03')
        assert result.code == 0, result.err
    assert _objects_below(day) == [
        '.staging-other-run/labels-00000-of-00001.parquet', 'errors-00000-of-00001.parquet',
        'labels-00000-of-00001.parquet', 'summary.json']
    assert {r['run_id'] for r in read_parquet_rows(out, 'labels')} == {'second'}
    assert len(read_parquet_rows(out, 'labels')) == PHOTOS


def test_publishing_on_gs_deletes_staging_folders_at_any_depth(runs):
    from apache_beam.io.filesystems import FileSystems
    from transforms.sinks.staging import publish_staged
    day = 'gs://imagelabel-test/publish/out/run_date=2026-11-04'
    for name, data in (('labels-00000-of-00002.parquet', b'earlier'), ('summary.json', b'{}'),
                       ('.staging-ours/labels-00000-of-00001.parquet', b'ours'),
                       ('.staging-ours/errors-00000-of-00001.parquet', b'ours'),
                       ('.staging-late/labels-00000-of-00001.parquet', b'failed'),
                       ('.staging-early/beam-temp-labels-1a/2b.parquet', b'failed')):
        with FileSystems.create(f'{day}/{name}') as f:
            f.write(data)
    publish_staged(day, f'{day}/.staging-ours', leftover_age_s=0)  # every leftover is old
    assert _objects_below(day) == ['errors-00000-of-00001.parquet',
                                   'labels-00000-of-00001.parquet']


def test_a_launch_refused_by_one_sink_deletes_nothing_in_the_others(runs, tmp_path):
    from google.cloud import bigquery
    cloud = runs['cloud']
    client = cloud.bq.client()
    table = f'{cloud.project}.keep.labels'
    date = ['--run_date', '2026-11-03', '--model', 'gs://imagelabel-test/e2e/m.tflite']
    first = run_cli('run', '--input', runs['tmp'] / 'in', '--output', tmp_path / 'out',
                    '--bigquery_table', table, '--bigquery_method', 'streaming_inserts', *date)
    assert first.code == 0, first.err
    partition = tmp_path / 'out' / 'run_date=2026-11-03'
    before = sorted(p.name for p in partition.iterdir())
    # The errors table now has a schema the run cannot write: the relaunch is refused.
    client.delete_table(f'{table}_errors')
    client.create_table(bigquery.Table(f'{table}_errors', schema=[
        bigquery.SchemaField('uri', 'INTEGER')]))
    again = run_cli('run', '--input', runs['tmp'] / 'in', '--output', tmp_path / 'out',
                    '--bigquery_table', table, '--bigquery_method', 'streaming_inserts', *date)
    assert again.code == 2 and 'incompatible schema' in again.err, again.err
    assert sorted(p.name for p in partition.iterdir()) == before  # Parquet and summary kept
    assert 'summary.json' in before
    kept = list(client.query(f'SELECT COUNT(*) FROM `{table}`').result())[0][0]
    assert kept == PHOTOS  # the labels table's rows of that date, kept


def test_a_bigquery_delete_refused_after_the_checks_leaves_the_parquet_partition(
        runs, tmp_path, monkeypatch):
    from google.api_core import exceptions
    from transforms.sinks import bigquery as bq
    cloud = runs['cloud']
    argv = ['run', '--input', runs['tmp'] / 'in', '--output', tmp_path / 'out',
            '--bigquery_table', f'{cloud.project}.buffered.labels',
            '--bigquery_method', 'streaming_inserts', '--run_date', '2026-11-04',
            '--model', 'gs://imagelabel-test/e2e/m.tflite']
    assert run_cli(*argv).code == 0
    partition = tmp_path / 'out' / 'run_date=2026-11-04'
    before = sorted(p.name for p in partition.iterdir())

    def refused(client, table, run_date, **_):  # what BigQuery answers while rows are buffered
        raise exceptions.BadRequest('UPDATE or DELETE statement over table would affect rows '
                                    'in the streaming buffer, which is not supported')
    monkeypatch.setattr(bq, 'clear_partition', refused)
    again = run_cli(*argv)
    assert again.code == 2 and 'streaming buffer' in again.err, again.err
    assert sorted(p.name for p in partition.iterdir()) == before


def saved_model_on_gs(runs, keras_model, export, prefix: str) -> str:
    """The Keras model exported as a SavedModel folder, and uploaded under gs://.../prefix."""
    import keras
    keras.models.load_model(keras_model).export(str(export), verbose=False)
    bucket = runs['cloud'].gcs.client().bucket('imagelabel-test')
    for f in export.rglob('*'):
        if f.is_file():
            bucket.blob(f'{prefix}/{f.relative_to(export)}').upload_from_filename(str(f))
    return f'gs://imagelabel-test/{prefix}'


def test_a_saved_model_folder_on_gs_loads_and_leaves_no_local_copy(runs, tiny_keras_model,
                                                                   tmp_path):
    import numpy as np

    from transforms.label import load_labeled_model
    from transforms.models import file_fingerprint, resolve_spec
    export = tmp_path / 'saved'
    saved_model_on_gs(runs, tiny_keras_model, export, 'saved/tiny')
    before = model_copies('saved_model.pb')
    spec = resolve_spec('gs://imagelabel-test/saved/tiny')
    assert spec.format == 'saved_model'
    remote = load_labeled_model(spec, batch_size=2, precision='float32', threads=None,
                                recipe='crop')
    local = load_labeled_model(resolve_spec(str(export)), batch_size=2, precision='float32',
                               threads=None, recipe='crop')
    pixels = np.random.default_rng(2).integers(0, 256, (2, 64, 64, 3)).astype(np.uint8)
    np.testing.assert_allclose(remote.predict(pixels).probabilities,
                               local.predict(pixels).probabilities, rtol=1e-6)
    assert remote.model_id == local.model_id == remote.model_id
    assert remote.runtime.weights_sha256 == file_fingerprint(str(export))
    assert model_copies('saved_model.pb') == before


@pytest.mark.parametrize('flags', [('--precision', 'int8', '--int8_runtime', 'litert'),
                                   ('--precision', 'int8', '--int8_runtime', 'openvino'),
                                   ('--float_runtime', 'litert')])
def test_a_saved_model_folder_on_gs_converts_through_the_store(runs, tiny_keras_model,
                                                               int8_photos, tmp_path, flags):
    # The converters read a local copy made through FileSystems: TensorFlow's own gs://
    # reader would go to www.googleapis.com, past the emulator; OpenVINO has none.
    model = saved_model_on_gs(runs, tiny_keras_model, tmp_path / 'saved', 'saved/convert')
    result = run_cli('run', '--input', int8_photos, '--output', tmp_path / 'out', '--model',
                     model, '--model_cache', tmp_path / 'cache',
                     '--min_agreement', '0', '--calibration_images', '6',
                     '--agreement_images', '4', *flags)
    assert result.code == 0, result.err
    from pipeline.summary import read_summary
    assert read_summary(str(tmp_path / "out"))["labeled"] == 12


def test_a_report_over_a_gs_output_reads_rows_and_thumbnails_from_the_store(runs, tmp_path):
    page = tmp_path / 'report.html'
    result = run_cli('report', '--output', 'gs://imagelabel-test/e2e/out', '--out', page)
    assert result.code == 0, result.err
    figures = json.loads((tmp_path / 'report.json').read_text())
    assert figures['counts']['labeled'] == PHOTOS and figures['counts']['errors'] == 2
    assert figures['tiles']['shown'] == PHOTOS and figures['tiles']['unreadable'] == 0
    assert page.read_text().count('data:image/') >= PHOTOS  # thumbnails read through gs://


def test_an_int8_run_over_gs_calibrates_on_what_the_storage_client_reads(runs, tiny_keras_model,
                                                                        tmp_path):
    """The launch's calibration and agreement sample reads gs:// as the workers do, and
    skips the unreadable objects (the broken and the truncated file) instead of failing."""
    from conftest import int8_run
    from pipeline.summary import read_summary
    result = int8_run(tiny_keras_model, 'gs://imagelabel-test/e2e/in/',
                      'gs://imagelabel-test/int8/out', tmp_path / 'cache')
    assert result.code == 0, result.err
    summary = read_summary('gs://imagelabel-test/int8/out')
    assert summary['precision'] == 'int8' and summary['agreement']['images'] == 4
    assert summary['labeled'] == PHOTOS and summary['errors'] == len(BROKEN)


def test_a_float_litert_run_keeps_its_conversion_in_a_gs_model_cache(runs, tiny_keras_model,
                                                                      monkeypatch):
    """--float_runtime litert with a gs:// cache, as a remote run needs: written once (model,
    head, agreement, the entry's record) and read back by the next run, which converts nothing."""
    import re

    from apache_beam.io.filesystems import FileSystems
    from pipeline.summary import read_summary
    from transforms.models import float_litert
    cache = 'gs://imagelabel-test/float-cache'
    argv = ('--input', 'gs://imagelabel-test/e2e/in/', '--model', tiny_keras_model,
            '--float_runtime', 'litert', '--model_cache', cache, '--agreement_images', '4')
    first = run_cli('run', '--output', 'gs://imagelabel-test/float/a', *argv)
    assert first.code == 0, first.err
    names = [m.path.rsplit('/', 1)[-1] for m in FileSystems.match([cache + '/*'])[0].metadata_list]
    assert sorted(re.sub(r'^tiny\.keras-float32-litert-[0-9a-f]{20}\.', '', n) for n in names) == [
        'agreement.json', 'entry.json', 'head.npz', 'tflite']

    def no_conversion(*args, **kwargs):
        raise AssertionError('the second run converted again')
    monkeypatch.setattr(float_litert, 'convert', no_conversion)
    second = run_cli('run', '--output', 'gs://imagelabel-test/float/b', *argv)
    assert second.code == 0, second.err
    a, b = (read_summary(f'gs://imagelabel-test/float/{d}') for d in 'ab')
    assert a['model_id'] == b['model_id'] and a['agreement'] == b['agreement']
    assert b['labeled'] == PHOTOS and b['errors'] == len(BROKEN)
