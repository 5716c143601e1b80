"""The tf.data input pipeline on a tiny split of 8x8 images, and --train-size subsets."""

import shutil

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from medtransfer.data import shards
from medtransfer.data.augment import AugmentConfig
from medtransfer.data.images import encode_image
from medtransfer.data.pipeline import (
    cached_bytes,
    count_examples,
    fits_in_cache,
    make_dataset,
    select_train_subset,
)
from medtransfer.errors import MedtransferError
from medtransfer.options import IMAGE_FORMATS

NUM_CLASSES = 3
PER_CLASS = 10
IDS = [f"img{i:02d}" for i in range(NUM_CLASSES * PER_CLASS)]


def class_image(label: int, index: int) -> np.ndarray:
    """An 8x8 gradient whose level says the class and whose corner says the index."""
    rows, cols = np.mgrid[0:8, 0:8]
    corner = np.full_like(rows, 7 * index)
    image = np.stack([80 * label + 4 * rows, 80 * label + 4 * cols, corner], axis=-1)
    return image.astype(np.uint8)


@pytest.fixture()
def split(tmp_path):
    """A 30-image train split in several shards: (shard paths, {id: (label, image)})."""
    labels = [i % NUM_CLASSES for i in range(len(IDS))]
    examples = {
        image_id: (label, class_image(label, i))
        for i, (image_id, label) in enumerate(zip(IDS, labels, strict=True))
    }
    # Both storage formats, alternating: the pipeline reads either, pixel for pixel.
    records = [(key, label, encode_image(image, IMAGE_FORMATS[i % 2]))
               for i, (key, (label, image)) in enumerate(examples.items())]
    # Tiny shards, so that several are read in parallel.
    names = shards.write_split_shards(tmp_path, "train", records, shard_bytes=1500)
    assert len(names) > 3
    return [tmp_path / name for name in names], examples


def collect(dataset):
    """All batches of one pass, concatenated: (images, one_hot, ids as str, batch sizes)."""
    images, one_hot, ids, sizes = [], [], [], []
    for batch in dataset:
        images.append(batch[0].numpy())
        one_hot.append(batch[1].numpy())
        sizes.append(len(batch[0]))
        if len(batch) == 3:
            ids.extend(image_id.decode() for image_id in batch[2].numpy())
    return np.concatenate(images), np.concatenate(one_hot), ids, sizes


def make(paths, **options):
    settings = dict(image_size=32, batch_size=8, training=False, include_ids=True)
    settings.update(options)
    return make_dataset(paths, NUM_CLASSES, **settings)


def test_evaluation_batches_resize_scale_and_one_hot(split):
    paths, examples = split
    images, one_hot, ids, sizes = collect(make(paths))
    assert sizes == [8, 8, 8, 6]
    assert images.dtype == np.float32 and images.shape == (30, 32, 32, 3)
    assert one_hot.dtype == np.float32 and one_hot.shape == (30, NUM_CLASSES)
    for image, label_row, image_id in zip(images, one_hot, ids, strict=True):
        label, source = examples[image_id]
        np.testing.assert_array_equal(label_row, np.eye(NUM_CLASSES)[label])
        # 8x8 upsampled to 32x32, bilinear, rounded to whole grey levels, then [0, 1].
        expected = np.round(tf.image.resize(source, (32, 32)).numpy()) / 255.0
        np.testing.assert_allclose(image, expected, atol=1e-6)
    assert 0.0 <= images.min() and images.max() <= 1.0


def test_evaluation_order_is_complete_and_the_same_every_iteration(split):
    paths, _ = split
    dataset = make(paths, augment=AugmentConfig())  # ignored when not training
    first, second = collect(dataset), collect(dataset)
    assert sorted(first[2]) == IDS
    assert first[2] == second[2]
    np.testing.assert_array_equal(first[0], second[0])


def test_training_reshuffles_every_epoch_and_sees_every_example_once(split):
    paths, _ = split
    images, _, ids, sizes = collect(make(paths, training=True, epochs=2))
    # Each epoch ends with its own short batch: 8, 8, 8, 6 twice.
    assert sizes == [8, 8, 8, 6] * 2
    epochs = [ids[:30], ids[30:]]
    assert sorted(epochs[0]) == sorted(epochs[1]) == IDS
    assert epochs[0] != epochs[1]
    assert epochs[0] != collect(make(paths))[2]


