"""The stratified 8:1:1 split: counts, determinism, and the too-small-class error."""

import random

import pytest

from medtransfer.data.split import MIN_IMAGES_PER_CLASS, split_counts, stratified_split
from medtransfer.errors import MedtransferError


def test_split_counts_are_within_one_of_80_10_10_and_add_up():
    for total in range(MIN_IMAGES_PER_CLASS, 1000):
        counts = split_counts(total)
        assert sum(counts) == total
        for count, fraction in zip(counts, (0.8, 0.1, 0.1), strict=True):
            assert abs(count - total * fraction) < 1, (total, counts)
        assert min(counts) >= 1


def test_split_counts_of_small_classes():
    assert split_counts(10) == [8, 1, 1]
    assert split_counts(11) == [9, 1, 1]  # 8.8 / 1.1 / 1.1: the leftover goes to train
    assert split_counts(15) == [12, 2, 1]  # 12 / 1.5 / 1.5: tie goes to validation


def _dataset(sizes):
    ids, labels = [], []
    for name, size in sizes.items():
        for i in range(size):
            ids.append(f"{name}-{i:04d}")
            labels.append(name)
    return ids, labels


SIZES = {"a": 10, "b": 11, "c": 19, "d": 37, "e": 101, "f": 250}


def test_every_class_is_split_within_one_of_80_10_10():
    ids, labels = _dataset(SIZES)
    frame = stratified_split(ids, labels, list(SIZES), seed=3)
    assert sorted(frame["id"]) == sorted(ids)
    table = frame.groupby(["label", "split"]).size()
    for name, size in SIZES.items():
        for split, fraction in (("train", 0.8), ("validation", 0.1), ("test", 0.1)):
            assert abs(table[(name, split)] - size * fraction) < 1, (name, split)


def test_rows_come_train_then_validation_then_test():
    ids, labels = _dataset(SIZES)
    frame = stratified_split(ids, labels, list(SIZES), seed=0)
    order = {"train": 0, "validation": 1, "test": 2}
    ranks = [order[s] for s in frame["split"]]
    assert ranks == sorted(ranks)
    # Within a split the classes are mixed, not grouped: shards read in order are shuffled.
    train_labels = list(frame.loc[frame["split"] == "train", "label"])
    assert train_labels != sorted(train_labels)


def test_same_seed_same_split_whatever_the_input_order():
    ids, labels = _dataset(SIZES)
    first = stratified_split(ids, labels, list(SIZES), seed=7)
    pairs = list(zip(ids, labels, strict=True))
    random.Random(1).shuffle(pairs)
    shuffled_ids, shuffled_labels = zip(*pairs, strict=True)
    second = stratified_split(list(shuffled_ids), list(shuffled_labels), list(SIZES), seed=7)
    assert first.equals(second)
    other_seed = stratified_split(ids, labels, list(SIZES), seed=8)
    assignment = first.set_index("id")["split"].sort_index()
    assert not assignment.equals(other_seed.set_index("id")["split"].sort_index())


def test_too_small_class_fails_naming_it_and_its_count():
    ids, labels = _dataset({"common": 40, "rare": 7})
    with pytest.raises(MedtransferError) as error:
        stratified_split(ids, labels, ["common", "rare"], seed=0)
    message = str(error.value)
    assert "'rare' has 7" in message
    assert "at least 10" in message
    assert "common" not in message


def test_class_without_images_fails_too():
    ids, labels = _dataset({"a": 20})
    with pytest.raises(MedtransferError, match="'b' has 0"):
        stratified_split(ids, labels, ["a", "b"], seed=0)
