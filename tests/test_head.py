"""Heads: saved with their metadata inside, applied in the model call, refused on another base."""
import zipfile

import numpy as np
import pytest

from conftest import read_parquet_rows, run_cli
from pipeline.train_head import build_head
from transforms.head import (METADATA_ENTRY, HeadInfo, base_model_id, dense_forward, load_head,
                             save_head)
from transforms.label import load_labeled_model
from transforms.models import resolve_spec

EXIT_USAGE = 2


def _base(model_path, recipe='crop'):
    return load_labeled_model(resolve_spec(str(model_path)), batch_size=1, precision='float32',
                              threads=None, recipe=recipe)


def _head_file(path, info: HeadInfo, hidden=0, seed=0):
    import keras
    keras.utils.set_random_seed(seed)
    model = build_head(info.embedding_dim, len(info.class_names), hidden)
    save_head(model, info, str(path))
    return model


def test_the_numpy_head_computes_what_keras_computes(tmp_path):
    info = HeadInfo(('a', 'b', 'c'), 16, 'base-id', 'base.tflite', hidden_units=8)
    keras_model = _head_file(tmp_path / 'h.keras', info, hidden=8)
    x = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
    head = load_head(str(tmp_path / 'h.keras'))
    np.testing.assert_allclose(head.predict(x), keras_model(x).numpy(), rtol=1e-5, atol=1e-6)
    assert [layer.activation for layer in head.layers] == ['relu', 'softmax']
    np.testing.assert_allclose(head.predict(x).sum(axis=1), 1.0, rtol=1e-5)


def test_dense_forward_is_plain_affine_relu_softmax():
    from transforms.head import DenseLayer
    layer = DenseLayer(np.array([[1.0, -1.0]], np.float32), np.array([0.0, 0.0], np.float32),
                       'softmax')
    out = dense_forward(np.array([[np.log(3.0) / 2]], np.float32), [layer])
    np.testing.assert_allclose(out, [[0.75, 0.25]], rtol=1e-6)


def test_a_head_carries_its_class_names_width_and_base_model_id_inside_its_file(tmp_path):
    info = HeadInfo(('defect', 'ok'), 32, 'abc-123', 'm.tflite')
    _head_file(tmp_path / 'h.keras', info)
    assert METADATA_ENTRY in zipfile.ZipFile(tmp_path / 'h.keras').namelist()
    head = load_head(str(tmp_path / 'h.keras'))
    assert head.info == info and head.class_names == ['defect', 'ok']


def test_a_keras_file_that_is_not_a_head_is_refused_with_one_line(tmp_path, tiny_keras_model,
                                                                   mobilenet_v2_quant, panda):
    r = run_cli('run', '--input', panda, '--output', tmp_path / 'out',
                '--model', mobilenet_v2_quant, '--head', tiny_keras_model)
    assert r.code == EXIT_USAGE
    assert r.err.strip().count('\n') == 0 and 'not a head made by imagelabel train-head' in r.err


def test_a_head_of_another_width_is_refused_at_launch_with_one_line(tmp_path, assets, grace_hopper):
    v2 = assets / 'models' / 'mobilenet_v2_1.0_224_quant.tflite'
    v1 = assets / 'models' / 'mobilenet_v1_0.25_224_quant.tflite'
    _head_file(tmp_path / 'v2.keras', HeadInfo(('x', 'y'), 1280, _base(v2).model_id, v2.name))
    r = run_cli('run', '--input', grace_hopper, '--output', tmp_path / 'out', '--model', v1,
                '--head', tmp_path / 'v2.keras')
    assert r.code == EXIT_USAGE and not (tmp_path / 'out').exists()
    assert r.err.strip().count('\n') == 0
    assert 'trained on 1280-d embeddings' in r.err and 'gives 256-d' in r.err


def test_a_head_of_another_model_with_the_same_width_is_refused_at_launch(tmp_path, assets,
                                                                          grace_hopper):
    floaty = assets / 'models' / 'mobilenet_v1_0.25_224_1_default_1.tflite'
    quant = assets / 'models' / 'mobilenet_v1_0.25_224_quant.tflite'
    base = _base(floaty)
    assert base.runtime.embedding_dim == _base(quant).runtime.embedding_dim == 256
    _head_file(tmp_path / 'f.keras', HeadInfo(('x', 'y'), 256, base.model_id, floaty.name))
    (tmp_path / 'm.csv').write_text(f'uri,label\n{grace_hopper},x\n')
    r = run_cli('eval', '--input', tmp_path / 'm.csv', '--output', tmp_path / 'out',
                '--model', quant, '--head', tmp_path / 'f.keras')
    assert r.code == EXIT_USAGE and r.err.strip().count('\n') == 0
    assert f'model_id {base.model_id}' in r.err and 'train a head' in r.err
    # The same head on its own base model, but another resize recipe, is another model_id too.
    r = run_cli('run', '--input', grace_hopper, '--output', tmp_path / 'out2', '--model', floaty,
                '--resize', 'plain', '--head', tmp_path / 'f.keras')
    assert r.code == EXIT_USAGE and '--resize' in r.err


def test_run_with_a_head_labels_with_its_classes_from_the_same_embedding(
        tmp_path, mobilenet_v2_quant, grace_hopper, panda):
    base = _base(mobilenet_v2_quant)
    info = HeadInfo(('left', 'middle', 'right'), 1280, base.model_id, mobilenet_v2_quant.name)
    _head_file(tmp_path / 'h.keras', info, seed=3)
    manifest = tmp_path / 'photos.txt'
    manifest.write_text(f'{grace_hopper}\n{panda}\n')
    plain = run_cli('run', '--input', manifest, '--output', tmp_path / 'plain',
                    '--model', mobilenet_v2_quant)
    headed = run_cli('run', '--input', manifest, '--output', tmp_path / 'head',
                     '--model', mobilenet_v2_quant, '--head', tmp_path / 'h.keras')
    assert plain.code == 0 and headed.code == 0, headed.err
    before = {r['uri']: r for r in read_parquet_rows(tmp_path / 'plain', 'labels')}
    after = {r['uri']: r for r in read_parquet_rows(tmp_path / 'head', 'labels')}
    head = load_head(str(tmp_path / 'h.keras'))
    for uri, row in after.items():
        # The embedding is the base model's, bit for bit; the labels are the head's on it.
        assert row['embedding'] == before[uri]['embedding']
        probs = head.predict(np.array([row['embedding']], np.float32))[0]
        assert len(row['labels']) == 3  # --top_k 5 keeps all three classes
        assert [x['label'] for x in row['labels']] == [info.class_names[i]
                                                       for i in np.argsort(-probs)]
        assert row['labels'][0]['score'] == pytest.approx(probs.max(), rel=1e-6)
        assert row['top_label'] == row['labels'][0]['label']
        # A head changes the outputs, so it changes the model_id; the base id stays readable.
        assert row['model_id'] != before[uri]['model_id']
        assert base_model_id(row['model_id']) == before[uri]['model_id']
