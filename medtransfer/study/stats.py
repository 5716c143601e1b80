"""Bootstrap confidence intervals for test AUCs, and paired bootstraps of their differences.

Resampling is over test images and stratified by class: each resample draws, with
replacement, as many images of each class as the test split holds. The test split is
itself stratified (8:1:1), so a stratified resample looks like a test split of the same
dataset, and every resample holds every class: a micro AUC is always defined and no
resample is dropped. The same seed and the same labels give the same resamples, so two
runs evaluated on the same test split are resampled on the same image indices (paired).

A resample is a vector of counts (how often each image was drawn), and the AUC of a
weighted sample follows from one sort of the scores shared by all resamples and one
compiled pass per resample (a rank-based, weighted Mann-Whitney statistic).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medtransfer.training.metrics import auc_micro

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate and its percentile bootstrap interval."""

    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class Difference:
    """A difference of two AUCs (A - B) with its paired bootstrap interval and p-value.

    Attributes:
        p_value: the share of resamples on the other side of zero from ``estimate``
            (ties at zero count as the other side), doubled, capped at 1; 1 when the
            estimate is 0. Its smallest value is 0: read it as "< 1 / resamples".
    """

    estimate: float
    low: float
    high: float
    p_value: float
    resamples: int


def resample_counts(labels: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Stratified bootstrap resamples of a test split, as draw counts per image.

    Args:
        labels: class index per image, shape ``(N,)``; or a multi-label split's
            ``(N, F)`` of 1, 0, -1, stratified by each image's whole row (its set of
            findings), so that every finding keeps its count of positives.
        resamples: number of resamples ``B``.
        seed: seeds the draws; the same seed and labels give the same counts.

    Returns:
        ``(B, N)`` int32: how often each image is drawn in each resample; every row sums
        to N and keeps each class's count.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = np.unique(labels, axis=0, return_inverse=True)[1].reshape(-1)
    size = len(labels)
    rng = np.random.default_rng(seed)
    counts = np.zeros((resamples, size), dtype=np.int32)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        drawn = members[rng.integers(0, len(members), size=(resamples, len(members)))]
        # A bincount per resample: one over all of them at once builds a (B, N) int64
        # array per class, several times the memory traffic.
        for row, images in zip(counts, drawn, strict=True):
            row += np.bincount(images, minlength=size).astype(np.int32)
    return counts


