"""``--class-weight balanced``: each class's share of the loss, from the training images used
(a multi-label task: each finding's weight of its present labels)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from medtransfer.errors import MedtransferError


def balanced_class_weights(labels: Iterable[str], class_names: Sequence[str]) -> dict[str, float]:
    """Weights ``n_samples / (n_classes * count_c)``, as scikit-learn's "balanced".

    A class with half the average count weighs twice as much, so every class contributes
    the same total weight to the loss.

    Args:
        labels: the class name of every training image actually used (after
            ``--train-size``).
        class_names: all classes, in label-index order.

    Returns:
        Class name -> weight, in ``class_names`` order.

    Raises:
        MedtransferError: a class has no training image (its weight would be infinite).
    """
    counts = Counter(labels)
    missing = [name for name in class_names if counts[name] == 0]
    if missing:
        raise MedtransferError(
            f"--class-weight balanced: class {', '.join(repr(m) for m in missing)} has no "
            "training image, so its weight would be infinite. Use --class-weight none, or a "
            "dataset whose training split holds every class."
        )
    total = sum(counts[name] for name in class_names)
    return {name: total / (len(class_names) * counts[name]) for name in class_names}


def positive_weights(labels: np.ndarray, findings: Sequence[str]) -> dict[str, float]:
    """A multi-label task's ``--class-weight balanced``: each finding's present labels
    weigh ``negatives / positives`` of that finding, over the training images used and
    their known labels (unknown ones, -1, count as neither), so that a finding's
    positives and negatives contribute the same total weight to its loss.

    Args:
        labels: ``(N, F)`` of 1, 0 and -1.
        findings: the F finding names, in column order.

    Returns:
        Finding -> weight, in ``findings`` order.

    Raises:
        MedtransferError: a finding has no positive training image (its weight would be
            infinite).
    """
    labels = np.asarray(labels)
    positives, negatives = (labels == 1).sum(axis=0), (labels == 0).sum(axis=0)
    missing = [name for name, count in zip(findings, positives, strict=True) if count == 0]
    if missing:
        raise MedtransferError(
            f"--class-weight balanced: finding {', '.join(repr(m) for m in missing)} has no "
            "positive training image, so its weight would be infinite. Use --class-weight "
            "none, or leave that finding out with --findings."
        )
    return {name: float(negative / positive)
            for name, positive, negative in zip(findings, positives, negatives, strict=True)}
