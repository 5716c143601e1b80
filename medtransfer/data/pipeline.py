"""The tf.data input pipeline from a prepared split's shards to batches a model eats.

``make_dataset`` reads the shards of BMP or PNG images (:mod:`medtransfer.data.shards`),
decodes and resizes in parallel, caches the decoded split in memory when it fits,
and, for training, shuffles, augments and one-hot encodes:

    shards -> parse -> keep ids -> decode + resize (uint8) -> cache? -> shuffle(epoch)
           -> batch -> augment(epoch) to [0, 1] floats -> preprocess -> prefetch

Decisions, measured in ``benchmarks/pipeline_throughput.py`` (2 shared CPU cores,
128 px: caching 1.5-2x faster for training and 3.5-4.6x for evaluation; a uint8 cache
no slower than float32), and against Keras' own pipeline by ``python -m benchmarks``:

- The cache holds uint8 images after resizing: a quarter of the memory of float32
  (the cancer split at 224 px is 33 GB instead of 132 GB), for one cast per image per
  epoch. Resized pixels are rounded to uint8 whether or not the split is cached, and
  a split of up to ``UNCACHED_SHUFFLE_BUFFER`` images is shuffled the same way in both
  cases, so the cache limit does not change the numbers a run sees.
- Augmentation runs on batches of the cached uint8 pixels
  (:func:`medtransfer.data.augment.augment_batch`), several batches in parallel, each
  image with its own seed. Once the split is cached it is what limits the stream, so
  it is one compiled pass over each image's pixels.

Determinism: the shuffle order and every augmentation draw of epoch k are pure functions
of ``seed`` and k (stateless random ops seeded with both), not of how many epochs this
process has iterated: a run resumed at epoch k sees exactly the batches an uninterrupted
run sees there. A training dataset is a range of epochs (``first_epoch``, ``epochs``).

Every function the pipelines map is traced as written, without AutoGraph
(:func:`without_autograph`).

``select_train_subset`` is the ``--train-size`` option: a stratified, seeded subset of
the train split for data-size experiments.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from medtransfer.data import shards
from medtransfer.data.augment import AugmentConfig, augment_batch
from medtransfer.errors import MedtransferError

DEFAULT_CACHE_LIMIT_BYTES = 4 * 1024**3
# Shuffling the still-encoded records when the split is not cached: a few thousand images
# cost at most their raw size, where as many decoded 299x299 images would cost a gigabyte.
UNCACHED_SHUFFLE_BUFFER = 4096
# Enough shards read at once to keep the decoders busy; a fixed number (not AUTOTUNE)
# so that the evaluation order is the same on every machine.
_PARALLEL_SHARDS = 4
_CACHED_DTYPE = tf.uint8
#: What :func:`resize_image` does, in words (for descriptions such as export's model.json).
RESIZE_RULE = "area interpolation when shrinking, bilinear when enlarging, rounded to uint8"


def without_autograph(fn: Callable) -> Callable:
    """``fn``, for ``Dataset.map``, ``filter`` or ``reduce``, traced as written.

    tf.data passes a Python function through AutoGraph, which rewrites its source and that
    of every function it calls, turning a Python ``if`` or ``for`` on a tensor into graph
    ops. medtransfer's dataset functions branch only on Python values or with
    ``tf.cond``, so the rewrite changes no op. It only costs every new process about
    half a CPU-second, and a sweep starts a process per run: a tiny digits run, process
    start to exit, took 7.35 CPU-seconds against 7.96 (five runs each, identical
    numbers). A Python ``if`` on a tensor in such a function fails when the dataset is
    built, not silently.
    """
    return tf.autograph.experimental.do_not_convert(fn)


def select_train_subset(frame: pd.DataFrame, train_size: int, seed: int, *,
                        stratified: bool = True) -> pd.DataFrame:
    """Takes a stratified, seeded subset of ``train_size`` rows (``--train-size``).

    ``stratified=False`` (a multi-label dataset, where a set of findings is not a class)
    draws ``train_size`` rows uniformly, seeded, without replacement.

    Each class gets its share of ``train_size`` in proportion to its count, rounded by
    largest remainder (ties go to the class listed first in sorted order), and at least
    one image. Within a class, rows are drawn without replacement by a generator seeded
    with ``seed``.

    Args:
        frame: the train split, one row per image, with a ``label`` column.
        train_size: how many rows to keep.
        seed: the same seed and frame give the same subset.

    Returns:
        The chosen rows in their original order, with a fresh 0..n-1 index.

    Raises:
        MedtransferError: ``train_size`` is below the number of classes (a class would
            be missing) or above the number of rows.
    """
    if not stratified:
        if not 1 <= train_size <= len(frame):
            raise MedtransferError(
                f"--train-size {train_size} is out of range: the train split has "
                f"{len(frame)} images, so --train-size must be between 1 and {len(frame)}. "
                "Choose a value in that range, or leave --train-size out to train on the "
                "whole split.")
        chosen = np.random.default_rng(seed).choice(len(frame), size=train_size, replace=False)
        return frame[np.isin(np.arange(len(frame)), chosen)].reset_index(drop=True)
    counts = frame["label"].value_counts().sort_index()
    if not len(counts) <= train_size <= len(frame):
        raise MedtransferError(
            f"--train-size {train_size} is out of range: the train split has {len(frame)} "
            f"images in {len(counts)} classes, so --train-size must be between "
            f"{len(counts)} (one image per class) and {len(frame)}. Choose a value in that "
            "range, or leave --train-size out to train on the whole split."
        )
    exact = counts.to_numpy() * train_size / len(frame)
    quota = np.floor(exact).astype(int)
    by_remainder = np.argsort(-(exact - quota), kind="stable")
    quota[by_remainder[: train_size - quota.sum()]] += 1
    # Classes rounded down to nothing borrow one image from the currently largest quota;
    # train_size >= number of classes guarantees that quota is at least 2.
    for empty in np.flatnonzero(quota == 0):
        quota[np.argmax(quota)] -= 1
        quota[empty] = 1

    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(frame.index[frame["label"] == label].to_numpy(), size=n, replace=False)
        for label, n in zip(counts.index, quota, strict=True)
    ]
    keep = frame.index.isin(np.concatenate(chosen))
    return frame[keep].reset_index(drop=True)


def cached_bytes(num_examples: int, image_size: int) -> int:
    """Memory the in-memory cache needs for ``num_examples`` resized uint8 RGB images."""
    return num_examples * image_size * image_size * 3 * _CACHED_DTYPE.size


def fits_in_cache(num_examples: int, image_size: int, cache_limit_bytes: int) -> bool:
    """Whether a split of ``num_examples`` images at ``image_size`` is cached in memory."""
    return cached_bytes(num_examples, image_size) <= cache_limit_bytes


def count_examples(shard_paths: Sequence[str | Path]) -> int:
    """Counts the records in ``shard_paths`` by reading them once (no decoding)."""
    dataset = tf.data.TFRecordDataset([str(path) for path in shard_paths])
    return int(dataset.reduce(np.int64(0), without_autograph(lambda count, _: count + 1)))


def make_dataset(
    shard_paths: Sequence[str | Path],
    num_classes: int,
    *,
    image_size: int,
    batch_size: int,
    training: bool,
    augment: AugmentConfig | None = None,
    preprocess: Callable[[tf.Tensor], tf.Tensor] | None = None,
    seed: int = 0,
    cache_limit_bytes: int = DEFAULT_CACHE_LIMIT_BYTES,
    keep_ids: Collection[str] | None = None,
    keep_labels: Sequence[int] | None = None,
    label_length: int | None = None,
    any_finding: bool = False,
    include_ids: bool = False,
    num_examples: int | None = None,
    first_epoch: int = 0,
    epochs: int = 1,
) -> tf.data.Dataset:
    """Builds the batched input stream of one split.

    Args:
        shard_paths: the split's TFRecord shards.
        num_classes: the length of the one-hot labels.
        image_size: images are resized to ``(image_size, image_size)``: area
            interpolation when shrinking, bilinear when enlarging (see :func:`resize_image`).
        batch_size: images per batch; the last batch of each epoch may be smaller.
        training: shuffle and apply ``augment``, differently in every epoch. Otherwise
            the order is fixed (the shards' records, interleaved), the same on every
            iteration, and ``augment``, ``first_epoch`` and ``epochs`` are ignored.
        augment: the augmentations to apply when training; ``None`` for none.
        preprocess: a net's own ``preprocess_input`` (``--scaling native``). It receives
            [0, 255] floats, after augmentation. ``None`` keeps pixels in [0, 1].
        seed: with the epoch, decides the shuffle order and the augmentation draws.
        cache_limit_bytes: cache the decoded, resized split in memory when it needs at
            most this many bytes (see :func:`cached_bytes`).
        keep_ids: if given, only examples whose id is in it (``--train-size``).
        keep_labels: if given, only examples whose label index is in it, relabelled to
            their position in it (``--classes``); ``num_classes`` is then its length.
            With ``label_length``, the findings (columns of the label list) to keep, in
            this order; every example is kept.
        label_length: a multi-label dataset's shards: each label is a list of this many
            findings, 1 present, 0 absent, -1 unknown. The targets are then those values
            as float32 (-1 kept, for the loss to mask), one per kept finding.
        any_finding: with ``label_length``: the target is one-hot healthy (0) vs finding
            (1, any kept finding present); leave images of unknown class out with
            ``keep_ids``.
        include_ids: add each example's id (a string tensor) as a third element, for
            writing predictions. Keras would read a third element as sample weights, so
            leave it off for ``fit``.
        num_examples: how many examples the stream holds after ``keep_ids``, exactly;
            when ``None`` it is ``len(keep_ids)`` (every id must be in the shards) or
            counted by reading the shards once. It decides caching and the shuffle
            buffer, and tells Keras the number of steps; a pass that finds a different
            number fails with ``tf.errors.FailedPreconditionError``.
        first_epoch: training only: the (0-based) epoch the stream starts with. Epoch k
            is a pure function of ``seed`` and k, so a resumed run that starts at epoch
            k sees what an uninterrupted run sees there.
        epochs: training only: how many consecutive epochs one pass of the dataset
            yields, each ``ceil(num_examples / batch_size)`` batches (give Keras that
            as ``steps_per_epoch``). Iterating the dataset again replays the same epochs.

    Returns:
        A dataset of ``(images, targets)`` or ``(images, targets, ids)`` batches;
        images are ``(batch, image_size, image_size, 3)`` float32 in [0, 1] (or as
        ``preprocess`` leaves them), targets are ``(batch, num_classes)`` float32: one-hot,
        or a multi-label dataset's findings.
    """
    if not shard_paths:
        raise ValueError("make_dataset needs at least one shard path")
    if num_examples is None:
        num_examples = len(keep_ids) if keep_ids is not None else count_examples(shard_paths)
    records = _SplitRecords(shard_paths, num_classes, image_size, num_examples,
                            cached=fits_in_cache(num_examples, image_size, cache_limit_bytes),
                            keep_ids=keep_ids, keep_labels=keep_labels, shuffled=training,
                            label_length=label_length, any_finding=any_finding)
    if training:
        steps = math.ceil(num_examples / batch_size)
        batches = functools.reduce(
            tf.data.Dataset.concatenate,
            [_training_epoch(records, seed, epoch, batch_size, augment)
             for epoch in range(first_epoch, first_epoch + epochs)],
        )
        batches = batches.apply(tf.data.experimental.assert_cardinality(epochs * steps))
    else:
        batches = records.in_fixed_order().map(records.to_model_input,
                                               num_parallel_calls=tf.data.AUTOTUNE) \
            .batch(batch_size, drop_remainder=False)

    @without_autograph
    def finish(images, one_hot, ids):
        images = apply_scaling(images, preprocess)
        return (images, one_hot, ids) if include_ids else (images, one_hot)

    return batches.map(finish, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


class _SplitRecords:
    """One split's examples: read from the shards, filtered, decoded and resized to uint8.

    Cached in memory when the split fits (``cached``), built once here, outside the
    per-epoch streams, so that every epoch reads the same cache.
    """

    def __init__(self, shard_paths: Sequence[str | Path], num_classes: int, image_size: int,
                 num_examples: int, *, cached: bool, keep_ids: Collection[str] | None,
                 keep_labels: Sequence[int] | None, shuffled: bool,
                 label_length: int | None = None, any_finding: bool = False):
        self.shard_paths, self.num_classes, self.image_size = shard_paths, num_classes, image_size
        self.num_examples, self.cached, self.keep_labels = num_examples, cached, keep_labels
        self.label_length, self.any_finding = label_length, any_finding
        self.one_hot = label_length is None or any_finding
        # The whole split when cached; otherwise a few thousand still-encoded records.
        # Small splits get the same buffer either way, so caching never changes their order.
        self.shuffle_buffer = max(
            num_examples if cached else min(num_examples, UNCACHED_SHUFFLE_BUFFER), 1)
        # Only a split larger than the buffer needs its shard order shuffled too; the
        # cache would replay the first epoch's shard order anyway.
        self.shuffle_files = shuffled and num_examples > self.shuffle_buffer
        self._parse = _parse_checked(num_classes)
        self._id_filter = _id_filter(keep_ids) if keep_ids is not None else None
        self._decoded = self._read(None).map(self._decode, num_parallel_calls=tf.data.AUTOTUNE) \
            .cache() if cached else None

    def _read(self, files_order_seed: int | None) -> tf.data.Dataset:
        files = tf.data.Dataset.from_tensor_slices([str(path) for path in self.shard_paths])
        if files_order_seed is not None:
            files = files.shuffle(len(self.shard_paths), seed=files_order_seed,
                                  reshuffle_each_iteration=False)
        records = files.interleave(
            tf.data.TFRecordDataset,
            cycle_length=min(len(self.shard_paths), _PARALLEL_SHARDS),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        if self.label_length is not None:
            records = records.map(
                _parse_findings(self.label_length, self.keep_labels, self.any_finding),
                num_parallel_calls=tf.data.AUTOTUNE)
        elif self.keep_labels is None:
            records = records.map(self._parse, num_parallel_calls=tf.data.AUTOTUNE)
        else:
            records = records.map(without_autograph(shards.parse_example),
                                  num_parallel_calls=tf.data.AUTOTUNE)
            records = records.filter(_label_filter(self.keep_labels)) \
                .map(_relabel(self.keep_labels))
        if self._id_filter is not None:
            records = records.filter(self._id_filter)
        # A known length gives Keras its steps per epoch (progress bar, no "ran out of
        # data" warning), and a split.csv that disagrees with the shards fails instead
        # of training on the wrong images.
        return records.apply(tf.data.experimental.assert_cardinality(self.num_examples))

    @without_autograph
    def _decode(self, example):
        return _decode_resized(example["image"], self.image_size), example["label"], example["id"]

    def targets(self, labels):
        """What the model is fitted to: one-hot classes, or the findings as float32."""
        return tf.one_hot(labels, self.num_classes) if self.one_hot else tf.cast(labels, tf.float32)

    @without_autograph
    def to_model_input(self, image, label, image_id):
        return to_unit_range(image), self.targets(label), image_id

    def in_fixed_order(self) -> tf.data.Dataset:
        """``(uint8 image, label, id)`` in the shards' interleaved order, every time."""
        return self._decoded if self.cached else self._read(None).map(
            self._decode, num_parallel_calls=tf.data.AUTOTUNE)

    def shuffled(self, shuffle_seed: int, files_seed: int) -> tf.data.Dataset:
        """``(uint8 image, label, id)`` in the order the two seeds give."""
        if self.cached:
            return self._decoded.shuffle(self.shuffle_buffer, seed=shuffle_seed,
                                         reshuffle_each_iteration=False)
        records = self._read(files_seed if self.shuffle_files else None)
        return records.shuffle(self.shuffle_buffer, seed=shuffle_seed,
                               reshuffle_each_iteration=False).map(
            self._decode, num_parallel_calls=tf.data.AUTOTUNE)


def _training_epoch(records: _SplitRecords, seed: int, epoch: int, batch_size: int,
                    augment: AugmentConfig | None) -> tf.data.Dataset:
    """The batches of training epoch ``epoch``: seeded by ``(seed, epoch)`` alone.

    Plain integer seeds, built in Python per epoch: tf.data's shuffle mishandles a
    tensor seed when TensorFlow's global seed is 0.
    """
    shuffle_seed, files_seed, augment_seed = (
        int(part) for part in np.random.SeedSequence([seed, epoch]).generate_state(3)
    )
    examples = records.shuffled(shuffle_seed, files_seed)
    if augment is None:
        return examples.map(records.to_model_input, num_parallel_calls=tf.data.AUTOTUNE) \
            .batch(batch_size, drop_remainder=False)
    # One seed per image, (epoch's seed, position in the epoch): flips, colour and noise
    # differ between images and between epochs. The cached uint8 pixels are batched as
    # they are and augmented a batch at a time (see augment_batch why).
    @without_autograph
    def augmented(positions, example):
        images, labels, ids = example
        image_seeds = tf.stack(
            [tf.fill(tf.shape(positions), tf.constant(augment_seed, tf.int64)), positions],
            axis=1)
        return augment_batch(images, image_seeds, augment), records.targets(labels), ids

    return examples.enumerate().batch(batch_size, drop_remainder=False) \
        .map(augmented, num_parallel_calls=tf.data.AUTOTUNE)


def _parse_checked(num_classes: int) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    @without_autograph
    def parse(serialized):
        example = shards.parse_example(serialized)
        # tf.one_hot turns an out-of-range label into a row of zeros without a word.
        check = tf.debugging.assert_less(
            example["label"],
            tf.constant(num_classes, tf.int64),
            message=f"a label in the shards is >= num_classes ({num_classes})",
        )
        with tf.control_dependencies([check]):
            example["label"] = tf.identity(example["label"])
        return example

    return parse


def _parse_findings(label_length: int, keep: Sequence[int] | None,
                    any_finding: bool) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """Parses a multi-label record: the kept findings' labels (1, 0, -1), or under
    ``any_finding`` 1 when any of them is present, else 0."""
    columns = tf.constant(list(keep if keep is not None else range(label_length)), tf.int64)

    @without_autograph
    def parse(serialized):
        example = shards.parse_example(serialized, label_length)
        labels = tf.gather(example["label"], columns)
        if any_finding:
            labels = tf.cast(tf.reduce_any(tf.equal(labels, 1)), tf.int64)
        return {**example, "label": labels}

    return parse


def _id_filter(keep_ids: Collection[str]) -> Callable[[dict[str, tf.Tensor]], tf.Tensor]:
    if len(keep_ids) == 0:
        raise ValueError("keep_ids is empty: the dataset would have no examples")
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(keep_ids), tf.string), tf.ones(len(keep_ids), tf.int32)
        ),
        default_value=0,
    )
    return without_autograph(lambda example: table.lookup(example["id"]) == 1)


