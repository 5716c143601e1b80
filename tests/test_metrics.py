"""Exact metrics on samples small enough to check by hand (MONAI-style)."""

import numpy as np
import pytest

from medtransfer.training.metrics import (
    accuracy,
    auc_macro,
    auc_micro,
    cross_entropy,
    evaluate_predictions,
    quadratic_kappa,
)

# Two classes, four images. P(class 1) = 0.1, 0.4, 0.35, 0.8 for labels 0, 0, 1, 1.
LABELS = np.array([0, 0, 1, 1])
PROBS = np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])


def test_binary_auc_by_hand():
    # Class 1: positives 0.35, 0.8 vs negatives 0.1, 0.4 -> 3 of 4 pairs ordered: 0.75.
    # Class 0 (scores 1 - p): positives 0.9, 0.6 vs negatives 0.65, 0.2 -> 3 of 4: 0.75.
    assert auc_macro(LABELS, PROBS) == pytest.approx(0.75)
    # Micro: 8 scores, positives .9 .6 .35 .8 vs negatives .1 .4 .65 .2 -> 13 of 16 pairs.
    assert auc_micro(LABELS, PROBS) == pytest.approx(13 / 16)


def test_roc_auc_refuses_one_class_and_scores_that_are_not_finite():
    from medtransfer.training.metrics import roc_auc

    with pytest.raises(ValueError, match="Only one class"):
        roc_auc(np.array([1, 1]), np.array([0.2, 0.4]))
    with pytest.raises(ValueError, match="NaN or infinity"):
        roc_auc(np.array([0, 1]), np.array([0.2, np.nan]))
    # Ties count one half: positives 0.5, 0.9 against negatives 0.5, 0.1 -> 3.5 of 4.
    assert roc_auc(np.array([1, 1, 0, 0]), np.array([0.5, 0.9, 0.5, 0.1])) == 3.5 / 4


def test_accuracy_and_loss_by_hand():
    # Arg-max: 0, 0, 0, 1 -> 3 of 4 right.
    assert accuracy(LABELS, PROBS) == pytest.approx(0.75)
    expected = -np.mean(np.log([0.9, 0.6, 0.35, 0.8]))
    assert cross_entropy(LABELS, PROBS) == pytest.approx(expected)


def test_macro_auc_skips_a_class_absent_from_the_split():
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.3, 0.6, 0.1]])
    # Class 2 has no positive: its AUC is undefined, so the mean is over classes 0 and 1,
    # both perfectly ranked.
    assert auc_macro(labels, probs) == pytest.approx(1.0)


def test_perfect_and_inverted_rankings():
    labels = np.array([0, 1, 2])
    perfect = np.eye(3) * 0.8 + 0.2 / 3
    assert auc_micro(labels, perfect) == pytest.approx(1.0)
    # Every image gives 0.87 to the wrong class: the 3 positives score 1/15 each, the 6
    # negatives 0.87 three times and 1/15 three times -> each positive ties 3 pairs: 4.5/18.
    wrong = perfect[(labels + 1) % 3]
    assert auc_micro(labels, wrong) == pytest.approx(0.25)


def test_quadratic_kappa_by_hand():
    # Perfect grades -> 1; every grade off by the maximum (0<->4) -> strongly negative.
    labels = np.array([0, 1, 2, 3, 4])
    assert quadratic_kappa(labels, np.eye(5)[labels]) == pytest.approx(1.0)
    assert quadratic_kappa(np.array([0, 4]), np.eye(5)[[4, 0]]) == pytest.approx(-1.0)


def test_quadratic_kappa_weighs_by_all_five_grades_when_some_are_absent():
    # Grades 0, 1, 3 true; predicted 0, 0, 1; grades 2 and 4 appear nowhere.
    # Weights (i - j)^2 over grade numbers. Observed: (0,0) 0 + (1,0) 1 + (3,1) 4 = 5.
    # Expected: rows 0, 1, 3 once each, columns 0 twice and 1 once, over N = 3:
    # row 0: 2*0 + 1*1 = 1; row 1: 2*1 + 1*0 = 2; row 3: 2*9 + 1*4 = 22; (1+2+22)/3.
    # kappa = 1 - 5 / (25/3) = 0.4. Numbering only the grades present (3 -> 2) gives
    # 1 - 2 / 4 = 0.5: grades 1 and 3 would count as neighbours.
    labels = np.array([0, 1, 3])
    probabilities = np.eye(5)[[0, 0, 1]]
    assert quadratic_kappa(labels, probabilities) == pytest.approx(0.4)


def test_evaluate_predictions_keys():
    metrics = evaluate_predictions(LABELS, PROBS, kappa=True)
    assert set(metrics) == {"loss", "auc_micro", "auc_macro", "accuracy", "quadratic_kappa"}
