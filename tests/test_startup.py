"""Start-up: one model load per process, and the start-up time in summary.json."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, write_jpeg
from pipeline.summary import read_summary

_RUN_COUNTING_LOADS = r'''
import json, sys
import transforms.models.keras as keras_runtime
calls = []
real = keras_runtime.load_keras_model
def counting(spec):
    calls.append(spec.name)
    return real(spec)
keras_runtime.load_keras_model = counting
from pipeline.cli import main
code = main(['run', '--input', sys.argv[1], '--output', sys.argv[2], '--model', sys.argv[3],
             '--batch_size', '2'])
print(json.dumps({'code': code, 'keras_loads': len(calls), 'sklearn': 'sklearn' in sys.modules}))
'''


def _run_in_a_process(script: str, images: int, tmp_path, model) -> str:
    """Run `script` (argv: input folder, output folder, model) in a fresh Python; its stdout."""
    for i in range(images):
        write_jpeg(tmp_path / 'in' / f'{i}.jpg', seed=i)
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL='2')
    out = subprocess.run([sys.executable, '-c', script, str(tmp_path / 'in'),
                          str(tmp_path / 'out'), str(model)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_a_keras_run_loads_its_model_once_per_process(tiny_keras_model, tmp_path):
    stdout = _run_in_a_process(_RUN_COUNTING_LOADS, 5, tmp_path, tiny_keras_model)
    seen = json.loads(stdout.strip().splitlines()[-1])
    # The launcher validates the model and the in-process worker reuses it: one load.
    # scikit-learn is installed (the openvino extra) but never imported (tf_import).
    assert importlib.util.find_spec('sklearn') is not None
    assert seen == {'code': 0, 'keras_loads': 1, 'sklearn': False}
    summary = read_summary(str(tmp_path / 'out'))
    assert summary['labeled'] == 5


def test_summary_reports_start_up_from_launch_to_the_first_batch(tiny_keras_model, tmp_path):
    from conftest import run_cli
    for i in range(3):
        write_jpeg(tmp_path / 'in' / f'{i}.jpg', seed=i)
    r = run_cli('run', '--input', tmp_path / 'in', '--output', tmp_path / 'out',
                '--model', tiny_keras_model)
    assert r.code == 0, r.err
    summary = read_summary(str(tmp_path / 'out'))
    # Start-up happens before the first batch, and the whole run includes the first batch.
    assert 0 < summary['startup_seconds']
    assert 'start-up' in r.out
    # The steady part runs from the first batch to the end: after start-up, within the run.
    assert 0 < summary['labeling_seconds'] < summary['startup_seconds'] + summary['seconds']
    assert summary['steady_images_per_second'] == pytest.approx(
        3 / summary['labeling_seconds'], rel=1e-3)


_PROCESS_RUN = r'''
import time
first_line = time.time()
import gc, json, sys
import apache_beam as beam
import pipeline.launch
prepare, run, seen = pipeline.launch.prepare, beam.Pipeline.run, {}
def recording(*args, **kwargs):
    seen['started'] = kwargs.get('started')
    seen['collecting_at_launch'] = gc.isenabled()
    return prepare(*args, **kwargs)
def running(self, *args, **kwargs):
    seen.setdefault('collecting_when_run', gc.isenabled())
    seen.setdefault('frozen_when_run', gc.get_freeze_count())
    return run(self, *args, **kwargs)
pipeline.launch.prepare = recording
beam.Pipeline.run = running
from pipeline.run import main
sys.argv = ['imagelabel run', '--input', sys.argv[1], '--output', sys.argv[2], '--model',
            sys.argv[3], '--batch_size', '2']
code = main()  # the process's own command: no argv
print(json.dumps({'code': code, 'first_line': first_line, **seen}))
'''


def test_a_run_that_is_the_process_command_counts_start_up_from_the_process_start(
        tiny_keras_model, tmp_path):
    stdout = _run_in_a_process(_PROCESS_RUN, 2, tmp_path, tiny_keras_model)
    seen = json.loads(stdout.strip().splitlines()[-1])
    # The launch clock starts before the script's first line ran: at the process start,
    # so Python's and Beam's imports count. (A run called in-process, as run_cli does,
    # counts from prepare(), see the test above.)
    assert seen['code'] == 0
    assert seen['first_line'] - 5.0 < seen['started'] <= seen['first_line']
    summary = read_summary(str(tmp_path / 'out'))
    assert summary['startup_seconds'] > 0
    # The launch ran without cyclic GC (pipeline.startup_gc); the pipeline runs with it,
    # the launch's objects frozen out of its collections.
    assert seen['collecting_at_launch'] is False
    assert seen['collecting_when_run'] is True and seen['frozen_when_run'] > 100_000


def test_the_same_model_and_settings_share_one_load(tiny_keras_model, tmp_path):
    from transforms.label import LOADS, forget_loaded_models, shared_labeled_model
    from transforms.models import resolve_spec
    path = tmp_path / 'copy.keras'
    shutil.copy(tiny_keras_model, path)
    spec = resolve_spec(str(path))
    args = dict(batch_size=2, precision='float32', threads=None, recipe='crop')
    before = sum(LOADS.values())
    a = shared_labeled_model(spec, **args)
    b = shared_labeled_model(spec, **args)
    assert a is b and sum(LOADS.values()) == before + 1
    c = shared_labeled_model(spec, **(args | {'recipe': 'plain'}))  # another setting: its own
    assert c is not a and sum(LOADS.values()) == before + 2
    forget_loaded_models()


def test_a_model_file_replaced_in_place_is_loaded_again(tiny_keras_model, tmp_path):
    from transforms.label import shared_labeled_model
    from transforms.models import resolve_spec
    path = tmp_path / 'swap.keras'
    shutil.copy(tiny_keras_model, path)
    args = dict(batch_size=2, precision='float32', threads=None, recipe='crop')
    first = shared_labeled_model(resolve_spec(str(path)), **args)
    with open(path, 'ab') as f:  # a different file at the same path (size changes)
        f.write(b'\0' * 16)
    os.utime(path, (1, 1))
    second = shared_labeled_model(resolve_spec(str(path)), **args)
    assert second is not first


def test_a_model_loaded_only_to_convert_is_freed_before_the_launch_is_frozen(
        tiny_keras_model, int8_photos, tmp_path, monkeypatch):
    import gc
    import weakref

    from pipeline import launch, model_prep, startup_gc
    launch_only = []
    real = model_prep.load_labeled_model  # _load's loader for models not kept for workers

    def recording(*args, **kwargs):
        model = real(*args, **kwargs)
        launch_only.append(weakref.ref(model.runtime))
        return model
    monkeypatch.setattr(model_prep, 'load_labeled_model', recording)
    startup_gc.pause()  # as `imagelabel run` launches: only the launch's own collect frees
    try:
        launch.prepare(['--input', str(int8_photos), '--output', str(tmp_path / 'out'),
                        '--model', str(tiny_keras_model), '--model_cache', str(tmp_path / 'c'),
                        '--agreement_images', '4', '--precision', 'int8', '--min_agreement',
                        '0', '--calibration_images', '6'])
        # int8's float32 source holds reference cycles: freed by the launch's own collect.
        assert launch_only and all(ref() is None for ref in launch_only)
    finally:
        startup_gc.resume()
        gc.unfreeze()
