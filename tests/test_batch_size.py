"""How many images go to the model per call: the model's own default, or --batch_size.

Runtimes that invoke one image at a time (LiteRT, OpenVINO) default to bigger
batches than Keras and SavedModel ones (transforms.models.formats.PER_IMAGE_BATCH
says why); what a run used is in summary.json.
"""
from __future__ import annotations

import pytest

import transforms.label as label
from conftest import run_cli, write_jpeg
from pipeline.graph import read_ahead
from pipeline.options import settings_from
from pipeline.summary import read_summary
from transforms.models import FORMATS, resolve_spec
from transforms.models.formats import PER_IMAGE_BATCH, batch_size_for


@pytest.fixture
def batches(monkeypatch) -> list[int]:
    """The size of every batch Beam's RunInference hands the model, whatever its runtime."""
    sizes: list[int] = []
    real = label.ImageModelHandler.run_inference

    def recording(self, batch, *args, **kwargs):
        sizes.append(len(batch))
        return real(self, batch, *args, **kwargs)
    monkeypatch.setattr(label.ImageModelHandler, 'run_inference', recording)
    return sizes


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """The name of every model loaded in this process (the launch's and the workers')."""
    names: list[str] = []
    real = label.load_labeled_model

    def counting(spec, **kwargs):
        names.append(spec.name)
        return real(spec, **kwargs)
    monkeypatch.setattr(label, 'load_labeled_model', counting)
    return names


def _photos(folder, n: int):
    for i in range(n):
        write_jpeg(folder / f'{i:02d}.jpg', seed=i)
    return folder


def test_a_tflite_run_sends_more_than_32_images_per_call_loads_once_and_says_so(
        mobilenet_v2_quant, tmp_path, batches, loads):
    r = run_cli('run', '--input', _photos(tmp_path / 'in', 40), '--output', tmp_path / 'out',
                '--model', mobilenet_v2_quant)
    assert r.code == 0, r.err
    summary = read_summary(str(tmp_path / 'out'))
    assert summary['labeled'] == 40 and summary['batch_size'] == PER_IMAGE_BATCH
    assert sum(batches) == 40 and max(batches) > 32  # Keras's 32 would have split them
    assert loads == [mobilenet_v2_quant.name]  # the launch's load, found again by the worker


def test_batch_size_given_wins_over_the_models_default(mobilenet_v2_quant, tmp_path, batches,
                                                      loads):
    r = run_cli('run', '--input', _photos(tmp_path / 'in', 40), '--output', tmp_path / 'out',
                '--model', mobilenet_v2_quant, '--batch_size', '16')
    assert r.code == 0, r.err
    assert read_summary(str(tmp_path / 'out'))['batch_size'] == 16
    assert sum(batches) == 40 and max(batches) == 16
    assert len(loads) == 1


def test_a_keras_run_keeps_batches_of_32_and_loads_once(tiny_keras_model, tmp_path, batches,
                                                        loads):
    r = run_cli('run', '--input', _photos(tmp_path / 'in', 40), '--output', tmp_path / 'out',
                '--model', tiny_keras_model)
    assert r.code == 0, r.err
    assert read_summary(str(tmp_path / 'out'))['batch_size'] == 32
    assert sum(batches) == 40 and max(batches) == 32
    assert len(loads) == 1


def test_each_format_has_its_default_and_a_given_size_always_wins(tmp_path):
    assert batch_size_for(resolve_spec(str(tmp_path / 'm.tflite'))) == PER_IMAGE_BATCH
    assert batch_size_for(resolve_spec(str(tmp_path / 'm.keras'))) == 32
    assert batch_size_for(resolve_spec(str(tmp_path / 'm.tflite')), 7) == 7
    assert {name: f.batch_size for name, f in FORMATS.items() if f.batch_size != 32} == {
        'tflite': PER_IMAGE_BATCH, 'int8_tflite': PER_IMAGE_BATCH,
        'int8_openvino': PER_IMAGE_BATCH, 'float_tflite': PER_IMAGE_BATCH}


def test_help_names_the_default_of_every_kind_of_model():
    r = run_cli('run', '--help')
    text = ' '.join(r.out.split())
    start = text.index('--batch_size BATCH_SIZE Images per model call')
    own = text[start:text.index('--precision {', start)]
    for fmt in FORMATS.values():  # each kind of model, in the flag's own help
        assert f'{fmt.batch_size} for' in own and fmt.described_as in own, fmt.described_as
    assert '32 for a named Keras application' in own
    assert f'{PER_IMAGE_BATCH} for a TFLite file' in own


@pytest.mark.parametrize('given, expected', [(None, None), ('5', 5)])
def test_settings_keep_batch_size_unset_until_the_model_is_known(given, expected, tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions
    argv = ['--input', str(tmp_path)] + (['--batch_size', given] if given else [])
    assert settings_from(PipelineOptions(argv)).batch_size == expected


def test_read_and_decode_stay_two_small_batches_or_one_big_batch_ahead():
    assert [read_ahead(b) for b in (4, 32, 48, 256, 1000)] == [8, 64, 64, 256, 1000]
