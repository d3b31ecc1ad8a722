"""TensorFlow is imported without the scikit-learn import Keras adds (0.7 s of start-up)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

from conftest import ROOT

_PROBE = r'''
import json, sys
if sys.argv[1] == 'shielded':
    from transforms.models.tf_import import import_tensorflow
    tf = import_tensorflow()
else:
    import tensorflow as tf
after_tf = 'sklearn' in sys.modules
import keras
model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
import sklearn  # still importable afterwards: NNCF's quantization needs it
print(json.dumps({'sklearn_with_tf': after_tf, 'keras_runs': model(tf.zeros((1, 3))).shape[-1],
                  'sklearn_imported_later': sklearn.__name__}))
'''


def _probe(mode: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL='2')
    out = subprocess.run([sys.executable, '-c', _PROBE, mode], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_plain_tensorflow_import_pulls_in_scikit_learn_through_keras():
    # Why the shield exists: with scikit-learn installed (the openvino extra brings it),
    # importing TensorFlow imports it for Keras's scikit-learn wrappers.
    assert importlib.util.find_spec('sklearn') is not None
    assert _probe('plain')['sklearn_with_tf'] is True


def test_import_tensorflow_leaves_scikit_learn_out_and_importable_afterwards():
    seen = _probe('shielded')
    assert seen == {'sklearn_with_tf': False, 'keras_runs': 2, 'sklearn_imported_later': 'sklearn'}


def test_import_tensorflow_returns_the_already_imported_module():
    import tensorflow as tf

    from transforms.models.tf_import import import_tensorflow
    assert import_tensorflow() is tf
