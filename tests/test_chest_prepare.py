"""Multi-label datasets: the bundled digits_pairs, CheXpert, ChestX-ray14, multi-label csv
and MedMNIST layouts, grouped splits, and the multi-label shard format."""

import numpy as np
import pytest
import tensorflow as tf

from medtransfer.data import shards
from medtransfer.data.prepared import load_prepared


def shard_labels(dataset, split):
    """(id, label vector) of every record of ``split``, read through the shard format."""
    records = tf.data.TFRecordDataset([str(p) for p in dataset.shard_paths(split)])
    parse = lambda r: shards.parse_example(r, dataset.num_classes)  # noqa: E731
    return [(e["id"].numpy().decode(), e["label"].numpy(), e["image"].numpy())
            for e in records.map(parse)]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return load_prepared("digits_pairs", tmp_path_factory.mktemp("data"))


def test_digits_pairs_is_multi_label_and_keeps_groups_in_one_split(pairs):
    assert pairs.task == "multi_label" and pairs.multi_label
    assert pairs.manifest["format_version"] == 3
    assert pairs.class_names == [str(d) for d in range(10)]
    assert len(pairs.split) == 1797
    assert list(pairs.split.columns) == ["id", "label", "split", "masked", "group"]
    # 599 groups of three pairs, each group in one split.
    assert pairs.split.groupby("group").size().eq(3).all()
    assert pairs.split.groupby("group")["split"].nunique().eq(1).all()
    images = pairs.manifest["images"]
    assert sum(images.values()) == 1797
    # 8:1:1 of 599 groups: 479 / 60 / 60 groups, within a few groups.
    assert abs(images["train"] / 3 - 479) <= 3 and abs(images["test"] / 3 - 60) <= 3
    # Every digit has positives in every split, so there is nothing to warn about.
    assert pairs.manifest["split_warnings"] == []
    assert all(n > 0 for counts in pairs.manifest["counts"].values() for n in counts.values())


def test_digits_pairs_shards_hold_the_label_matrix_and_the_two_digits(pairs):
    from sklearn.datasets import load_digits

    digits = load_digits()
    source = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    frame = pairs.split_frame("test")
    matrix = pairs.label_matrix(frame)
    stored = shard_labels(pairs, "test")
    assert [image_id for image_id, _, _ in stored] == frame["id"].tolist()
    np.testing.assert_array_equal(np.stack([label for _, label, _ in stored]), matrix)
    assert set(matrix.sum(axis=1)) <= {1, 2}
    for _, label, encoded in stored[:5]:
        pixels = shards.decode_image(encoded).numpy()[..., 0]
        assert pixels.shape == (16, 16) and not pixels[:4].any() and not pixels[12:].any()
        shown = set()
        for half in (pixels[4:12, :8], pixels[4:12, 8:]):
            match = np.flatnonzero((source == half).all(axis=(1, 2)))
            assert len(match) >= 1
            shown.add(int(digits.target[match[0]]))
        assert {int(i) for i in np.flatnonzero(label)} == shown