def _label_filter(keep_labels: Sequence[int]) -> Callable[[dict[str, tf.Tensor]], tf.Tensor]:
    kept = tf.constant(list(keep_labels), tf.int64)
    return without_autograph(lambda example: tf.reduce_any(tf.equal(example["label"], kept)))


def _relabel(keep_labels: Sequence[int]) -> Callable[[dict[str, tf.Tensor]], dict]:
    """Maps a kept label index to its position in ``keep_labels`` (the model's class)."""
    kept = tf.constant(list(keep_labels), tf.int64)

    @without_autograph
    def relabel(example):
        position = tf.argmax(tf.cast(tf.equal(example["label"], kept), tf.int64))
        return {**example, "label": position}

    return relabel


def _decode_resized(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
    return resize_image(shards.decode_image(encoded), image_size)


# The three steps from stored pixels to a model's input. They are written with keras.ops
# so that one definition serves the tf.data pipeline (on tensors) and the exported model
# (on Keras symbolic tensors, see medtransfer.serve.export): what a served model does to
# an image is then the training pipeline's own code, not a copy of it.


def resize_image(image, image_size: int):
    """Resizes uint8 RGB pixels to ``(image_size, image_size)``, rounded back to uint8.

    Shrinking averages each output pixel's area of the input (area interpolation, as
    ``prepare``'s INTER_AREA): plain bilinear would sample a few of a 512 px image's
    pixels for 224 px and alias fine texture into false patterns. It is also twice as
    fast as bilinear with ``antialias=True`` (measured in tf.data, 500x375 -> 224). An
    image that no side of exceeds ``image_size`` is enlarged by plain bilinear
    interpolation. The choice is made per image (per batch) inside the graph, with ops a
    Keras model records, so that an exported model whose input size is unknown decides
    as the pipeline does.

    Args:
        image: ``(H, W, 3)`` or ``(batch, H, W, 3)`` uint8, a tensor or a Keras tensor.
        image_size: the side of the square output.

    Returns:
        The resized pixels, uint8, rounded half to even as ``tf.round`` does.
    """
    pixels = keras.ops.cast(image, "float32")

    def resize(interpolation):
        return keras.ops.image.resize(pixels, (image_size, image_size),
                                      interpolation=interpolation, data_format="channels_last")

    shrinking = _longest_side(pixels) > image_size
    if keras.backend.is_keras_tensor(pixels):
        # A model being built (export): keras.ops.cond cannot record branches that close
        # over its tensors, so both resizes are recorded and the flag picks one; both
        # terms are exact (x * 0 + y == y), so each case is exactly one of the two.
        shrinking = keras.ops.cast(shrinking, "float32")
        resized = resize("area") * shrinking + resize("bilinear") * (1.0 - shrinking)
    else:
        # tf.data and eager: only the resize taken runs, which spares the pipeline's
        # first epoch a bilinear resize of every image it shrinks.
        resized = tf.cond(shrinking, lambda: resize("area"), lambda: resize("bilinear"))
    return keras.ops.cast(keras.ops.clip(keras.ops.round(resized), 0, 255), _CACHED_DTYPE.name)


def _longest_side(pixels):
    """The longer of height and width of ``(..., H, W, C)``, as a tensor: computed with
    recorded ops (not ``shape``), since an exported model's input size is unknown."""
    corner = (0,) * (len(pixels.shape) - 3)
    height = keras.ops.sum(keras.ops.ones_like(pixels[(*corner, slice(None), 0, 0)]))
    width = keras.ops.sum(keras.ops.ones_like(pixels[(*corner, 0, slice(None), 0)]))
    return keras.ops.maximum(height, width)


def to_unit_range(image):
    """uint8 pixels -> float32 in [0, 1]."""
    return keras.ops.cast(image, "float32") / 255.0


def apply_scaling(images, preprocess: Callable | None):
    """[0, 1] pixels -> the model's input: unchanged for ``--scaling unit``, or the net's
    ``preprocess_input`` on [0, 255] for ``--scaling native``."""
    return images if preprocess is None else preprocess(images * 255.0)
