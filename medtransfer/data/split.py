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


MIN_GROUPS = 10
"""The fewest groups (patients, or images when there are no groups) a grouped split needs,
so that validation and test get at least one group each."""


def grouped_split(
    frame: pd.DataFrame,
    class_names: Sequence[str],
    seed: int,
    multi_label: bool,
    splits: Sequence[str] = SPLITS,
    fractions: Sequence[float] = FRACTIONS,
) -> tuple[pd.DataFrame, list[str]]:
    """Assigns whole groups to splits by iterative stratification.

    Every group (a patient, ``frame["group"]``) goes to one split, so no group's images
    are in two splits. Groups are stratified by the findings (multi-label) or classes
    (single-label) any of their images has, with the iterative stratification of Sechidis
    et al. (2011) from the ``iterative-stratification`` package: the fractions are of
    groups, so the images per split are close to, not exactly, the fractions. The
    result depends only on the seed and the set of (id, label, group) rows, not on
    their order.

    Args:
        frame: the columns id, label (multi-label: "|"-joined findings) and group; other
            columns are kept.
        class_names: the findings or classes, in order.
        seed: the same seed and the same rows give the same split.
        multi_label: whether ``label`` is a "|"-joined set of findings.
        splits: the splits to fill (ChestX-ray14 with its official test list fills
            train and validation only).
        fractions: each split's share of the groups.

    Returns:
        The frame with a ``split`` column, rows in split order and, within a split, in a
        seeded random order; and one warning per finding (or class) with too few positive
        images to have one in every split, naming its counts.

    Raises:
        MedtransferError: fewer than ``MIN_GROUPS`` groups.
    """
    # Imported here: it imports scikit-learn, which only a grouped split needs.
    from iterstrat.ml_stratifiers import IterativeStratification

    groups = sorted(set(frame["group"]))
    if len(groups) < MIN_GROUPS:
        raise MedtransferError(
            f"The grouped split needs at least {MIN_GROUPS} groups (patients) so that "
            f"{' and '.join(splits[1:]) or 'every split'} get one each; these images come from "
            f"{len(groups)}. Add images of more patients, or check the group id column."
        )
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.zeros((len(groups), len(class_names)), dtype=bool)
    group_row = pd.Series(np.arange(len(groups)), index=groups)[frame["group"]].to_numpy()
    for row, label in zip(group_row, frame["label"], strict=True):
        for name in label.split("|") if multi_label else [label]:
            if name:
                labels[row, index[name]] = True
    # A bool matrix: the package indexes its label counts with each row (see its source).
    fold = IterativeStratification(labels, np.asarray(fractions, dtype=float),
                                   np.random.RandomState(seed))
    assigned = frame.assign(split=np.asarray(splits)[fold[group_row]])
    rng = np.random.default_rng(seed)
    parts = []
    for split in splits:
        rows = assigned[assigned["split"] == split].sort_values("id", kind="stable")
        parts.append(rows.iloc[rng.permutation(len(rows))])
    result = pd.concat(parts, ignore_index=True)
    return result, _too_few_warnings(result, class_names, multi_label, splits)


def _too_few_warnings(split: pd.DataFrame, class_names: Sequence[str], multi_label: bool,
                      splits: Sequence[str]) -> list[str]:
    names = split["label"].str.split("|") if multi_label else split["label"]
    rows = split.assign(name=names).explode("name")
    table = pd.crosstab(rows["name"], rows["split"])
    warnings = []
    for name in class_names:
        counts = {s: int(table.at[name, s]) if name in table.index and s in table.columns
                  else 0 for s in splits}
        if sum(counts.values()) == 0:
            warnings.append(f"'{name}' has no positive images; its metrics are undefined.")
        elif min(counts.values()) == 0:
            listing = ", ".join(f"{s} {n}" for s, n in counts.items())
            warnings.append(
                f"'{name}' has too few positive images for every split ({listing}); its "
                f"metrics on a split without positives are undefined."
            )
    return warnings
