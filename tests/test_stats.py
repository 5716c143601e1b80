"""Bootstrap intervals and paired differences of micro AUCs, checked by hand and by sklearn."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medtransfer.study import stats
from medtransfer.training.metrics import auc_micro, one_hot


@pytest.fixture(scope="module")
def split():
    """300 images of 3 classes with noisy, tied (rounded) probabilities."""
    rng = np.random.default_rng(7)
    labels = np.repeat([0, 1, 2], [150, 100, 50])
    scores = rng.random((300, 3)) + 0.6 * one_hot(labels, 3)
    return labels, np.round(scores / scores.sum(axis=1, keepdims=True), 2)


def test_counts_are_stratified_resamples(split):
    labels, _ = split
    counts = stats.resample_counts(labels, 200, seed=0)
    assert counts.shape == (200, 300)
    assert (counts.sum(axis=1) == 300).all()
    for label, size in ((0, 150), (1, 100), (2, 50)):
        assert (counts[:, labels == label].sum(axis=1) == size).all()
    np.testing.assert_array_equal(counts, stats.resample_counts(labels, 200, seed=0))
    assert not np.array_equal(counts, stats.resample_counts(labels, 200, seed=1))


def test_resampled_auc_is_the_weighted_roc_auc(split):
    labels, probabilities = split
    counts = stats.resample_counts(labels, 5, seed=3)
    counts = np.vstack([np.ones((1, 300), dtype=np.int32), counts])
    aucs = stats.resampled_auc_micro(labels, probabilities, counts)
    assert aucs[0] == pytest.approx(auc_micro(labels, probabilities), abs=1e-12)
    targets = one_hot(labels, 3).ravel()
    for row, auc in zip(counts, aucs, strict=True):
        # Each image's three scores carry its draw count as weight.
        expected = roc_auc_score(targets, probabilities.ravel(), sample_weight=np.repeat(row, 3))
        assert auc == pytest.approx(expected, abs=1e-12)


def test_hand_computed_auc_with_a_tie():
    # Two images, two classes: positives (0.6, 0.5), negatives (0.4, 0.5). Pairs:
    # 0.6>0.4, 0.6>0.5, 0.5>0.4, 0.5=0.5 (half) -> 3.5 / 4.
    labels = np.array([0, 1])
    probabilities = np.array([[0.6, 0.4], [0.5, 0.5]])
    one_each = np.array([[1, 1]])
    assert stats.resampled_auc_micro(labels, probabilities, one_each)[0] == 0.875
    # Image 0 drawn twice, image 1 never: only positive 0.6 and negative 0.4 remain.
    assert stats.resampled_auc_micro(labels, probabilities, np.array([[2, 0]]))[0] == 1.0


def test_a_perfect_classifier_has_the_interval_one_to_one(split):
    labels, _ = split
    perfect = one_hot(labels, 3) * 0.9 + 0.05
    interval = stats.bootstrap_auc_micro(labels, perfect, resamples=1000, seed=0)
    assert (interval.estimate, interval.low, interval.high) == (1.0, 1.0, 1.0)


def test_identical_predictions_differ_by_zero_with_p_one(split):
    labels, probabilities = split
    difference = stats.paired_bootstrap_auc_micro(labels, probabilities, probabilities.copy(),
                                                  resamples=1000, seed=0)
    assert (difference.estimate, difference.low, difference.high) == (0.0, 0.0, 0.0)
    assert difference.p_value == 1.0 and difference.resamples == 1000


def test_a_real_improvement_is_significant_and_reproducible(split):
    labels, probabilities = split
    better = 0.5 * probabilities + 0.5 * one_hot(labels, 3)
    first = stats.paired_bootstrap_auc_micro(labels, better, probabilities, seed=5)
    again = stats.paired_bootstrap_auc_micro(labels, better, probabilities, seed=5)
    assert first == again
    assert first.estimate == pytest.approx(auc_micro(labels, better) - auc_micro(labels,
                                                                            probabilities))
    assert 0 < first.low < first.estimate < first.high and first.p_value == 0.0
    # Reversed, the same difference with the sign flipped and the same p-value.
    reverse = stats.paired_bootstrap_auc_micro(labels, probabilities, better, seed=5)
    assert reverse.estimate == pytest.approx(-first.estimate)
    assert reverse.high == pytest.approx(-first.low) and reverse.p_value == 0.0


def test_p_value_is_the_doubled_share_on_the_other_side():
    samples_b = np.zeros(10)
    samples_a = np.array([0.1] * 8 + [0.0, -0.1])  # 2 of 10 at or below zero
    assert stats.paired_difference(0.05, samples_a, samples_b).p_value == pytest.approx(0.4)
    samples_a = np.array([0.1] * 4 + [-0.1] * 6)  # 6 of 10 on the other side: capped
    assert stats.paired_difference(0.01, samples_a, samples_b).p_value == 1.0


def test_mean_difference_over_one_seed_is_the_paired_difference(split):
    labels, probabilities = split
    counts = stats.resample_counts(labels, 1000, seed=0)
    other = np.roll(probabilities, 1, axis=1)
    a = stats.resampled_auc_micro(labels, probabilities, counts)
    b = stats.resampled_auc_micro(labels, other, counts)
    estimate = auc_micro(labels, probabilities) - auc_micro(labels, other)
    single = stats.paired_mean_difference(
        np.array([auc_micro(labels, probabilities)]), np.array([auc_micro(labels, other)]),
        a[None], b[None])
    assert single == stats.paired_difference(estimate, a, b)


def test_mean_difference_resamples_the_seeds():
    # Differences constant over the test resamples: only the seed draw varies them.
    # Two seeds, +0.1 and +0.3: resampled means 0.1, 0.2, 0.3 with chances 1/4, 1/2,
    # 1/4; the interval is [0.1, 0.3] around the mean 0.2, and no resample is <= 0.
    resamples = 4000
    ones = np.ones((2, resamples))
    found = stats.paired_mean_difference(np.array([0.6, 0.8]), np.array([0.5, 0.5]),
                                         ones * [[0.6], [0.8]], ones * 0.5, seed=0)
    assert found.estimate == pytest.approx(0.2)
    assert (found.low, found.high) == (pytest.approx(0.1), pytest.approx(0.3))
    assert found.p_value == 0.0
    # Three seeds, -0.1, +0.2, +0.2 (mean +0.1): a resampled mean is <= 0 when the
    # draw holds -0.1 at least twice: 3 (1/3)^2 (2/3) + (1/3)^3 = 7/27, p = 14/27.
    found = stats.paired_mean_difference(
        np.array([0.4, 0.7, 0.7]), np.array([0.5, 0.5, 0.5]),
        np.ones((3, resamples)) * [[0.4], [0.7], [0.7]], np.ones((3, resamples)) * 0.5,
        seed=1)
    assert found.estimate == pytest.approx(0.1)
    assert found.p_value == pytest.approx(14 / 27, abs=0.03)
