"""The transforms.models package: formats registry, lazy TensorFlow, old import paths."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

_PROBE = r'''
import json, sys
import numpy as np
from pipeline.cli import COMMANDS
from transforms.models import load_runtime, resolve_spec
runtime = load_runtime(resolve_spec(sys.argv[1]), threads=1)
scores = runtime.predict(np.full((1, *runtime.input_size, 3), 128, np.uint8))
print(json.dumps({"tensorflow": "tensorflow" in sys.modules, "keras": "keras" in sys.modules,
                  "classes": scores.probabilities.shape[1]}))
'''


def _probe(model) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL='2')
    out = subprocess.run([sys.executable, '-c', _PROBE, str(model)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_tflite_model_runs_without_importing_tensorflow(mobilenet_v2_quant):
    seen = _probe(mobilenet_v2_quant)
    assert seen == {'tensorflow': False, 'keras': False, 'classes': 1001}


def test_a_keras_model_does_import_tensorflow_so_the_probe_can_see_it(tiny_keras_model):
    assert _probe(tiny_keras_model)['tensorflow'] is True


def test_old_import_paths_still_resolve():
    from transforms.models import (FORMATS, REGISTRY, KerasRuntime, ModelSpec, Scores,
                                   TFLiteRuntime, expose_penultimate, file_fingerprint,
                                   load_labels, load_runtime, localized, onednn_bf16_calls,
                                   resolve_spec)
    assert KerasRuntime.__module__ == 'transforms.models.keras'
    assert TFLiteRuntime.__module__ == 'transforms.models.litert'
    assert set(FORMATS) >= {'keras', 'tflite', 'saved_model', 'keras_application'}
    assert callable(expose_penultimate) and callable(onednn_bf16_calls)
    assert 'inception_v3' in REGISTRY and ModelSpec and Scores and file_fingerprint
    assert load_labels and load_runtime and localized and resolve_spec


def test_help_and_errors_name_every_path_format_from_the_registry(tmp_path):
    import pytest
    from transforms.models import FORMATS, path_kinds, resolve_spec
    from pipeline.options import MODEL_HELP
    for name, fmt in FORMATS.items():
        for suffix in fmt.suffixes:
            assert suffix in MODEL_HELP and suffix in path_kinds()
    assert 'SavedModel directory' in MODEL_HELP
    with pytest.raises(ValueError) as e:
        resolve_spec(str(tmp_path / 'model.onnx'))
    assert path_kinds() in str(e.value)


def test_bf16_on_a_tflite_model_is_refused_naming_the_formats_that_can(mobilenet_v2_quant):
    import pytest
    from transforms.models import load_runtime, resolve_spec
    with pytest.raises(ValueError, match=r'bf16 applies to Keras models \(a named Keras application, a Keras file\); a TFLite file'):
        load_runtime(resolve_spec(str(mobilenet_v2_quant)), precision='bf16')
