"""Import TensorFlow (and with it Keras) without the scikit-learn import Keras adds.

Importing TensorFlow imports Keras, and Keras imports scikit-learn whenever it is
installed, only for its `keras.wrappers` scikit-learn estimators. The `openvino`
extra installs scikit-learn (NNCF needs it), so every TensorFlow process paid
about 0.7 s of start-up (measured on AMD EPYC Zen 3: 3.2 s against 2.5 s for the
import) for wrappers imagelabel never uses. While TensorFlow is imported here,
`import sklearn` fails, so Keras records it as absent; afterwards it imports
normally (NNCF's quantization still finds it).

Call `import_tensorflow()` before the first `import tensorflow` or `import keras`
of a process; later imports are the cached modules either way.
"""
from __future__ import annotations

import sys
import types


def import_tensorflow() -> types.ModuleType:
    """The `tensorflow` module, imported (with Keras) without importing scikit-learn."""
    if 'tensorflow' in sys.modules:
        import tensorflow as tf  # waits if another thread is still importing it
        return tf
    shield = 'sklearn' not in sys.modules
    if shield:
        sys.modules['sklearn'] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        import tensorflow as tf
        import keras  # noqa: F401 - imported under the shield too (Keras 3 imports it alone)
    finally:
        if shield and sys.modules.get('sklearn', False) is None:
            del sys.modules['sklearn']
    return tf
