"""Multi-label metrics, loss and weights on arrays small enough to check by hand."""

import math

import numpy as np
import pytest

from medtransfer.errors import MedtransferError
from medtransfer.training.class_weights import positive_weights
from medtransfer.training.losses import MaskedBinaryCrossentropy, masked_accuracy
from medtransfer.training.metrics import evaluate_multi_label, masked_binary_cross_entropy
from medtransfer.training.rundir import primary_metric

FINDINGS = ["A", "B"]
# Four images, two findings; B's label of image 2 is unknown (-1).
LABELS = np.array([[1, 0], [0, 1], [1, -1], [0, 0]])
PROBS = np.array([[0.8, 0.3], [0.4, 0.6], [0.3, 0.9], [0.2, 0.7]])


def test_per_finding_mean_and_micro_auc_by_hand():
    metrics = evaluate_multi_label(LABELS, PROBS, FINDINGS)
    # A: positives .8, .3 vs negatives .4, .2 -> pairs (.8>.4, .8>.2, .3<.4, .3>.2): 3/4.
    # B: image 2 left out; positive .6 vs negatives .3, .7 -> 1 of 2 pairs: 1/2.
    assert metrics["auc_per_finding"] == pytest.approx({"A": 0.75, "B": 0.5})
    assert metrics["auc_mean"] == pytest.approx(0.625)
    # Micro over the 7 known pairs: positives .8 .3 .6 vs negatives .4 .2 .3 .7:
    # .8 beats all 4; .3 beats .2, ties .3 (1/2), loses to .4 and .7 -> 1.5; .6 beats 3.
    assert metrics["auc_micro"] == pytest.approx((4 + 1.5 + 3) / 12)
    assert primary_metric(metrics) == "auc_mean"


def test_per_finding_accuracy_at_one_half_leaves_unknown_labels_out():
    metrics = evaluate_multi_label(LABELS, PROBS, FINDINGS)
    # A predicted present for .8 only: right on images 0, 1, 3 -> 3/4.
    # B predicted present for .6, .7 (.9 is unknown): right on 0, 1, wrong on 3 -> 2/3.
    assert metrics["accuracy_per_finding"] == pytest.approx({"A": 0.75, "B": 2 / 3})
    assert metrics["accuracy"] == pytest.approx((0.75 + 2 / 3) / 2)


def test_a_finding_with_one_value_has_no_auc_and_is_left_out_of_the_mean():
    labels = np.array([[1, 0], [0, 0], [1, -1]])
    probs = np.array([[0.9, 0.5], [0.1, 0.4], [0.8, 0.3]])
    metrics = evaluate_multi_label(labels, probs, FINDINGS)
    assert math.isnan(metrics["auc_per_finding"]["B"])
    assert metrics["auc_mean"] == pytest.approx(1.0)


def test_loss_masks_unknown_labels_and_matches_keras():
    labels = np.array([[1, 0, -1]])
    probs = np.array([[0.8, 0.4, 0.9]])
    expected = -(math.log(0.8) + math.log(0.6)) / 3
    assert masked_binary_cross_entropy(labels, probs) == pytest.approx(expected)
    keras_loss = MaskedBinaryCrossentropy()(labels.astype("float32"), probs.astype("float32"))
    assert float(keras_loss) == pytest.approx(expected, rel=1e-5)
    # A positive weight of 3 for the first finding triples its term only.
    weighted = MaskedBinaryCrossentropy([3.0, 1.0, 1.0])(labels.astype("float32"),
                                                          probs.astype("float32"))
    assert float(weighted) == pytest.approx(-(3 * math.log(0.8) + math.log(0.6)) / 3, rel=1e-5)


def test_masked_accuracy_counts_known_labels_only():
    labels = np.array([[1, 0, -1], [0, -1, -1]], dtype="float32")
    probs = np.array([[0.8, 0.6, 0.1], [0.2, 0.9, 0.9]], dtype="float32")
    # Image 0: 1 of its 2 known right; image 1: its one known right.
    assert np.asarray(masked_accuracy(labels, probs)) == pytest.approx([0.5, 1.0])


def test_positive_weights_are_negatives_over_positives_of_known_labels():
    labels = np.array([[1, 0], [0, 1], [0, -1], [0, 0]])
    assert positive_weights(labels, FINDINGS) == pytest.approx({"A": 3.0, "B": 2.0})
    with pytest.raises(MedtransferError, match="'B' has no positive"):
        positive_weights(np.array([[1, 0], [0, -1]]), FINDINGS)


def test_bootstrap_per_finding_aucs_leave_unknown_labels_out():
    from medtransfer.study.stats import (
        resample_counts,
        resampled_auc_mean,
        resampled_auc_per_finding,
    )

    once = np.ones((1, len(LABELS)), dtype=np.int32)
    assert resampled_auc_per_finding(LABELS, PROBS, once)[:, 0] == pytest.approx([0.75, 0.5])
    assert resampled_auc_mean(LABELS, PROBS, once) == pytest.approx([0.625])
    # Stratified by each image's row of labels: the four rows differ, so every resample
    # draws each image once and gives the split's own mean AUC.
    counts = resample_counts(LABELS, 50, seed=0)
    assert (counts[:, [0, 1, 2, 3]] == 1).all()  # four distinct label rows: each kept once
    assert np.allclose(resampled_auc_mean(LABELS, PROBS, counts), 0.625)
