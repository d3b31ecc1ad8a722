"""--int8_runtime openvino: NNCF quantization at launch, cached as one file, run by OpenVINO.

The mechanics on the random-weight tiny model with --min_agreement 0. The cache and the
TensorFlow-free worker are tested for both runtimes in test_int8.py, agreement on a
trained model in test_agreement.py.
"""
from __future__ import annotations

import sys

import pytest

from conftest import int8_run, read_parquet_rows, run_cli


def _openvino_run(model, photos, out, cache, *extra):
    return int8_run(model, photos, out, cache, '--int8_runtime', 'openvino', *extra)


def test_openvino_int8_rows_are_float32_rows_with_nearly_the_same_scores(
        tiny_keras_model, int8_photos, tmp_path):
    assert _openvino_run(tiny_keras_model, int8_photos, tmp_path / 'q', tmp_path / 'c').code == 0
    f32 = run_cli('run', '--input', int8_photos, '--output', tmp_path / 'f', '--model',
                  tiny_keras_model)
    assert f32.code == 0, f32.err
    q = {r['uri']: r for r in read_parquet_rows(tmp_path / 'q', 'labels')}
    f = {r['uri']: r for r in read_parquet_rows(tmp_path / 'f', 'labels')}
    assert set(q) == set(f) and set(next(iter(q.values()))) == set(next(iter(f.values())))
    for uri, row in f.items():
        assert len(q[uri]['embedding']) == len(row['embedding']) == 16
        # The float32 head runs on the int8 embedding: probabilities stay probabilities.
        assert abs(sum(lab['score'] for lab in q[uri]['labels'])
                   - sum(lab['score'] for lab in row['labels'])) < 1e-3
        diff = max(abs(a - b) for a, b in zip(q[uri]['embedding'], row['embedding']))
        assert diff < 0.05 * max(abs(v) for v in row['embedding'])


def test_openvino_on_a_saved_model_keeps_its_outputs(tiny_keras_model, int8_photos, tmp_path):
    import keras
    saved = tmp_path / 'saved'
    keras.models.load_model(tiny_keras_model).export(str(saved), verbose=False)
    r = _openvino_run(saved, int8_photos, tmp_path / 'q', tmp_path / 'c')
    assert r.code == 0, r.err
    f = run_cli('run', '--input', int8_photos, '--output', tmp_path / 'f', '--model', saved)
    assert f.code == 0, f.err
    q_rows = {r['uri']: r for r in read_parquet_rows(tmp_path / 'q', 'labels')}
    for row in read_parquet_rows(tmp_path / 'f', 'labels'):
        got = {lab['index']: lab['score'] for lab in q_rows[row['uri']]['labels']}
        want = {lab['index']: lab['score'] for lab in row['labels']}
        common = set(got) & set(want)
        assert len(common) >= 3 and max(abs(got[i] - want[i]) for i in common) < 1e-3


def test_int8_runtime_without_int8_precision_is_refused_when_parsed(tiny_keras_model, int8_photos,
                                                                    tmp_path):
    r = run_cli('run', '--input', int8_photos, '--output', tmp_path / 'o', '--model', tiny_keras_model,
                '--int8_runtime', 'openvino')
    assert r.code == 2
    assert r.err.strip().splitlines()[-1] == (
        'imagelabel: error: --int8_runtime openvino applies to --precision int8 only; add '
        '--precision int8, or leave --int8_runtime out')


def test_without_openvino_installed_the_error_says_what_to_install(monkeypatch):
    from transforms.models.openvino_int8 import require
    monkeypatch.setitem(sys.modules, 'openvino', None)  # import openvino now fails
    with pytest.raises(ValueError, match=r"needs pip install 'imagelabel\[openvino\]'.*"
                                         r"missing: openvino"):
        require()
