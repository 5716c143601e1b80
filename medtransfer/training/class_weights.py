"""``--class-weight balanced``: each class's share of the loss, from the training images used."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

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