def resampled_auc_micro(labels: np.ndarray, probabilities: np.ndarray,
                        counts: np.ndarray) -> np.ndarray:
    """The micro AUC of every resample: one ROC AUC over all (image, class) scores.

    A resample drawing image i ``w`` times weighs each of its C scores by ``w``. The
    weighted AUC of a resample is the weighted Mann-Whitney statistic
    ``sum over positive scores of w * (negatives below + negatives tied / 2) / (pos * neg)``:
    ties count one half, as in scikit-learn. The negative scores are sorted once and each
    positive score's place among them found once (``searchsorted``); then one compiled
    pass per resample (numba, :mod:`medtransfer.study._wins`) walks the positives in
    score order with two forward pointers into the negatives. Every term is a whole or
    half number, so the sums are exact and the result does not depend on the order of
    the additions.

    Args:
        labels: class index per image, ``(N,)``.
        probabilities: ``(N, C)``.
        counts: ``(B, N)`` draw counts, from :func:`resample_counts` (a row of ones
            gives the AUC of the split itself).

    Returns:
        ``(B,)`` micro AUCs.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    positive = np.eye(probabilities.shape[1], dtype=bool)[np.asarray(labels, dtype=np.int64)]
    return _weighted_aucs(positive, np.ones_like(positive), probabilities, counts)


def resampled_auc_per_finding(labels: np.ndarray, probabilities: np.ndarray,
                              counts: np.ndarray) -> np.ndarray:
    """A multi-label split's per-finding ROC AUCs for every resample (unknown labels,
    -1, left out as in :func:`medtransfer.training.metrics.evaluate_multi_label`).

    Args:
        labels: ``(N, F)`` of 1, 0, -1.
        probabilities: ``(N, F)``.
        counts: ``(B, N)`` draw counts (:func:`resample_counts` of ``labels``).

    Returns:
        ``(F, B)``; a finding whose known labels are all of one value is all NaN.
    """
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    result = np.full((labels.shape[1], len(counts)), np.nan)
    for finding in range(labels.shape[1]):
        column = labels[:, finding:finding + 1]
        if 0 < (column == 1).sum() < (column != -1).sum():
            result[finding] = _weighted_aucs(column == 1, column != -1,
                                             probabilities[:, finding:finding + 1], counts)
    return result


def resampled_auc_mean(labels: np.ndarray, probabilities: np.ndarray,
                       counts: np.ndarray) -> np.ndarray:
    """The mean over findings of the per-finding AUCs of every resample (a multi-label
    run's primary metric), over the findings that have an AUC; ``(B,)``."""
    per_finding = resampled_auc_per_finding(labels, probabilities, counts)
    defined = ~np.isnan(per_finding[:, 0])
    return per_finding[defined].mean(axis=0) if defined.any() else np.full(len(counts), np.nan)


def _weighted_aucs(positive: np.ndarray, known: np.ndarray, probabilities: np.ndarray,
                   counts: np.ndarray) -> np.ndarray:
    """One weighted ROC AUC over the ``known`` scores of ``probabilities`` (``(N, C)``,
    ``positive`` marking the positives) per row of ``counts`` (see
    :func:`resampled_auc_micro`)."""
    size, classes = probabilities.shape
    image = np.broadcast_to(np.arange(size)[:, None], (size, classes))
    negative = known & ~positive
    positive_scores, positive_image = probabilities[positive], image[positive]
    # Positives in score order: their places among the negatives then only grow.
    order = np.argsort(positive_scores, kind="stable")
    positive_scores, positive_image = positive_scores[order], positive_image[order]
    negative_scores, negative_image = probabilities[negative], image[negative]
    order = np.argsort(negative_scores, kind="stable")
    negative_scores, negative_image = negative_scores[order], negative_image[order]
    below = np.searchsorted(negative_scores, positive_scores, side="left")
    up_to = np.searchsorted(negative_scores, positive_scores, side="right")
    # Imported here: a report whose runs are all cached never loads numba.
    from medtransfer.study._wins import weighted_aucs

    counts = np.ascontiguousarray(counts)
    result = np.empty(len(counts))
    weighted_aucs(counts, positive_image.astype(np.int64), negative_image.astype(np.int64),
                  below.astype(np.int64), up_to.astype(np.int64), result)
    return result


def percentile_interval(estimate: float, samples: np.ndarray, level: float = LEVEL) -> Interval:
    """The percentile bootstrap interval of ``samples`` around ``estimate``."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high))


def paired_difference(estimate: float, samples_a: np.ndarray, samples_b: np.ndarray,
                      level: float = LEVEL) -> Difference:
    """Interval and p-value of ``A - B`` from resamples drawn on the same image indices."""
    return _difference(estimate, np.asarray(samples_a) - np.asarray(samples_b), level)


def paired_mean_difference(aucs_a: np.ndarray, aucs_b: np.ndarray, samples_a: np.ndarray,
                           samples_b: np.ndarray, *, seed: int = 0,
                           level: float = LEVEL) -> Difference:
    """The mean over seeds of ``AUC_A - AUC_B``, with a two-level paired bootstrap.

    Runs are paired by seed (A and B trained with the same seed) and evaluated on the
    same test images. Each resample draws the seeds with replacement (the variation
    between training runs) and uses one shared draw of the test images for every run
    (the variation of the test sample): resample ``b``'s difference is the mean, over
    its drawn seeds, of ``samples_a[s, b] - samples_b[s, b]``. With one seed this is
    :func:`paired_difference`.

    Args:
        aucs_a, aucs_b: ``(S,)`` the runs' test AUCs, seed by seed.
        samples_a, samples_b: ``(S, B)`` their resampled AUCs, every row on the same
            ``B`` resamples of the test images.
        seed: seeds the draw of the seeds.
        level: the interval's coverage.

    Returns:
        The mean difference, its percentile interval and its p-value.
    """
    differences = np.asarray(samples_a, dtype=np.float64) - np.asarray(samples_b,
                                                                      dtype=np.float64)
    estimate = float(np.mean(np.asarray(aucs_a, dtype=np.float64)
                             - np.asarray(aucs_b, dtype=np.float64)))
    pairs, resamples = differences.shape
    if pairs > 1:
        picks = np.random.default_rng(seed).integers(0, pairs, size=(resamples, pairs))
        differences = differences[picks, np.arange(resamples)[:, None]].mean(axis=1)
    else:
        differences = differences[0]
    return _difference(estimate, differences, level)


def _difference(estimate: float, differences: np.ndarray, level: float) -> Difference:
    interval = percentile_interval(estimate, differences, level)
    if estimate > 0:
        other_side = np.mean(differences <= 0)
    elif estimate < 0:
        other_side = np.mean(differences >= 0)
    else:
        other_side = 1.0
    return Difference(interval.estimate, interval.low, interval.high,
                      float(min(1.0, 2 * other_side)), len(differences))


def bootstrap_auc_micro(labels: np.ndarray, probabilities: np.ndarray, *,
                        resamples: int = 1000, seed: int = 0) -> Interval:
    """95% percentile bootstrap interval of a test micro AUC (stratified resamples)."""
    counts = resample_counts(labels, resamples, seed)
    return percentile_interval(auc_micro(labels, probabilities),
                               resampled_auc_micro(labels, probabilities, counts))


def paired_bootstrap_auc_micro(labels: np.ndarray, probabilities_a: np.ndarray,
                               probabilities_b: np.ndarray, *, resamples: int = 1000,
                               seed: int = 0) -> Difference:
    """Paired bootstrap of ``AUC_A - AUC_B`` for two models on the same test images."""
    counts = resample_counts(labels, resamples, seed)
    return paired_difference(
        auc_micro(labels, probabilities_a) - auc_micro(labels, probabilities_b),
        resampled_auc_micro(labels, probabilities_a, counts),
        resampled_auc_micro(labels, probabilities_b, counts),
    )
