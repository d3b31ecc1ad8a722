"""`imagelabel models`: size, parameters, embedding, speed and accuracy per model; table or JSON."""
import json
import os

import pytest

from conftest import run_cli
from pipeline.models_table import ModelRow, render_table, tflite_parameters
from reference import reference_accuracy

EXIT_USAGE = 2
TFLITE = ('mobilenet_v2_1.0_224_quant.tflite', 'mobilenet_v1_0.25_224_quant.tflite',
          'mobilenet_v1_0.25_224_1_default_1.tflite')


def test_models_eval_matches_each_reference_within_two_points(assets, tmp_path):
    models = [assets / 'models' / name for name in TFLITE]
    r = run_cli('models', *models, '--eval', assets / 'imagenet_sample' / 'manifest.csv',
                '--format', 'json')
    assert r.code == 0, r.err
    rows = {row['name']: row for row in json.loads(r.out)}
    reference = reference_accuracy(assets)
    for path in models:
        row = rows[path.name]
        ref1, ref5 = reference[(path.name, 'crop')]  # the default recipe
        assert abs(row['top1'] - ref1) <= 0.02 and abs(row['top5'] - ref5) <= 0.02, row
        assert row['file_size'] == os.path.getsize(path)
        assert row['format'] == 'tflite' and row['input'] == '224x224'
        assert set(row) == {'name', 'format', 'input', 'file_size', 'parameters', 'embedding',
                            'top1', 'top5'}
    assert rows[TFLITE[0]]['embedding'] == 1280
    assert rows[TFLITE[1]]['embedding'] == rows[TFLITE[2]]['embedding'] == 256
    # The quantized and float MobileNetV1 0.25 are one architecture: equal parameter counts,
    # about 0.47M as published; MobileNetV2 1.0 about 3.5M.
    assert rows[TFLITE[1]]['parameters'] == rows[TFLITE[2]]['parameters']
    assert 0.4e6 < rows[TFLITE[1]]['parameters'] < 0.55e6
    assert 3.3e6 < rows[TFLITE[0]]['parameters'] < 3.7e6


def test_measure_adds_images_per_second_and_the_table_shows_the_json_rows(assets):
    tiny = assets / 'models' / TFLITE[1]
    table = run_cli('models', tiny, '--measure', '--measure_images', '16')
    as_json = run_cli('models', tiny, '--format', 'json')
    assert table.code == 0 and as_json.code == 0, table.err + as_json.err
    header, line = table.out.strip().splitlines()
    assert header.split() == ['name', 'format', 'input', 'file_size', 'parameters', 'embedding',
                              'images_per_s']
    cells = line.split()
    assert cells[0] == tiny.name and float(cells[-1]) > 0
    (row,) = json.loads(as_json.out)
    assert 'images_per_s' not in row and cells[2] == row['input']
    assert cells[3:5] == [f'{row["file_size"] / 1e6:.1f}', 'MB']
    assert cells[-2] == str(row['embedding'])


def test_a_registry_model_is_described_from_its_architecture():
    # Keras's published figures for MobileNetV2 (keras.io/api/applications): 3,538,984.
    r = run_cli('models', 'mobilenet_v2', '--format', 'json')
    assert r.code == 0, r.err
    assert json.loads(r.out) == [{'name': 'mobilenet_v2', 'format': 'keras_application',
                                  'input': '224x224', 'file_size': None,
                                  'parameters': 3538984, 'embedding': 1280}]


def test_tflite_parameters_equal_keras_mobilenet_v2_with_batch_norm_folded(mobilenet_v2_quant):
    import keras
    # The .tflite is MobileNetV2 with 1001 classes, each batch norm folded into its conv:
    # gamma, beta, mean and variance (4 per channel) become one bias (1 per channel).
    reference = keras.applications.MobileNetV2(weights=None, classes=1001)
    bn_channels = sum(layer.moving_mean.shape[0] for layer in reference.layers
                      if isinstance(layer, keras.layers.BatchNormalization))
    expected = reference.count_params() - 3 * bn_channels
    assert tflite_parameters(mobilenet_v2_quant.read_bytes()) == expected


def test_the_table_aligns_columns_and_marks_unknown_figures():
    rows = [ModelRow('a', 'tflite', '224x224', 3_577_760, 3_487_816, 1280, top1=0.892),
            ModelRow('inception_v3', 'keras_application', '299x299', None, 23_851_784, 2048)]
    lines = render_table(rows, ['name', 'file_size', 'parameters', 'top1']).splitlines()
    assert lines[1].split() == ['a', '3.6', 'MB', '3.49M', '89.2%']
    assert lines[2].split() == ['inception_v3', '–', '23.85M', '–']
    assert len({len(line) for line in lines}) == 1  # right-aligned numbers line up


@pytest.mark.parametrize('args, message', [
    (['no_such_model'], 'neither a known model'),
    (['mobilenet_v2', '--eval', 'photos/'], 'give a CSV manifest'),
    (['mobilenet_v2', '--eval', 'no_such_truth.csv'], '--eval no_such_truth.csv does not exist'),
    (['mobilenet_v2', '--measure_images', '2'], '--measure_images must be 4 or more'),
])
def test_bad_models_arguments_are_one_line(args, message):
    r = run_cli('models', *args)
    assert r.code == EXIT_USAGE and message in r.err and r.err.strip().count('\n') == 0


def test_keras_and_saved_model_parameters_are_counted_on_the_loaded_model(tiny_keras_model,
                                                                          tmp_path):
    import keras
    from pipeline.models_table import describe
    model = keras.models.load_model(tiny_keras_model)
    saved = tmp_path / 'saved'
    model.export(str(saved), verbose=False)
    assert describe(str(tiny_keras_model)).parameters == model.count_params() == 18392
    assert describe(str(saved)).parameters == model.count_params()
