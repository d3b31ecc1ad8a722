"""--float_runtime litert: a Keras model converted once to a float32 .tflite, checked
against TensorFlow before it is cached, and run from the cache without TensorFlow."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from pipeline.summary import read_summary

from conftest import ROOT, dense_classifier, read_parquet_rows, run_cli


def float_run(model, photos, out, cache, *extra):
    return run_cli('run', '--input', photos, '--output', out, '--model', model,
                   '--float_runtime', 'litert', '--model_cache', cache,
                   '--agreement_images', '4', *extra)


def _by_uri(rows: list[dict]) -> dict[str, dict]:
    return {r['uri']: r for r in rows}


def _assert_scores_like_tensorflow(model, photos, tmp_path, *flags) -> None:
    """The converted model's rows score as TensorFlow's (a cold cache: it converts)."""
    lite = float_run(model, photos, tmp_path / 'lite', tmp_path / 'cache', *flags)
    assert lite.code == 0, lite.err
    tf = run_cli('run', '--input', photos, '--output', tmp_path / 'tf', '--model', model,
                 *flags)
    assert tf.code == 0, tf.err
    lite_rows, tf_rows = (_by_uri(read_parquet_rows(tmp_path / d, 'labels'))
                          for d in ('lite', 'tf'))
    assert sorted(lite_rows) == sorted(tf_rows)
    for uri, row in lite_rows.items():
        np.testing.assert_allclose([lab['score'] for lab in row['labels']],
                                   [lab['score'] for lab in tf_rows[uri]['labels']],
                                   rtol=1e-4, atol=1e-6)


def test_a_converted_model_labels_like_tensorflow_and_is_cached_with_its_agreement(
        tiny_keras_model, int8_photos, tmp_path):
    cache = tmp_path / 'cache'
    lite = float_run(tiny_keras_model, int8_photos, tmp_path / 'lite', cache)
    assert lite.code == 0, lite.err
    tf = run_cli('run', '--input', int8_photos, '--output', tmp_path / 'tf', '--model',
                 tiny_keras_model)
    assert tf.code == 0, tf.err
    lite_rows, tf_rows = (_by_uri(read_parquet_rows(tmp_path / d, 'labels'))
                          for d in ('lite', 'tf'))
    assert sorted(lite_rows) == sorted(tf_rows) and len(lite_rows) == 12
    for uri, row in lite_rows.items():
        ref = tf_rows[uri]
        assert [lab['label'] for lab in row['labels']][:1] == [
            lab['label'] for lab in ref['labels']][:1]
        np.testing.assert_allclose([lab['score'] for lab in row['labels']],
                                   [lab['score'] for lab in ref['labels']], atol=1e-5)
        np.testing.assert_allclose(row['embedding'], ref['embedding'], rtol=1e-4, atol=1e-5)
    names = sorted(p.name for p in cache.iterdir())
    assert [n.rsplit('-', 1)[0] for n in names] == ['tiny.keras-float32-litert'] * 4
    assert [n.split('.', 2)[-1] for n in names] == ['agreement.json', 'entry.json', 'head.npz',
                                                    'tflite']
    summary = read_summary(str(tmp_path / 'lite'))
    assert summary['precision'] == 'float32' and summary['labeled'] == 12
    assert summary['agreement']['precision'] == 'float32-litert'
    assert summary['agreement']['top1'] == 1.0 and summary['agreement']['images'] == 4
    stored = json.loads(next(cache.glob('*.agreement.json')).read_text())
    assert stored == summary['agreement']


@pytest.mark.parametrize('saved_model', [False, True], ids=['keras', 'saved_model'])
@pytest.mark.parametrize('activation, outputs', [('linear', 'probabilities'),
                                                 ('softmax', 'logits')])
def test_a_converted_model_scores_like_tensorflow_when_model_outputs_overrides_the_model(
        activation, outputs, saved_model, int8_photos, tmp_path):
    model = dense_classifier(tmp_path, activation, saved_model=saved_model)
    # A linear Dense taken as probabilities is not softmaxed; a softmax taken as logits is
    # softmaxed again, as TensorFlow does: by the float32 head of a Keras model, and by the
    # runtime over a SavedModel's file, which keeps the model's own output.
    _assert_scores_like_tensorflow(model, int8_photos, tmp_path, '--model_outputs', outputs)


def test_a_model_whose_dense_is_followed_by_another_activation_is_refused_in_one_line(
        int8_photos, tmp_path):
    import keras
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.GlobalAveragePooling2D(name='avg_pool')(
        keras.layers.Conv2D(8, 3, strides=2)(inputs))
    x = keras.layers.Dense(1000, name='predictions')(x)
    model = tmp_path / 'sigmoid.keras'
    keras.Model(inputs, keras.layers.Activation('sigmoid')(x)).save(model)
    r = float_run(model, int8_photos, tmp_path / 'o', tmp_path / 'cache')
    # A float32 head could not score it as TensorFlow does (sigmoid is not softmax).
    assert r.code == 2
    assert 'needs a final Dense classifier (softmax or linear)' in r.err.strip().splitlines()[-1]
    assert not (tmp_path / 'cache').exists() or not list((tmp_path / 'cache').iterdir())


_CACHED_RUN = r'''
import json, sys
from pipeline.run import main
code = main(sys.argv[1:])
print(json.dumps({'code': code, 'tensorflow': 'tensorflow' in sys.modules,
                  'keras': 'keras' in sys.modules}))
'''


def test_a_run_that_finds_its_conversion_cached_never_imports_tensorflow(
        tiny_keras_model, int8_photos, tmp_path):
    cache = tmp_path / 'cache'
    first = float_run(tiny_keras_model, int8_photos, tmp_path / 'a', cache)
    assert first.code == 0, first.err
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL='2')
    out = subprocess.run(
        [sys.executable, '-c', _CACHED_RUN, '--input', str(int8_photos), '--output',
         str(tmp_path / 'b'), '--model', str(tiny_keras_model), '--float_runtime', 'litert',
         '--model_cache', str(cache)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {'code': 0, 'tensorflow': False, 'keras': False}
    a, b = read_summary(str(tmp_path / 'a')), read_summary(str(tmp_path / 'b'))
    assert a['model_id'] == b['model_id'] and b['labeled'] == 12
    assert b['agreement'] == a['agreement']  # read back from the cache, not measured again
    assert _by_uri(read_parquet_rows(tmp_path / 'a', 'labels')).keys() == _by_uri(
        read_parquet_rows(tmp_path / 'b', 'labels')).keys()


def test_a_conversion_that_disagrees_with_tensorflow_is_refused_and_never_cached(
        tiny_keras_model, int8_photos, tmp_path, monkeypatch):
    from transforms.models import float_litert
    from transforms.models.float_head import FloatHead
    real = float_litert.convert_keras

    def swapped_classes(model, spec, input_size, output_kind):
        content, raw = real(model, spec, input_size, output_kind)
        head = FloatHead.from_bytes(raw)  # its classes in another order
        order = np.random.default_rng(0).permutation(head.num_outputs)
        return content, FloatHead(head.kernel[:, order], head.bias[order],
                                  head.softmaxes).to_bytes()
    monkeypatch.setattr(float_litert, 'convert_keras', swapped_classes)
    cache = tmp_path / 'cache'
    r = float_run(tiny_keras_model, int8_photos, tmp_path / 'o', cache)
    assert r.code != 0
    last = r.err.strip().splitlines()[-1]
    assert '--float_runtime litert agrees with TensorFlow\'s float32 on top-1 for only 0.' in last
    assert 'run on --float_runtime tensorflow' in last
    assert not cache.exists() or not list(cache.iterdir())


@pytest.mark.parametrize('extra, message', [
    (('--precision', 'int8'), '--float_runtime litert applies to --precision float32 only'),
    (('--precision', 'bf16'), '--float_runtime litert applies to --precision float32 only'),
])
def test_float_runtime_with_another_precision_is_one_clear_line(
        tiny_keras_model, int8_photos, tmp_path, extra, message):
    r = float_run(tiny_keras_model, int8_photos, tmp_path / 'o', tmp_path / 'cache', *extra)
    assert r.code == 2
    assert message in r.err.strip().splitlines()[-1]


def test_float_runtime_litert_on_a_tflite_model_is_refused_with_one_line(
        mobilenet_v2_quant, int8_photos, tmp_path):
    r = float_run(mobilenet_v2_quant, int8_photos, tmp_path / 'o', tmp_path / 'cache')
    assert r.code == 2
    assert r.err.strip().splitlines()[-1] == (
        'imagelabel: error: --float_runtime litert converts a Keras file, a named Keras '
        'application, a SavedModel directory; leave it out for a TFLite file')


def test_a_cached_conversion_still_answers_to_this_runs_min_agreement(
        tiny_keras_model, int8_photos, tmp_path, monkeypatch):
    from transforms.models import float_litert
    from transforms.models.model_cache import CachedModel
    cache = tmp_path / 'cache'
    assert float_run(tiny_keras_model, int8_photos, tmp_path / 'a', cache).code == 0
    (record,) = cache.glob('*.agreement.json')
    stored = json.loads(record.read_text())
    (model,) = cache.glob('*.tflite')
    files = CachedModel(str(model), '.tflite')
    float_litert.store(files, model.read_bytes(), pathlib.Path(files.head).read_bytes(),
                       {**stored, 'top1': 0.75})  # as if made with a lower gate
    strict = float_run(tiny_keras_model, int8_photos, tmp_path / 'b', cache)
    assert strict.code != 0
    assert 'on top-1 for only 0.750 of 4 held-out images (--min_agreement 0.9)' in (
        strict.err.strip().splitlines()[-1])
    lenient = float_run(tiny_keras_model, int8_photos, tmp_path / 'c', cache,
                        '--min_agreement', '0.7')
    assert lenient.code == 0, lenient.err
    assert read_summary(str(tmp_path / 'c'))['agreement']['top1'] == 0.75
    record.write_text('{"top1": ')  # damaged since: said, and the entry is made again
    from transforms.models import model_cache
    said = []
    monkeypatch.setattr(model_cache._log, 'warning', lambda f, *a: said.append(f % a))
    healed = float_run(tiny_keras_model, int8_photos, tmp_path / 'd', cache)
    assert healed.code == 0, healed.err
    assert len(said) == 1 and f'holds a damaged {record}' in said[0]
    assert said[0].endswith('converting again')
    assert json.loads(record.read_text())['top1'] == 1.0


def test_a_remote_run_needs_a_model_cache_its_workers_can_read(tiny_keras_model, tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions
    from pipeline.model_prep import load_model_facts
    from pipeline.options import settings_from
    s = settings_from(PipelineOptions(['--input', 'gs://b/in', '--model', str(tiny_keras_model),
                                       '--float_runtime', 'litert', '--model_cache',
                                       str(tmp_path)]))
    with pytest.raises(ValueError, match='--model_cache .* is a local path'):
        load_model_facts(s, local=False)


_KEYS = r'''
import json, sys
from transforms.models import resolve_spec
from transforms.models.float_litert import cache_key
keys = {'file': cache_key(resolve_spec(sys.argv[1])),
        'file_raw': cache_key(resolve_spec(sys.argv[1], preprocess='raw')),
        'other_file': cache_key(resolve_spec(sys.argv[2])),
        'application': cache_key(resolve_spec('inception_v3'))}
print(json.dumps({'keys': keys, 'tensorflow': 'tensorflow' in sys.modules}))
'''


def test_the_cache_key_names_the_model_without_importing_tensorflow(tiny_keras_model, tmp_path):
    other = tmp_path / 'other' / tiny_keras_model.name
    other.parent.mkdir()
    other.write_bytes(tiny_keras_model.read_bytes() + b'\0')  # same name, other bytes
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, '-c', _KEYS, str(tiny_keras_model), str(other)],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout)
    assert seen['tensorflow'] is False
    keys = seen['keys']
    assert len(set(keys.values())) == 4  # bytes, preprocessing and model all key it
    assert keys['file'].startswith('tiny.keras-float32-litert-')
    assert keys['application'].startswith('inception_v3-float32-litert-')


def test_a_head_fits_the_litert_models_embeddings_and_a_tensorflow_one_is_refused(
        tiny_keras_model, int8_photos, tmp_path):
    from pipeline.train_head import build_head
    from transforms.head import HeadInfo, save_head
    assert float_run(tiny_keras_model, int8_photos, tmp_path / 'lite', tmp_path / 'a').code == 0
    assert run_cli('run', '--input', int8_photos, '--output', tmp_path / 'tf', '--model',
                   tiny_keras_model).code == 0
    heads = {}
    for name in ('lite', 'tf'):
        info = HeadInfo(('left', 'middle', 'right'), 16,
                        read_summary(str(tmp_path / name))['model_id'], tiny_keras_model.name)
        heads[name] = tmp_path / f'{name}-head.keras'
        save_head(build_head(16, 3, 0), info, str(heads[name]))
    fits = float_run(tiny_keras_model, int8_photos, tmp_path / 'fits', tmp_path / 'a',
                     '--head', heads['lite'])
    assert fits.code == 0, fits.err
    rows = read_parquet_rows(tmp_path / 'fits', 'labels')
    assert len(rows) == 12 and {len(r['labels']) for r in rows} == {3}
    # A conversion made with --head compares the base models (the head is not theirs), and
    # the head made on TensorFlow's embeddings is refused, naming the flag that differs.
    other = float_run(tiny_keras_model, int8_photos, tmp_path / 'other', tmp_path / 'b',
                      '--head', heads['tf'])
    assert other.code == 2
    last = other.err.strip().splitlines()[-1]
    assert 'was trained on embeddings of tiny.keras' in last and '--float_runtime' in last


def test_a_saved_model_converts_and_labels_like_tensorflow_with_its_classifier_input_exposed(
        tiny_keras_model, int8_photos, tmp_path):
    import keras
    saved = tmp_path / 'saved'
    keras.models.load_model(tiny_keras_model).export(str(saved), verbose=False)
    cache = tmp_path / 'cache'
    lite = float_run(saved, int8_photos, tmp_path / 'lite', cache)
    assert lite.code == 0, lite.err
    tf = run_cli('run', '--input', int8_photos, '--output', tmp_path / 'tf', '--model', saved)
    assert tf.code == 0, tf.err
    lite_rows, tf_rows = (_by_uri(read_parquet_rows(tmp_path / d, 'labels'))
                          for d in ('lite', 'tf'))
    assert sorted(lite_rows) == sorted(tf_rows) and len(lite_rows) == 12
    for uri, row in lite_rows.items():
        assert [lab['index'] for lab in row['labels']][:1] == [
            lab['index'] for lab in tf_rows[uri]['labels']][:1]
        np.testing.assert_allclose([lab['score'] for lab in row['labels']],
                                   [lab['score'] for lab in tf_rows[uri]['labels']], atol=1e-5)
        assert len(row['embedding']) == 16  # the Dense's input, as int8 exposes it
    # No float head for a SavedModel: the .tflite keeps its softmax; and its agreement.
    names = sorted(p.name.split('.', 1)[-1] for p in cache.iterdir())
    assert names == ['agreement.json', 'entry.json', 'tflite'] and all(
        p.name.startswith('saved-float32-litert-') for p in cache.iterdir())
    summary = read_summary(str(tmp_path / 'lite'))
    assert summary['agreement']['top1'] == 1.0 and summary['precision'] == 'float32'


def test_a_dry_run_converts_and_checks_but_stores_nothing_and_uses_what_is_cached(
        tiny_keras_model, int8_photos, tmp_path, monkeypatch):
    from transforms.models import float_litert
    cache = tmp_path / 'cache'
    dry = float_run(tiny_keras_model, int8_photos, tmp_path / 'dry', cache, '--dry_run')
    assert dry.code == 0, dry.err
    assert not cache.exists() or not list(cache.iterdir())  # a dry run creates nothing
    assert not (tmp_path / 'dry').exists()
    assert float_run(tiny_keras_model, int8_photos, tmp_path / 'real', cache).code == 0
    assert len(list(cache.glob('*.tflite'))) == 1

    def no_conversion(*args, **kwargs):
        raise AssertionError('a dry run converted what the cache holds')
    monkeypatch.setattr(float_litert, 'convert', no_conversion)
    again = float_run(tiny_keras_model, int8_photos, tmp_path / 'dry2', cache, '--dry_run')
    assert again.code == 0, again.err


def test_a_saved_model_that_normalises_without_a_softmax_op_scores_like_tensorflow(
        int8_photos, tmp_path):
    # TensorFlow takes the outputs for probabilities on a probe (they sum to 1); the .tflite
    # has no SOFTMAX op to show it, so the conversion records TensorFlow's decision.
    import keras
    keras.utils.set_random_seed(3)
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.GlobalAveragePooling2D(name='avg_pool')(
        keras.layers.Conv2D(8, 3, strides=2, activation='relu')(inputs))
    z = keras.ops.relu(keras.layers.Dense(
        1000, bias_initializer=keras.initializers.RandomNormal(stddev=2.0))(x)) + 1e-3
    model = tmp_path / 'normalised'
    keras.Model(inputs, z / keras.ops.sum(z, axis=-1, keepdims=True)).export(
        str(model), verbose=False)
    _assert_scores_like_tensorflow(model, int8_photos, tmp_path)
