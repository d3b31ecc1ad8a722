"""transforms.models.float_head: a converted Keras model's final Dense, scored as TensorFlow does."""
from __future__ import annotations

import io

import numpy as np
import pytest

from transforms.models.float_head import FloatHead
from transforms.models.runtime import softmax

RNG = np.random.default_rng(0)
KERNEL, BIAS = RNG.normal(size=(6, 4)).astype(np.float32), RNG.normal(size=4).astype(np.float32)
EMBEDDINGS = RNG.normal(size=(3, 6)).astype(np.float32)
LOGITS = EMBEDDINGS @ KERNEL + BIAS


@pytest.mark.parametrize('model_softmax, output_kind, expected', [
    (False, 'logits', softmax(LOGITS)),                       # auto, a linear Dense
    (True, 'probabilities', softmax(LOGITS)),                 # auto, a softmax Dense
    (False, 'probabilities', LOGITS),                         # taken as they come
    (True, 'logits', softmax(softmax(LOGITS))),               # TensorFlow softmaxes again
])
def test_a_head_applies_the_models_softmax_and_the_one_for_logits(model_softmax, output_kind,
                                                                   expected):
    head = FloatHead.of_dense(KERNEL, BIAS, model_softmax=model_softmax, output_kind=output_kind)
    np.testing.assert_allclose(head.scores(EMBEDDINGS), expected, rtol=1e-6, atol=1e-7)
    assert head.scores(EMBEDDINGS).dtype == np.float32 and head.num_outputs == 4


def test_a_head_survives_its_file_and_an_older_file_scores_with_one_softmax():
    head = FloatHead.of_dense(KERNEL, BIAS, model_softmax=False, output_kind='probabilities')
    again = FloatHead.from_bytes(head.to_bytes())
    assert again.softmaxes == 0
    np.testing.assert_array_equal(again.scores(EMBEDDINGS), head.scores(EMBEDDINGS))
    buf = io.BytesIO()
    np.savez(buf, kernel=KERNEL, bias=BIAS)  # written before heads counted their softmaxes
    np.testing.assert_allclose(FloatHead.from_bytes(buf.getvalue()).scores(EMBEDDINGS),
                               softmax(LOGITS), rtol=1e-6)


def test_an_output_kind_that_is_not_decided_is_refused():
    with pytest.raises(ValueError, match='logits or probabilities'):
        FloatHead.of_dense(KERNEL, BIAS, model_softmax=True, output_kind='auto')
