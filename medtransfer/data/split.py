"""The stratified, seeded train:validation:test = 8:1:1 split of a prepared dataset.

Each class is split on its own, so every split keeps the class balance of the whole.
Per-class counts use largest-remainder rounding: each is within 1 of the exact 80 / 10 /
10 % and they add up to the class size. The result depends only on the seed and the set
of (id, label) pairs, not on the order the source listed them in, so preparing the same
data again gives the same split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from medtransfer.data.shards import SPLITS
from medtransfer.errors import MedtransferError

FRACTIONS = (0.8, 0.1, 0.1)
"""train, validation, test, in the order of ``shards.SPLITS``."""

MIN_IMAGES_PER_CLASS = 10
"""The fewest images a class can have and still give validation and test one each."""


def split_counts(total: int, fractions: Sequence[float] = FRACTIONS) -> list[int]:
    """Splits ``total`` by ``fractions`` with largest-remainder rounding.

    Each count is the floor of its exact share; the images left over go, one each, to
    the splits with the largest remainders (ties to the earlier split).

    Args:
        total: the number of images of one class.
        fractions: the share of each split; they add up to 1.

    Returns:
        One count per split, adding up to ``total``, each within 1 of its exact share.
    """
    exact = [total * fraction for fraction in fractions]
    counts = [math.floor(share + 1e-9) for share in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for index in by_remainder[: total - sum(counts)]:
        counts[index] += 1
    return counts


def check_class_sizes(class_counts: dict[str, int], hint: str = "") -> None:
    """Fails when a class is too small for the 8:1:1 split.

    Args:
        class_counts: images per class name.
        hint: what else the user can do, appended to the message.

    Raises:
        MedtransferError: naming every class with fewer than ``MIN_IMAGES_PER_CLASS``
            images, with its count.
    """
    small = {name: n for name, n in class_counts.items() if n < MIN_IMAGES_PER_CLASS}
    if not small:
        return
    listing = ", ".join(f"'{name}' has {n}" for name, n in small.items())
    noun = "class is" if len(small) == 1 else "classes are"
    raise MedtransferError(
        f"The {noun} too small for the stratified 8:1:1 split: {listing} "
        f"image{'s' if sum(small.values()) != 1 else ''}; each class needs at least "
        f"{MIN_IMAGES_PER_CLASS} so that validation and test get one image each. Add images "
        f"to {'it' if len(small) == 1 else 'them'} or leave the class out.{hint}"
    )


def stratified_split(
    ids: Sequence[str],
    labels: Sequence[str],
    class_names: Sequence[str],
    seed: int,
    hint: str = "",
) -> pd.DataFrame:
    """Assigns every image to train, validation or test, stratified by class.

    Args:
        ids: unique image ids.
        labels: the class name of each image.
        class_names: every class, in label-index order; each needs at least
            ``MIN_IMAGES_PER_CLASS`` images.
        seed: the same seed and the same images give the same split.
        hint: appended to the too-small-class error.

    Returns:
        A frame with the columns id, label, split: the train rows, then validation, then
        test, each split in a seeded random order (so shards written in this order are
        already mixed across classes).

    Raises:
        MedtransferError: a class has fewer than ``MIN_IMAGES_PER_CLASS`` images.
        ValueError: ids repeat, or a label is not in ``class_names``.
    """
    if len(set(ids)) != len(ids):
        raise ValueError("image ids must be unique")
    by_class: dict[str, list[str]] = {name: [] for name in class_names}
    for image_id, label in zip(ids, labels, strict=True):
        if label not in by_class:
            raise ValueError(f"label {label!r} is not one of the class names")
        by_class[label].append(image_id)
    check_class_sizes({name: len(members) for name, members in by_class.items()}, hint)

    rng = np.random.default_rng(seed)
    rows: dict[str, list[tuple[str, str]]] = {split: [] for split in SPLITS}
    for name in class_names:
        members = sorted(by_class[name])
        order = rng.permutation(len(members))
        start = 0
        for split, count in zip(SPLITS, split_counts(len(members)), strict=True):
            rows[split].extend((members[i], name) for i in order[start : start + count])
            start += count
    frames = []
    for split in SPLITS:
        mixed = [rows[split][i] for i in rng.permutation(len(rows[split]))]
        frames.append(pd.DataFrame(mixed, columns=["id", "label"]).assign(split=split))
    return pd.concat(frames, ignore_index=True)