def test_an_epoch_is_the_same_whichever_epoch_the_stream_starts_at(split):
    """What resuming needs: epoch 2 alone equals epoch 2 of a stream started at epoch 0."""
    paths, _ = split
    options = dict(training=True, seed=3, augment=AugmentConfig())
    three = collect(make(paths, epochs=3, **options))
    alone = collect(make(paths, first_epoch=2, **options))
    assert alone[2] == three[2][60:]
    np.testing.assert_array_equal(alone[0], three[0][60:])
    # Iterating a dataset again replays its epochs rather than moving on.
    again = collect(make(paths, first_epoch=2, **options))
    np.testing.assert_array_equal(again[0], alone[0])


def test_augmentation_runs_on_training_only_and_keeps_unit_range(split):
    paths, _ = split
    plain = collect(make(paths, training=True, seed=5))
    augmented = collect(make(paths, training=True, seed=5, augment=AugmentConfig()))
    # Augmenting draws its own seeds: the shuffle order is the same with or without.
    assert augmented[2] == plain[2]
    assert np.abs(augmented[0] - plain[0]).mean() > 0.01
    assert 0.0 <= augmented[0].min() and augmented[0].max() <= 1.0
    np.testing.assert_array_equal(augmented[1], plain[1])


def test_same_seed_gives_the_same_batches_over_two_epochs(split):
    paths, _ = split

    def two_epochs(seed):
        return [collect(make(paths, training=True, seed=seed, augment=AugmentConfig(),
                             batch_size=7, first_epoch=epoch)) for epoch in range(2)]

    first, again, other = two_epochs(3), two_epochs(3), two_epochs(4)
    for epoch in range(2):
        np.testing.assert_array_equal(first[epoch][0], again[epoch][0])
        assert first[epoch][2] == again[epoch][2]
        assert first[epoch][2] != other[epoch][2]


def test_every_epoch_draws_new_augmentations(tmp_path):
    # Identical images: only the augmentation draws can tell two epochs apart.
    image = encode_image(class_image(1, 0), "bmp")
    records = [(f"same{i}", 0, image) for i in range(6)]
    paths = [tmp_path / name for name in shards.write_split_shards(tmp_path, "train", records)]
    first, second = (
        collect(make(paths, training=True, augment=AugmentConfig(), include_ids=False,
                     first_epoch=epoch))[0]
        for epoch in range(2)
    )
    assert np.abs(first - second).mean(axis=(1, 2, 3)).min() > 0.005


def test_keep_ids_keeps_exactly_those_examples(split):
    paths, _ = split
    keep = ["img03", "img04", "img11", "img20", "img29"]
    assert sorted(collect(make(paths, keep_ids=set(keep)))[2]) == keep
    assert sorted(collect(make(paths, keep_ids=keep, training=True))[2]) == keep
    with pytest.raises(ValueError, match="keep_ids is empty"):
        make(paths, keep_ids=[])


def test_every_dataset_function_is_traced_as_written(split, rewritten):
    paths, _ = split
    # Every map and filter a stream can have: parse and check, keep ids, keep and
    # relabel classes, decode, cache or not, augment, scale, ids.
    for options in ({"training": True, "augment": AugmentConfig(), "keep_ids": IDS[:20]},
                    {"keep_labels": [2, 0], "num_examples": 20, "cache_limit_bytes": 0},
                    {"preprocess": lambda images: images / 127.5 - 1.0}):
        assert collect(make(paths, **options))[0].size > 0
    assert rewritten == []


def test_cache_decision_from_the_estimated_bytes():
    assert cached_bytes(10, 32) == 10 * 32 * 32 * 3  # uint8
    assert fits_in_cache(10, 32, cache_limit_bytes=30720)
    assert not fits_in_cache(10, 32, cache_limit_bytes=30719)


@pytest.mark.parametrize("cache_limit_bytes, cached", [(30 * 32 * 32 * 3, True), (1000, False)])
def test_cache_serves_later_passes_from_memory(split, tmp_path, cache_limit_bytes, cached):
    paths, _ = split
    copies = tmp_path / "copies"
    copies.mkdir()
    paths = [shutil.copy(path, copies / path.name) for path in paths]
    dataset = make(paths, cache_limit_bytes=cache_limit_bytes, num_examples=30)
    first = collect(dataset)
    shutil.rmtree(copies)
    if cached:
        np.testing.assert_array_equal(collect(dataset)[0], first[0])
    else:
        with pytest.raises(tf.errors.NotFoundError):
            collect(dataset)


def test_every_training_epoch_reads_the_one_cache(split, tmp_path):
    paths, _ = split
    copies = tmp_path / "copies"
    copies.mkdir()
    paths = [shutil.copy(path, copies / path.name) for path in paths]
    dataset = make(paths, training=True, epochs=2, cache_limit_bytes=10**9, num_examples=30)
    first = collect(dataset)
    shutil.rmtree(copies)
    np.testing.assert_array_equal(collect(dataset)[0], first[0])


