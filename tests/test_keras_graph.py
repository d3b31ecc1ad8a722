"""Reading a Keras classifier's graph (transforms.models.keras_graph): which Dense makes the
scores, where the embedding is, whether the scores are probabilities, and which tops can
run apart from their backbone."""
from __future__ import annotations

import pytest

from transforms.models.keras_graph import (classifier_top, emits_probabilities,
                                           embedding_output, final_dense, scores_path)
from transforms.models.spec import ModelSpec


def _model(*top, name='m'):
    """Input 8x8x3 -> pooled 3-d features -> Dense(6, name='features') -> `top` layers."""
    import keras
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    x = keras.layers.Dense(6, activation='relu', name='features')(x)
    features = x
    for layer in top:
        x = layer(x)
    return keras.Model(inputs, x, name=name), features


def _spec(**kw) -> ModelSpec:
    return ModelSpec(name='m', format='keras', **kw)


def test_the_scores_path_walks_back_from_the_first_output_to_the_dense_that_makes_it():
    import keras
    model, _ = _model(keras.layers.Dense(4, name='logits'), keras.layers.Softmax(name='probs'),
                      keras.layers.Reshape((4,), name='shape'))
    assert [layer.name for layer in scores_path(model)] == ['shape', 'probs', 'logits']
    assert final_dense(model).name == 'logits'


def test_the_embedding_is_the_final_dense_input_unless_the_spec_names_a_layer():
    import keras
    model, features = _model(keras.layers.Dense(4, activation='softmax', name='logits'))
    assert embedding_output(model, _spec()) is features
    named = embedding_output(model, _spec(embedding_layer='logits'))
    assert named is model.get_layer('logits').output and named is not features


def test_a_model_without_a_dense_layer_is_a_clear_error_naming_the_registry():
    import keras
    model, _ = _model()
    model = keras.Model(model.inputs, keras.layers.GlobalAveragePooling2D()(model.inputs[0]))
    with pytest.raises(ValueError, match='no Dense classification layer.*REGISTRY'):
        final_dense(model)


@pytest.mark.parametrize('top, probabilities', [
    (lambda k: [k.layers.Dense(4, activation='softmax')], True),
    (lambda k: [k.layers.Dense(4), k.layers.Softmax()], True),
    (lambda k: [k.layers.Dense(4), k.layers.Softmax(), k.layers.Reshape((4,)),
                k.layers.Dropout(0.1)], True),
    (lambda k: [k.layers.Dense(4)], False),
    (lambda k: [k.layers.Dense(4), k.layers.Activation('linear')], False),
    (lambda k: [k.layers.Dense(4, activation='softmax'), k.layers.Activation('linear')], True),
    (lambda k: [k.layers.Dense(4, activation='softmax'), k.layers.Dense(4)], False),
], ids=['dense-softmax', 'softmax-layer', 'softmax-then-shape-only', 'logits',
        'linear-activation', 'softmax-then-linear-activation', 'dense-after-softmax'])
def test_probabilities_are_told_from_logits_through_shape_only_layers(top, probabilities):
    import keras
    model, _ = _model(*top(keras))
    assert emits_probabilities(model) is probabilities


def test_a_dense_and_softmax_reading_the_embedding_is_a_top_that_runs_apart():
    import keras
    model, features = _model(keras.layers.Dense(4, name='logits'),
                             keras.layers.Softmax(name='probs'))
    dense, rest = classifier_top(model, features)
    assert dense.name == 'logits' and [layer.name for layer in rest] == ['probs']


def test_no_top_runs_apart_when_another_layer_follows_or_the_dense_reads_elsewhere():
    import keras
    reshaped, features = _model(keras.layers.Dense(4, activation='softmax'),
                                keras.layers.Reshape((2, 2)))
    assert classifier_top(reshaped, features) is None
    deeper, features = _model(keras.layers.Dense(5, name='more'), keras.layers.Dense(4))
    assert classifier_top(deeper, features) is None  # the final Dense reads 'more', not it
    assert classifier_top(deeper, deeper.get_layer('more').output)[0].units == 4
