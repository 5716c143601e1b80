"""Exact classification metrics over a whole split, scikit-learn's definitions in numpy.

``keras.metrics.AUC`` integrates over a fixed grid of thresholds, an approximation that
can differ from the true ROC AUC in the third decimal; the study's numbers are exact ROC
AUCs, so every AUC here is computed from all the predictions at once.

A single-label split's labels are class indices ``(N,)`` and its primary metric is the
micro AUC; a multi-label split's labels are a matrix ``(N, F)`` of 1 (present), 0
(absent) and -1 (unknown), one column per finding, and its primary metric is the mean
of the findings' AUCs (:func:`evaluate_multi_label`). An unknown label is left out of
its finding's metrics and of the micro AUC, as it is out of the loss.
"""

from __future__ import annotations

import numpy as np

_EPSILON = 1e-7
UNKNOWN = -1
"""A multi-label label whose value is not known: masked out of the loss and metrics."""
THRESHOLD = 0.5
"""A multi-label run's finding counts as predicted present when its probability is at
least this (per-finding accuracy, ``predict``'s ``predicted``, ``export``'s ``present``)."""


def roc_auc(truth: np.ndarray, scores: np.ndarray) -> float:
    """The exact ROC AUC of binary ``truth`` against ``scores``: scikit-learn's
    ``roc_auc_score``, as the Mann-Whitney statistic.

    Each positive counts the negatives scored below it, and half of those tied with it;
    the sum over positives, divided by ``positives * negatives``, is the area under the
    ROC curve with ties drawn as scikit-learn draws them (a diagonal step). The counts
    are whole numbers, so the one division at the end is the only rounding. It needs no
    scikit-learn, whose import would cost a run's process about a CPU-second.

    Raises:
        ValueError: ``truth`` holds one class only (no AUC), or a score is NaN or
            infinite; as scikit-learn raises.
    """
    truth = np.asarray(truth).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(scores).all():
        raise ValueError("Input contains NaN or infinity: a ROC AUC needs finite scores.")
    positive, negative = scores[truth], np.sort(scores[~truth])
    if not len(positive) or not len(negative):
        raise ValueError("Only one class present in y_true. ROC AUC score is not defined "
                         "in that case.")
    below = np.searchsorted(negative, positive, side="left").sum()
    up_to = np.searchsorted(negative, positive, side="right").sum()
    return float((below + up_to) / (2 * len(positive) * len(negative)))


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[np.asarray(labels, dtype=np.int64)]


