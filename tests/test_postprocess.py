"""Top-k and row construction (pure functions)."""
import numpy as np
import pytest
from apache_beam.ml.inference.base import PredictionResult

from transforms.label import ImageInfo, ImageScores
from transforms.postprocess import label_row, top_k


def test_top_k_returns_best_first_with_scores():
    probs = np.array([0.1, 0.5, 0.05, 0.3, 0.05], np.float32)
    idx, scores = top_k(probs, 3)
    assert idx.tolist() == [1, 3, 0]
    np.testing.assert_allclose(scores, [0.5, 0.3, 0.1])
    assert idx.dtype == np.int32 and scores.dtype == np.float32


def test_top_k_breaks_ties_by_lower_index_even_at_the_cut():
    probs = np.array([0.2, 0.1, 0.2, 0.2, 0.3], np.float32)
    idx, _ = top_k(probs, 2)
    assert idx.tolist() == [4, 0]  # 0, 2, 3 tie at 0.2: the lowest index wins


@pytest.mark.parametrize('k', [1, 5, 1000])
def test_top_k_matches_full_sort(k):
    rng = np.random.default_rng(k)
    probs = rng.random(1000).astype(np.float32)
    idx, scores = top_k(probs, k)
    expected = np.argsort(-probs, kind='stable')[:k]
    assert idx.tolist() == expected.tolist()
    assert np.all(np.diff(scores) <= 0)


@pytest.mark.parametrize('k', [0, -1, 6])
def test_top_k_rejects_k_outside_the_class_count(k):
    with pytest.raises(ValueError, match='between 1 and 5'):
        top_k(np.ones(5), k)


def test_label_row_has_every_schema_column():
    from transforms.schema import LABELS_SCHEMA
    probs = np.array([0.7, 0.2, 0.1], np.float32)
    result = PredictionResult(ImageInfo('a.jpg', 'ab' * 32, 640, 480),
                              ImageScores(probs, np.arange(4, dtype=np.float32)), 'mid')
    row = label_row(result, k=2, labels=['cat', 'dog', 'fish'], model='m', run_id='r1')
    assert set(row) == set(LABELS_SCHEMA.names)
    assert row['labels'] == [{'index': 0, 'label': 'cat', 'score': pytest.approx(0.7)},
                             {'index': 1, 'label': 'dog', 'score': pytest.approx(0.2)}]
    assert row['embedding'].dtype == np.float32 and row['embedding'].tolist() == [0, 1, 2, 3]
    assert (row['width'], row['height'], row['model_id']) == (640, 480, 'mid')


def test_an_error_rows_message_is_one_line_however_many_the_model_raised():
    from transforms.errors import Failure
    from transforms.postprocess import MAX_MESSAGE, error_row
    tflite = ('RuntimeError: tensorflow/lite/kernels/conv.cc:349 bad value\n'
              'Node number 3 (CONV_2D) failed to invoke.\n')
    row = error_row(Failure('u', 'inference', 'model_error', tflite), model_id='m', run_id='r')
    assert row['message'] == ('RuntimeError: tensorflow/lite/kernels/conv.cc:349 bad value / '
                              'Node number 3 (CONV_2D) failed to invoke.')
    huge = error_row(Failure('u', 'inference', 'model_error', 'x' * 5000), model_id='m',
                     run_id='r')
    assert len(huge['message']) == MAX_MESSAGE and huge['message'].endswith('…')
