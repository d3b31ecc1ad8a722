"""Models as data: a registry of specs, and the pixel preprocessors they name.

A `ModelSpec` says everything the pipeline needs to know about a model (input
size, preprocessing, label set, where the embedding comes from, whether it emits
logits or probabilities). Adding a model is adding a registry entry, not an `if`.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import numpy as np
from transforms.models.files import is_saved_model_dir

# --- preprocessing (pure functions; numpy arrays and TF tensors alike) ----------

_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)
_TORCH_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_TORCH_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _inception(x):
    return x / 127.5 - 1.0


def _unit(x):
    return x / 255.0


def _caffe(x):
    return x[..., ::-1] - _CAFFE_MEAN_BGR


def _torch(x):
    return (x / 255.0 - _TORCH_MEAN) / _TORCH_STD


def _raw(x):
    return x


#: name -> f(float pixels in 0..255, RGB) -> model input. Named after the Keras
#: `preprocess_input` mode each one reproduces.
PREPROCESSORS: dict[str, Callable] = {
    'inception': _inception,  # [-1, 1]: Inception, MobileNet, Xception ("tf" mode)
    'unit': _unit,            # [0, 1]
    'caffe': _caffe,          # BGR, ImageNet mean subtracted: ResNet50, VGG
    'torch': _torch,          # ImageNet mean/std: DenseNet
    'raw': _raw,              # 0..255 unchanged: uint8-quantized TFLite models
}

OUTPUT_KINDS = ('auto', 'probabilities', 'logits')
PRECISIONS = ('float32', 'bf16', 'int8')


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the pipeline needs to know about a model, as data."""
    name: str
    format: str                           # 'keras_application' | 'keras' | 'saved_model' | 'tflite'
    path: str | None = None               # model file or folder (not for applications)
    application: str | None = None        # keras.applications constructor name
    weights: str | None = None            # weights file for an application (None: Keras download)
    input_size: tuple[int, int] | None = None   # (height, width); None: read from the model
    preprocess: str | None = None         # key of PREPROCESSORS; None: the format's default
    outputs: str = 'auto'                 # logits or probabilities; 'auto' detects
    embedding_layer: str | None = None    # None: the input of the final classification layer
    labels: str | None = None             # labels file; None: the bundled ImageNet names


#: Named models. Real users get ImageNet weights through Keras on first use.
REGISTRY: dict[str, ModelSpec] = {
    'inception_v3': ModelSpec(name='inception_v3', format='keras_application',
                              application='InceptionV3', input_size=(299, 299),
                              preprocess='inception', outputs='probabilities',
                              embedding_layer='avg_pool'),
    'mobilenet_v2': ModelSpec(name='mobilenet_v2', format='keras_application',
                              application='MobileNetV2', input_size=(224, 224),
                              preprocess='inception', outputs='probabilities'),
    'resnet50': ModelSpec(name='resnet50', format='keras_application',
                          application='ResNet50', input_size=(224, 224),
                          preprocess='caffe', outputs='probabilities',
                          embedding_layer='avg_pool'),
}


def resolve_spec(model: str, *, weights: str | None = None, labels: str | None = None,
                 preprocess: str | None = None, outputs: str | None = None) -> ModelSpec:
    """--model (a registry name or a model path) + overrides -> a ModelSpec."""
    from transforms.models.formats import FORMATS, path_kinds  # formats imports this module
    if model in REGISTRY:
        spec = REGISTRY[model]
    else:
        lower = model.lower().rstrip('/')
        fmt = next((name for name, f in FORMATS.items() if f.suffixes and lower.endswith(f.suffixes)),
                   'saved_model' if is_saved_model_dir(model) else None)
        if fmt is None:
            raise ValueError(
                f'--model {model!r} is neither a known model ({", ".join(sorted(REGISTRY))}) '
                f'nor {path_kinds()}')
        spec = ModelSpec(name=os.path.basename(model.rstrip('/')), format=fmt, path=model)
    if weights and spec.format != 'keras_application':
        raise ValueError('--weights applies to named models such as inception_v3; '
                         f'{model} carries its own weights')
    if preprocess is not None and preprocess not in PREPROCESSORS:
        raise ValueError(f'--preprocess {preprocess!r} is unknown; choose one of '
                         f'{", ".join(PREPROCESSORS)}')
    if outputs is not None and outputs not in OUTPUT_KINDS:
        raise ValueError(f'--model_outputs must be one of {OUTPUT_KINDS}')
    if outputs == 'auto':
        outputs = None  # keep what the spec declares; detect only where it declares nothing
    changes = {k: v for k, v in dict(weights=weights, labels=labels, preprocess=preprocess,
                                     outputs=outputs).items() if v is not None}
    return dataclasses.replace(spec, **changes)