def auc_micro(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """ROC AUC micro-averaged over one-hot labels: every (image, class) pair is one score.

    Args:
        labels: class indices, shape ``(N,)``.
        probabilities: shape ``(N, C)``.
    """
    targets = one_hot(labels, probabilities.shape[1])
    return roc_auc(targets.ravel(), np.asarray(probabilities).ravel())


def auc_macro(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean of the per-class one-vs-rest ROC AUCs.

    A class with no positive (or no negative) example in the split has no AUC; it is
    left out of the mean rather than failing the run. NaN when no class has one.
    """
    targets = one_hot(labels, probabilities.shape[1])
    scores = [
        roc_auc(targets[:, c], probabilities[:, c])
        for c in range(targets.shape[1])
        if 0 < targets[:, c].sum() < len(targets)
    ]
    return float(np.mean(scores)) if scores else float("nan")


def accuracy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    return float(np.mean(np.argmax(probabilities, axis=1) == np.asarray(labels)))


def cross_entropy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean categorical cross-entropy, clipped as Keras clips it."""
    picked = np.asarray(probabilities)[np.arange(len(labels)), np.asarray(labels, dtype=int)]
    return float(-np.mean(np.log(np.clip(picked, _EPSILON, 1.0))))


def quadratic_kappa(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Quadratic weighted kappa of the arg-max grade (APTOS retina's Kaggle metric).

    scikit-learn's ``cohen_kappa_score(labels, predicted, labels=range(C),
    weights="quadratic")``: ``1 - sum(W * observed) / sum(W * expected)`` over the C x C
    confusion matrix, where ``expected`` is the outer product of its row and column sums
    over N and ``W`` the squared distances between grades. All ``C`` grades (the columns
    of ``probabilities``) count, also when a grade is absent from a split: numbering only
    the grades present, with grade 2 missing, grades 1 and 3 would count as neighbours.
    """
    grades = probabilities.shape[1]
    observed = np.zeros((grades, grades))
    np.add.at(observed, (np.asarray(labels, dtype=np.int64), np.argmax(probabilities, axis=1)), 1)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    weights = np.subtract.outer(np.arange(grades), np.arange(grades)) ** 2
    chance = np.sum(weights * expected)
    # Every image true and predicted in one grade: no disagreement is possible (sklearn: NaN).
    return float(1 - np.sum(weights * observed) / chance) if chance else float("nan")


def evaluate_predictions(labels: np.ndarray, probabilities: np.ndarray, *,
                         kappa: bool = False) -> dict[str, float]:
    """All split metrics: ``auc_micro``, ``auc_macro``, ``accuracy``, ``loss`` (+ ``kappa``)."""
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    metrics = {
        "loss": cross_entropy(labels, probabilities),
        "auc_micro": auc_micro(labels, probabilities),
        "auc_macro": auc_macro(labels, probabilities),
        "accuracy": accuracy(labels, probabilities),
    }
    if kappa:
        metrics["quadratic_kappa"] = quadratic_kappa(labels, probabilities)
    return metrics


def masked_binary_cross_entropy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The multi-label loss over a split, as training computes it without weights: each
    image's binary cross-entropy summed over its known findings and divided by the number
    of findings (an unknown label adds nothing), averaged over the images; probabilities
    are clipped as Keras clips them."""
    labels = np.asarray(labels)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), _EPSILON, 1.0 - _EPSILON)
    entropy = -(np.where(labels == 1, np.log(p), 0.0) + np.where(labels == 0, np.log(1 - p), 0.0))
    return float(np.mean(np.sum(entropy, axis=1) / labels.shape[1]))


def evaluate_multi_label(labels: np.ndarray, probabilities: np.ndarray,
                         findings: list[str]) -> dict:
    """All metrics of a multi-label split, unknown labels (-1) left out.

    Args:
        labels: ``(N, F)`` of 1, 0 and -1.
        probabilities: ``(N, F)``, one sigmoid per finding.
        findings: the F finding names, in column order.

    Returns:
        ``loss`` (:func:`masked_binary_cross_entropy`), ``auc_mean`` (the mean over the
        findings that have an AUC of their ROC AUCs: the primary metric), ``auc_micro``
        (one ROC AUC over every known (image, finding) pair), ``accuracy`` (the mean of
        the per-finding accuracies), and ``auc_per_finding`` / ``accuracy_per_finding``
        (finding -> value; the accuracy at :data:`THRESHOLD`). A finding whose known
        labels are all of one value has no AUC (NaN), and is left out of the mean; NaN
        when no finding has one.
    """
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    known = labels != UNKNOWN
    aucs, accuracies = {}, {}
    for column, name in enumerate(findings):
        rows = known[:, column]
        truth, scores = labels[rows, column], probabilities[rows, column]
        aucs[name] = (roc_auc(truth, scores) if 0 < truth.sum() < len(truth)
                      else float("nan"))
        accuracies[name] = (float(np.mean((scores >= THRESHOLD) == (truth == 1)))
                            if len(truth) else float("nan"))
    truth = labels[known]
    present = [value for value in aucs.values() if not np.isnan(value)]
    return {
        "loss": masked_binary_cross_entropy(labels, probabilities),
        "auc_mean": float(np.mean(present)) if present else float("nan"),
        "auc_micro": (roc_auc(truth, probabilities[known])
                      if 0 < truth.sum() < len(truth) else float("nan")),
        "accuracy": float(np.nanmean(list(accuracies.values()))),
        "auc_per_finding": aucs,
        "accuracy_per_finding": accuracies,
    }
