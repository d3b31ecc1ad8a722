"""The accuracy arithmetic on hand-checked cases: top-k, recall, confusions, splits."""
import numpy as np
import pytest

from pipeline.accuracy import (confusion_matrix, evaluate, majority_rate, stratified_split)

NAMES = ['cat', 'dog', 'fox', 'owl', 'eel', 'ant']


def test_top1_and_top5_count_labeled_images_and_the_all_pair_counts_failures_as_wrong():
    truth = {'a': 0, 'b': 1, 'c': 2, 'd': 3, 'e': 0}
    predicted = {'a': [0, 1, 2, 3, 4], 'b': [2, 1, 0, 3, 4], 'c': [5, 4, 3, 1, 0]}
    report = evaluate(truth, predicted, failed=['d'], class_names=NAMES)
    assert (report.count, report.labeled, report.errors, report.missing) == (5, 3, 1, 1)
    assert report.top1 == pytest.approx(1 / 3) and report.top5 == pytest.approx(2 / 3)
    assert report.top1_all == pytest.approx(1 / 5) and report.top5_all == pytest.approx(2 / 5)


def test_predictions_for_images_without_a_true_label_are_ignored():
    report = evaluate({'a': 0}, {'a': [0], 'stray': [3]}, failed=['other'], class_names=NAMES)
    assert (report.count, report.labeled, report.errors, report.top1) == (1, 1, 0, 1.0)


def test_recall_per_class_and_the_most_frequent_confusions_first():
    truth = {f'{c}{i}': c for c in range(3) for i in range(4)}
    # class 0 always right; class 1 twice mistaken for 2; class 2 three times for 0, once for 1
    predicted = {'00': [0], '01': [0], '02': [0], '03': [0],
                 '10': [1], '11': [1], '12': [2], '13': [2],
                 '20': [0], '21': [0], '22': [0], '23': [1]}
    report = evaluate(truth, predicted, failed=[], class_names=NAMES, k=1)
    recall = {c.label: c.recall for c in report.per_class}
    assert recall == {'cat': 1.0, 'dog': 0.5, 'fox': 0.0}
    assert [(c.true_label, c.predicted_label, c.count) for c in report.confusions] == [
        ('fox', 'cat', 3), ('dog', 'fox', 2), ('fox', 'dog', 1)]


def test_only_the_twenty_most_frequent_confusions_are_kept():
    truth = {f'u{i}': i % 30 for i in range(300)}
    predicted = {f'u{i}': [(i % 30 + 1 + (i // 30) % 3) % 30] for i in range(300)}
    names = [f'c{i}' for i in range(30)]
    report = evaluate(truth, predicted, failed=[], class_names=names)
    assert len(report.confusions) == 20
    counts = [c.count for c in report.confusions]
    assert counts == sorted(counts, reverse=True) and sum(counts) <= 300


def test_top5_becomes_top_k_when_there_are_fewer_classes():
    report = evaluate({'a': 1, 'b': 0}, {'a': [0, 1], 'b': [1, 0]}, failed=[],
                      class_names=['x', 'y'])
    assert report.k == 2 and report.top1 == 0.0 and report.top5 == 1.0
    assert 'top-2' in report.render()


def test_eval_json_has_every_figure_named_in_the_issue():
    d = evaluate({'a': 0}, {'a': [1, 0]}, failed=[], class_names=NAMES).to_json()
    for key in ('count', 'top1', 'top5', 'top1_all', 'top5_all', 'errors', 'per_class',
                'confusions'):
        assert key in d
    assert d['confusions'] == [{'true_index': 0, 'true_label': 'cat', 'predicted_index': 1,
                                'predicted_label': 'dog', 'count': 1}]


def test_confusion_matrix_rows_are_true_classes():
    m = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_majority_rate_is_the_share_of_the_most_frequent_class():
    assert majority_rate([0, 1, 1, 1, 2]) == 0.6
    assert majority_rate([]) == 0.0


def test_the_stratified_split_keeps_each_class_proportion_and_is_seeded():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 2)
    train, test = stratified_split(labels, 0.2, seed=7)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(82))
    assert [int((labels[test] == c).sum()) for c in range(3)] == [10, 6, 1]
    again = stratified_split(labels, 0.2, seed=7)
    other = stratified_split(labels, 0.2, seed=8)
    assert np.array_equal(again[1], test) and not np.array_equal(other[1], test)


def test_a_test_fraction_outside_zero_and_one_is_refused():
    with pytest.raises(ValueError, match='--test_fraction'):
        stratified_split([0, 1], 1.0, seed=0)