def test_caching_does_not_change_the_training_stream(split):
    paths, _ = split
    options = dict(training=True, seed=1, augment=AugmentConfig(), num_examples=30)
    for epoch in range(2):
        with_cache = collect(make(paths, cache_limit_bytes=10**9, first_epoch=epoch, **options))
        without = collect(make(paths, cache_limit_bytes=0, first_epoch=epoch, **options))
        assert with_cache[2] == without[2]
        np.testing.assert_array_equal(with_cache[0], without[0])


def test_number_of_batches_is_known_and_checked(split):
    paths, _ = split
    assert count_examples(paths) == 30
    counted = make(paths, training=True)  # num_examples counted from the shards
    assert counted.cardinality().numpy() == 4
    assert len(collect(counted)[0]) == 30
    assert make(paths, keep_ids=IDS[:9]).cardinality().numpy() == 2
    with pytest.raises(tf.errors.FailedPreconditionError, match="expected to contain 31"):
        collect(make(paths, num_examples=31))


def test_native_scaling_applies_the_nets_preprocess_to_0_255_pixels(split):
    from keras.applications import mobilenet

    paths, _ = split
    unit = collect(make(paths))[0]
    native = collect(make(paths, preprocess=mobilenet.preprocess_input))[0]
    assert -1.0 <= native.min() and native.max() <= 1.0
    np.testing.assert_allclose(native, 2.0 * unit - 1.0, atol=1e-5)


def test_without_ids_elements_are_pairs(split):
    paths, _ = split
    element = next(iter(make(paths, include_ids=False, training=True)))
    assert len(element) == 2


def test_a_label_beyond_num_classes_fails_loudly(split):
    paths, _ = split
    dataset = make_dataset(paths, 2, image_size=8, batch_size=8, training=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes"):
        collect(dataset)


def labels_frame(counts):
    labels = np.repeat(np.arange(len(counts)), counts)
    rows = [(f"id{i:04d}", label, "train") for i, label in enumerate(labels)]
    # Shuffled, so that the subset has to keep the frame's own order.
    return pd.DataFrame(rows, columns=["id", "label", "split"]).sample(frac=1, random_state=0)


@pytest.mark.parametrize(
    "counts, train_size, expected",
    [
        ([50, 30, 20], 10, [5, 3, 2]),
        ([50, 30, 20], 11, [6, 3, 2]),  # remainders .5 .3 .2: the largest gets the extra one
        ([97, 2, 1], 5, [3, 1, 1]),  # rare classes keep one image each
        ([5, 5], 10, [5, 5]),
    ],
)
def test_train_subset_is_stratified_by_largest_remainder(counts, train_size, expected):
    frame = labels_frame(counts)
    subset = select_train_subset(frame, train_size, seed=0)
    assert len(subset) == train_size
    assert subset["label"].value_counts().sort_index().tolist() == expected
    assert list(subset.index) == list(range(train_size))
    # Rows keep the frame's order.
    positions = [list(frame["id"]).index(image_id) for image_id in subset["id"]]
    assert positions == sorted(positions)


def test_train_subset_is_seeded():
    frame = labels_frame([50, 30, 20])
    first = select_train_subset(frame, 20, seed=7)
    assert first.equals(select_train_subset(frame, 20, seed=7))
    assert set(first["id"]) != set(select_train_subset(frame, 20, seed=8)["id"])


@pytest.mark.parametrize("train_size", [2, 101])
def test_train_subset_out_of_range_says_the_valid_range(train_size):
    frame = labels_frame([50, 30, 20])
    with pytest.raises(MedtransferError, match=r"100 images in 3 classes.*between 3 .* and 100"):
        select_train_subset(frame, train_size, seed=0)


def test_shrinking_averages_each_output_pixels_area(tmp_path):
    # A 1-px line on every third column, shrunk 64 -> 16: each output pixel is the mean
    # of its 4x4 block, which holds one or two of the lines (64 or 128 grey). Bilinear
    # without antialiasing samples a few columns instead and gives 0 / 127.5 bands.
    _, cols = np.mgrid[0:64, 0:64]
    lines = np.repeat(((cols % 3 == 0) * 255)[..., None], 3, axis=-1).astype(np.uint8)
    records = [("lines", 0, encode_image(lines, "bmp"))]
    paths = [tmp_path / name for name in shards.write_split_shards(tmp_path, "train", records)]
    image = collect(make(paths, image_size=16))[0][0] * 255.0
    block_means = lines.reshape(16, 4, 16, 4, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(image, np.round(block_means), atol=0.5)
    plain = tf.image.resize(lines, (16, 16), method="bilinear").numpy()
    assert np.abs(plain - block_means).max() > 40  # what the test guards against
