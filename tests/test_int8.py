"""--precision int8: converted once at launch, cached, loaded by workers without TensorFlow.

These tests use the random-weight tiny model with --min_agreement 0: they check the
mechanics (cache, schema, refusals). Agreement itself is tested on a trained model
in test_agreement.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from pipeline.summary import read_summary

from conftest import ROOT, dense_classifier, int8_run, read_parquet_rows, run_cli


@pytest.mark.parametrize('runtime, suffix', [('litert', '.tflite'), ('openvino', '.ovz')])
def test_a_scheduled_run_converts_once_and_then_loads_from_the_cache(
        tiny_keras_model, int8_photos, tmp_path, conversions, runtime, suffix):
    cache = tmp_path / 'cache'
    flags = ('--int8_runtime', runtime)
    first = int8_run(tiny_keras_model, int8_photos, tmp_path / 'a', cache, *flags)
    assert first.code == 0, first.err
    # one model file, the float32 head, the calibration set's names, and the entry's record
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 4 and files[0].endswith('.calibration.json')
    assert files[1].endswith('.entry.json')
    assert files[2].endswith('.head.npz') and files[3].endswith(suffix)
    assert files[3].startswith(f'tiny.keras-int8-{runtime}-')
    second = int8_run(tiny_keras_model, int8_photos, tmp_path / 'b', cache, *flags)
    assert second.code == 0, second.err
    assert [c.runtime for c in conversions] == [runtime]  # the second run used the cache
    a = read_summary(str(tmp_path / 'a'))
    b = read_summary(str(tmp_path / 'b'))
    assert a['model_id'] == b['model_id'] and a['precision'] == b['precision'] == 'int8'
    assert a['labeled'] == 12 and a['agreement']['images'] == 4


def test_another_calibration_set_is_another_cache_entry(
        tiny_keras_model, int8_photos, tmp_path, conversions):
    cache = tmp_path / 'cache'
    assert int8_run(tiny_keras_model, int8_photos, tmp_path / 'a', cache).code == 0
    assert int8_run(tiny_keras_model, int8_photos, tmp_path / 'b', cache,
                     '--calibration_images', '5').code == 0
    assert len(conversions) == 2 and conversions[0].digest != conversions[1].digest
    assert len(list(cache.glob('*.tflite'))) == 2


def test_a_nightly_int8_run_over_a_grown_input_keeps_its_conversion_and_model_id(
        tiny_keras_model, int8_photos, tmp_path, conversions):
    # Another night, one more photo: the seeded sample differs, but the conversion (and so
    # model_id) is that of the same --input, and --skip_existing labels only the new photo.
    import shutil
    from conftest import write_jpeg
    bucket, cache, out = tmp_path / 'bucket', tmp_path / 'cache', tmp_path / 'out'
    shutil.copytree(int8_photos, bucket)
    night = ('--skip_existing', '--run_date')
    assert int8_run(tiny_keras_model, bucket, out, cache, *night, '2026-11-01').code == 0
    write_jpeg(bucket / 'new.jpg', size=(96, 80), seed=99)
    second = int8_run(tiny_keras_model, bucket, out, cache, *night, '2026-11-02')
    assert second.code == 0, second.err
    first, later = (read_summary(str(out), run_date=d) for d in ('2026-11-01', '2026-11-02'))
    assert len(conversions) == 1 and first['model_id'] == later['model_id']
    assert (later['skipped'], later['labeled']) == (12, 1)
    # Tonight's held-out slice, drawn as the launch draws it, holds some of the first
    # night's calibration photos (so with this seed): those are left out of the check.
    from apache_beam.options.pipeline_options import PipelineOptions
    from pipeline.model_prep import sample_images
    from pipeline.options import settings_from
    s = settings_from(PipelineOptions(['--input', str(bucket), '--output', str(out),
                                       '--precision', 'int8']))
    tonight = sample_images(s, (64, 64), held_out=4, calibration=6)
    (listed,) = cache.glob('*.calibration.json')
    calibrated = set(json.loads(listed.read_text())['images'])
    assert len(calibrated) == 6 and {n.rsplit(':', 1)[0] for n in calibrated} <= {
        str(p) for p in bucket.iterdir()}
    seen = len(set(tonight.held_out_names) & calibrated)
    assert 0 < seen < 4
    assert first['agreement']['images'] == 4 and later['agreement']['images'] == 4 - seen


def test_unseen_leaves_out_held_out_images_a_cached_conversion_was_calibrated_on(caplog):
    import logging
    from pipeline.model_prep import Sample, unseen
    images = np.arange(4).reshape(4, 1, 1, 1).astype(np.uint8)
    sample = Sample(images, images[:0], 'd', 's',
                    ('gs://b/a.jpg:1', 'b:2', 'c:e.jpg:3', 'd:4'), ())
    kept, left_out = unseen(sample, {'b:2', 'x/c:d.jpg:3', 'e:5'})
    assert left_out == 2 and kept.ravel().tolist() == [0, 3]  # the same content, any name
    assert unseen(sample, {'b:9'})[1] == 0  # the same URI with other content is unseen
    assert unseen(sample, set())[1] == 0
    with caplog.at_level(logging.WARNING, logger='imagelabel'):
        kept, left_out = unseen(sample, {'a:1', 'b:2', 'c:3', 'd:4'})  # all seen: keep all
    assert left_out == 0 and len(kept) == 4
    assert 'all 4 held-out images were in the cached conversion' in caplog.text


def test_a_calibration_list_keeps_names_with_line_breaks_and_undecodable_bytes(tmp_path):
    from transforms.models import int8
    names = ['a\nb.jpg:1', 'c\u2028d.jpg:2', 'p\udcff0.jpg:3', 'gs://b/e:f.jpg:4']
    files = int8.cached_files(str(tmp_path), 'key')
    int8.store(files, b'model', b'head', names)
    assert files.usable() and int8.calibration_names(files) == set(names)


def test_a_first_night_too_small_for_the_sample_is_not_every_later_nights_calibration(
        tiny_keras_model, int8_photos, tmp_path, conversions):
    import shutil
    bucket, cache = tmp_path / 'bucket', tmp_path / 'cache'
    bucket.mkdir()
    for p in sorted(int8_photos.iterdir())[:3]:  # 3 photos: a sample of 4 + 6 comes up short
        shutil.copy(p, bucket / p.name)
    assert int8_run(tiny_keras_model, bucket, tmp_path / 'a', cache).code == 0
    for p in sorted(int8_photos.iterdir())[3:]:
        shutil.copy(p, bucket / p.name)
    assert int8_run(tiny_keras_model, bucket, tmp_path / 'b', cache).code == 0
    assert int8_run(tiny_keras_model, bucket, tmp_path / 'c', cache).code == 0
    assert len(conversions) == 2  # once short, once full; the full one is kept


def test_int8_rows_have_the_float32_schema_labels_and_embedding(tiny_keras_model, int8_photos,
                                                                tmp_path):
    assert int8_run(tiny_keras_model, int8_photos, tmp_path / 'q', tmp_path / 'cache').code == 0
    f32 = run_cli('run', '--input', int8_photos, '--output', tmp_path / 'f', '--model',
                  tiny_keras_model)
    assert f32.code == 0, f32.err
    q_rows = read_parquet_rows(tmp_path / 'q', 'labels')
    f_rows = read_parquet_rows(tmp_path / 'f', 'labels')
    assert set(q_rows[0]) == set(f_rows[0])
    assert len(q_rows[0]['embedding']) == len(f_rows[0]['embedding']) == 16
    assert len(q_rows[0]['labels']) == 5
    names = set()
    for row in q_rows:
        names.update(label['label'] for label in row['labels'])
        assert row['model'] == 'tiny.keras'
    assert names <= set((ROOT / 'transforms' / 'data' / 'imagenet_labels.txt').read_text().split('\n'))


def test_a_saved_model_folder_converts_to_int8_and_labels_like_its_float32_self(
        tiny_keras_model, int8_photos, tmp_path, conversions):
    import keras
    saved = tmp_path / 'saved'
    keras.models.load_model(tiny_keras_model).export(str(saved), verbose=False)
    cache = tmp_path / 'cache'
    q = int8_run(saved, int8_photos, tmp_path / 'q', cache)
    assert q.code == 0, q.err
    assert len(conversions) == 1 and len(list(cache.glob('saved-int8-litert-*.tflite'))) == 1
    summary = read_summary(str(tmp_path / 'q'))
    assert summary['precision'] == 'int8' and summary['labeled'] == 12
    assert summary['agreement']['images'] == 4
    f = run_cli('run', '--input', int8_photos, '--output', tmp_path / 'f', '--model', saved)
    assert f.code == 0, f.err
    q_rows = {r['uri']: r for r in read_parquet_rows(tmp_path / 'q', 'labels')}
    f_rows = {r['uri']: r for r in read_parquet_rows(tmp_path / 'f', 'labels')}
    assert set(q_rows) == set(f_rows) and set(next(iter(q_rows.values()))) == set(
        next(iter(f_rows.values())))
    # Same classes, scores within int8's rounding: quantized, not another model.
    for uri, row in f_rows.items():
        f_scores = {lab['index']: lab['score'] for lab in row['labels']}
        q_scores = {lab['index']: lab['score'] for lab in q_rows[uri]['labels']}
        common = set(f_scores) & set(q_scores)
        assert len(common) >= 3, (f_scores, q_scores)
        assert max(abs(f_scores[i] - q_scores[i]) for i in common) < 0.05
    again = int8_run(saved, int8_photos, tmp_path / 'q2', cache)  # the cache serves the rerun
    assert again.code == 0 and len(conversions) == 1


@pytest.mark.parametrize('activation, outputs', [('linear', 'probabilities'),
                                                 ('softmax', 'logits')])
def test_a_saved_model_in_int8_scores_like_tensorflow_when_model_outputs_overrides_it(
        activation, outputs, int8_photos, tmp_path):
    model = dense_classifier(tmp_path, activation, saved_model=True)
    q = int8_run(model, int8_photos, tmp_path / 'q', tmp_path / 'cache', '--model_outputs', outputs)
    assert q.code == 0, q.err
    f = run_cli('run', '--input', int8_photos, '--output', tmp_path / 'f', '--model', model,
                '--model_outputs', outputs)
    assert f.code == 0, f.err
    q_rows = {r['uri']: r for r in read_parquet_rows(tmp_path / 'q', 'labels')}
    f_rows = {r['uri']: r for r in read_parquet_rows(tmp_path / 'f', 'labels')}
    # Raw outputs taken as probabilities stay raw, and a softmax taken as logits is
    # softmaxed twice, as on TensorFlow: equal within int8's rounding of the logits.
    for uri, row in f_rows.items():
        assert q_rows[uri]['labels'][0]['index'] == row['labels'][0]['index']
        np.testing.assert_allclose([lab['score'] for lab in q_rows[uri]['labels']],
                                   [lab['score'] for lab in row['labels']], rtol=0.02)


def test_int8_on_a_tflite_model_is_refused_with_one_line(mobilenet_v2_quant, int8_photos, tmp_path):
    r = int8_run(mobilenet_v2_quant, int8_photos, tmp_path / 'o', tmp_path / 'cache')
    assert r.code == 2
    assert r.err.strip().splitlines()[-1] == (
        'imagelabel: error: --precision int8 applies to a named Keras application, a Keras '
        'file, a SavedModel directory; a TFLite file runs at the precision it was converted with')


def test_a_remote_run_needs_a_model_cache_workers_can_read(tiny_keras_model, tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions
    from pipeline.model_prep import load_model_facts
    from pipeline.options import settings_from
    s = settings_from(PipelineOptions(['--input', 'gs://b/in', '--model', str(tiny_keras_model),
                                       '--precision', 'int8', '--model_cache', str(tmp_path)]))
    with pytest.raises(ValueError, match='--model_cache .* is a local path'):
        load_model_facts(s, local=False)


def test_a_worker_never_converts(tiny_keras_model):
    from transforms.models import load_runtime, resolve_spec
    with pytest.raises(ValueError, match='converts it at launch'):
        load_runtime(resolve_spec(str(tiny_keras_model)), precision='int8')


_WORKER = r'''
import json, sys
import numpy as np
from transforms.label import ImageModelHandler
from transforms.models import ModelSpec
spec = ModelSpec(name='tiny.keras', format=sys.argv[2], path=sys.argv[1], preprocess='inception',
                 outputs='probabilities')
model = ImageModelHandler(spec, precision='int8').load_model()
p = model.predict(np.full((2, 64, 64, 3), 100, np.uint8))
print(json.dumps({'tensorflow': 'tensorflow' in sys.modules, 'shape': list(p.probabilities.shape),
                  'sum': float(p.probabilities[0].sum()), 'precision': model.runtime.precision}))
'''


@pytest.mark.parametrize('runtime, suffix, fmt', [('litert', '.tflite', 'int8_tflite'),
                                                  ('openvino', '.ovz', 'int8_openvino')])
def test_a_worker_loads_the_cached_int8_file_without_tensorflow(tiny_keras_model, int8_photos,
                                                                tmp_path, runtime, suffix, fmt):
    cache = tmp_path / 'cache'
    assert int8_run(tiny_keras_model, int8_photos, tmp_path / 'o', cache,
                     '--int8_runtime', runtime).code == 0
    (cached,) = cache.glob('*' + suffix)
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL='2')
    out = subprocess.run([sys.executable, '-c', _WORKER, str(cached), fmt], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen['tensorflow'] is False and seen['shape'] == [2, 1000]
    assert seen['sum'] == pytest.approx(1.0, abs=1e-4) and seen['precision'] == 'int8'


def test_a_head_trained_on_an_int8_runs_embeddings_labels_an_int8_run(
        tiny_keras_model, int8_photos, tmp_path):
    from pipeline.train_head import build_head
    from transforms.head import HeadInfo, save_head
    cache = tmp_path / 'cache'
    assert int8_run(tiny_keras_model, int8_photos, tmp_path / 'plain', cache).code == 0
    plain = read_summary(str(tmp_path / 'plain'))
    head = tmp_path / 'head.keras'
    save_head(build_head(16, 2, 0), HeadInfo(('yes', 'no'), 16, plain['model_id'],
                                             tiny_keras_model.name), str(head))
    headed = int8_run(tiny_keras_model, int8_photos, tmp_path / 'headed', cache, '--head', head)
    assert headed.code == 0, headed.err
    rows = read_parquet_rows(tmp_path / 'headed', 'labels')
    assert len(rows) == 12 and {r['top_label'] for r in rows} <= {'yes', 'no'}
    # The agreement is the base models' (int8 against float32), as without the head.
    assert read_summary(str(tmp_path / 'headed'))['agreement'] == plain['agreement']


def test_an_int8_dry_run_converts_in_a_temporary_folder_and_leaves_the_cache_alone(
        tiny_keras_model, int8_photos, tmp_path, conversions):
    cache = tmp_path / 'cache'
    dry = int8_run(tiny_keras_model, int8_photos, tmp_path / 'dry', cache, '--dry_run')
    assert dry.code == 0, dry.err
    assert len(conversions) == 1  # converted and checked, as a run would
    assert not cache.exists() or not list(cache.iterdir())


def test_a_softmax_is_moved_out_only_where_there_is_one_and_the_file_records_its_scoring():
    import keras
    import tensorflow as tf
    from transforms.models.litert import (Scoring, ends_in_softmax, logits_instead_of_softmax,
                                          scoring_of, with_scoring)

    def tflite(activation: str) -> bytes:
        inputs = keras.Input((8,))
        model = keras.Model(inputs, keras.layers.Dense(4, activation=activation)(inputs))
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()

    with_softmax = tflite('softmax')
    logits, moved = logits_instead_of_softmax(with_softmax)
    assert moved and ends_in_softmax(with_softmax) and not ends_in_softmax(logits)
    linear = tflite('linear')
    assert logits_instead_of_softmax(linear) == (linear, False)
    # A file says nothing until its conversion records how its scores are read.
    assert scoring_of(logits) == Scoring() == scoring_of(linear)
    recorded = with_scoring(logits, Scoring('probabilities', softmax_moved=True))
    assert scoring_of(recorded) == Scoring('probabilities', True)
    assert not ends_in_softmax(recorded)  # the description only: the graph is the same


@pytest.mark.parametrize('output_kind, moved, softmaxes', [
    ('probabilities', False, 0), ('logits', False, 1),
    ('probabilities', True, 1), ('logits', True, 2)])
def test_a_files_scores_get_the_softmaxes_tensorflow_would_apply(output_kind, moved, softmaxes):
    from transforms.models.int8 import file_softmaxes, int8_scores
    assert file_softmaxes(output_kind, moved) == softmaxes
    raw = np.array([[2.0, 0.0, -1.0]], np.float32)
    expected = raw
    for _ in range(softmaxes):
        expected = np.exp(expected) / np.exp(expected).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(int8_scores(None, softmaxes, np.zeros((1, 2)), raw).probabilities,
                               expected, rtol=1e-6)


@pytest.mark.parametrize('runtime, converter', [('litert', 'tensorflow'), ('litert', 'keras'),
                                               ('openvino', 'nncf'), ('openvino', 'keras')])
def test_a_new_converter_version_is_another_cache_entry(monkeypatch, runtime, converter):
    # The .tflite is made by TensorFlow's converter, the OpenVINO IR by NNCF: an upgrade of
    # either may make another file, which must not be served from an older conversion.
    from transforms.models import int8, resolve_spec
    spec = resolve_spec('inception_v3')

    def key():
        return int8.cache_key(weights_sha256='w', spec=spec, input_size=(299, 299),
                              calibration_source='s', runtime=f'{runtime}-1.0')
    real = int8.package_version
    before = key()
    monkeypatch.setattr(int8, 'package_version',
                        lambda name: '999.0' if name == converter else real(name))
    assert key() != before
