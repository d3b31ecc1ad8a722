"""Models: a registry of specs, a registry of formats, and one runtime module per format.

    spec.py         ModelSpec, REGISTRY, resolve_spec, PREPROCESSORS
    formats.py      ModelFormat, FORMATS, load_runtime (imports runtimes lazily)
    runtime.py      Scores, Runtime protocol, softmax, bucket_size
    keras.py        KerasRuntime (TensorFlow; bf16 through oneDNN)
    saved_model.py  SavedModelRuntime (TensorFlow)
    litert.py       TFLiteRuntime (LiteRT, no TensorFlow)
    files.py        localized, file_fingerprint, load_labels

A runtime turns a spec into one callable, `predict(uint8 pixels) -> Scores`,
that does preprocessing, the forward pass and softmax in one step. Importing
this package never imports TensorFlow; loading a TensorFlow model does.
"""
from __future__ import annotations

from transforms.models.files import file_fingerprint, load_labels, localized
from transforms.models.formats import FORMATS, ModelFormat, load_runtime, path_kinds
from transforms.models.runtime import Runtime, Scores, bucket_size, softmax
from transforms.models.spec import (OUTPUT_KINDS, PRECISIONS, PREPROCESSORS, REGISTRY,
                                    ModelSpec, resolve_spec)

__all__ = ['FORMATS', 'OUTPUT_KINDS', 'PRECISIONS', 'PREPROCESSORS', 'REGISTRY', 'ModelFormat',
           'ModelSpec', 'Runtime', 'Scores', 'bucket_size', 'file_fingerprint', 'load_labels',
           'load_runtime', 'localized', 'path_kinds', 'resolve_spec', 'softmax',
           'KerasRuntime', 'SavedModelRuntime', 'TFLiteRuntime', 'expose_penultimate',
           'onednn_bf16_calls']

_LAZY = {'KerasRuntime': 'keras', 'onednn_bf16_calls': 'keras', 'SavedModelRuntime': 'saved_model',
         'TFLiteRuntime': 'litert', 'expose_penultimate': 'litert', 'PatchedModel': 'litert'}


def __getattr__(name: str):
    """Runtime classes on first use, so `import transforms.models` stays TensorFlow-free."""
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f'transforms.models.{_LAZY[name]}'), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
