"""Reading a Keras classifier's graph: where its scores come from, where its embedding is,
and whether its top is a Dense [+ softmax] that can run apart from the backbone.

Pure graph walks over a built model, with no TensorFlow calls of their own: the Keras
runtime (`keras.py`) compiles what they find, and the launch-time conversions
(`int8.py`) cut the model where they say.
"""
from __future__ import annotations

from typing import Any

from transforms.models.spec import ModelSpec

#: Layers that move or copy scores without changing them (a softmax before one stays one).
SHAPE_ONLY = ('Reshape', 'Flatten', 'Dropout', 'Identity', 'Permute', 'ActivityRegularization')


def scores_path(model) -> list:
    """The layers that make the scores (the model's first output), last first: walked back
    from that output through single-input layers, down to the first Dense. A model's last
    layer may feed another output (a box head), and a softmax may come before a Reshape."""
    import keras
    path = []
    tensor = model.outputs[0]
    while True:
        history = getattr(tensor, '_keras_history', None)
        layer = getattr(history, 'operation', None)
        if layer is None or isinstance(layer, keras.layers.InputLayer) or layer in path:
            return path
        path.append(layer)
        if isinstance(layer, keras.layers.Dense):
            return path
        try:
            tensor = layer.input
        except (AttributeError, ValueError):  # several inputs, or a layer used twice
            return path
        if not hasattr(tensor, '_keras_history'):  # a list of tensors: a merge
            return path


def final_dense(model):
    """The Dense that makes the scores; else (scores made by a merge) the model's last Dense."""
    import keras
    path = scores_path(model)
    if path and isinstance(path[-1], keras.layers.Dense):
        return path[-1]
    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.Dense):
            return layer
    raise ValueError(f'model {model.name} has no Dense classification layer to take '
                     'the embedding from; register it in transforms.models.REGISTRY with '
                     'its embedding_layer')


def embedding_output(model, spec: ModelSpec):
    """The tensor the embedding is read from: the spec's layer, else the final Dense's input."""
    if spec.embedding_layer:
        return model.get_layer(spec.embedding_layer).output
    return final_dense(model).input


def classifier_top(model, embedding) -> tuple[Any, list] | None:
    """(the final Dense, the Softmax and Activation layers after it) when that Dense reads
    the embedding and only such layers follow it; else None.

    What runs apart from the backbone: in float32 under bf16 (`keras._classifier_head`), and
    in numpy beside an int8 or float32 LiteRT backbone (int8.backbone_and_head).
    """
    import keras
    path = scores_path(model)
    if not path or not isinstance(path[-1], keras.layers.Dense):
        return None
    dense, rest = path[-1], list(reversed(path[:-1]))
    if dense.input is not embedding or any(
            not isinstance(layer, (keras.layers.Softmax, keras.layers.Activation)) for layer in rest):
        return None
    return dense, rest


def emits_probabilities(model) -> bool:
    """Whether the scores output ends in a softmax, looking through shape-only layers."""
    import keras
    for layer in scores_path(model):
        act = getattr(getattr(layer, 'activation', None), '__name__', '')
        if isinstance(layer, keras.layers.Softmax) or act == 'softmax':
            return True
        if type(layer).__name__ not in SHAPE_ONLY and not (
                isinstance(layer, keras.layers.Activation) and act == 'linear'):
            return False
    return False
