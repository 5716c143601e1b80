"""Throughput of the input pipeline, and the three choices behind it.

Run: ``.venv/bin/python -m benchmarks.pipeline_throughput`` (under a minute on 2 cores).
It is not part of ``make benchmark``, which compares medtransfer with other ways.

On 1,000 synthetic 96x96 images resized to 128x128 in batches of 64, it measures
images per second (best of two epochs after a warm-up epoch, the two sides of each
comparison taking turns: :func:`benchmarks.timing.best_rates`) and prints ratios
measured in this one run:

1. ``make_dataset`` with the split cached in memory vs decoded every epoch, for
   training (default augmentation) and for evaluation (no augmentation);
2. ``augment_batch`` (one compiled pass over each image: flips, the colour ops as one
   3x3 matrix, noise from a quantile table) vs the same augmentation with
   ``tf.image``'s ops per image (``augment_image_tf_image`` below, the alternative that
   lost);
3. the cache holding uint8 images (cast to float after) vs float32 images.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.timing import best_rates, dataset_rate  # noqa: E402
from medtransfer.data import pipeline, shards  # noqa: E402
from medtransfer.data.augment import AugmentConfig, augment_batch  # noqa: E402
from medtransfer.data.images import encode_image  # noqa: E402

NUM_IMAGES = 1000
SOURCE_SIZE = 96
IMAGE_SIZE = 128
BATCH_SIZE = 64
TIMED_EPOCHS = 2


def write_synthetic_shards(out_dir: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    # Blocky images compress like real ones; pure noise would make PNG decoding the
    # whole story.
    blocks = rng.integers(0, 256, size=(NUM_IMAGES, 12, 12, 3), dtype=np.uint8)
    upscale = np.ones((SOURCE_SIZE // 12, SOURCE_SIZE // 12, 1), np.uint8)
    records = (
        (f"img{i:05d}", i % 2, encode_image(np.kron(blocks[i], upscale), "bmp"))
        for i in range(NUM_IMAGES)
    )
    names = shards.write_split_shards(out_dir, "train", records, shard_bytes=4 * 1024 * 1024)
    return [out_dir / name for name in names]


def images_per_second(first: tf.data.Dataset, second: tf.data.Dataset) -> tuple[float, float]:
    """Images/s of two datasets: one warm-up epoch each, then ``TIMED_EPOCHS`` epochs
    taking turns, each side's best (see :func:`benchmarks.timing.best_rates`)."""
    rates = best_rates({"first": dataset_rate(first), "second": dataset_rate(second)},
                       TIMED_EPOCHS, warmup=1)
    return rates["first"], rates["second"]


def augment_image_tf_image(image: tf.Tensor, seed: tf.Tensor, config: AugmentConfig):
    """The same augmentation with ``tf.image``'s own ops (the alternative that lost).

    Two flips, brightness, saturation and hue each through HSV, contrast, and
    ``stateless_normal`` noise: what medtransfer's augmentation did before it folded the
    colour ops into one matrix, drew noise from a quantile table and became one compiled
    pass over the pixels.
    """
    flip_lr, flip_ud, brightness, saturation, hue, contrast, noise = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=7)
    )
    image = tf.image.stateless_random_flip_left_right(image, flip_lr)
    image = tf.image.stateless_random_flip_up_down(image, flip_ud)
    image = tf.image.stateless_random_brightness(image, config.brightness_delta, brightness)
    image = tf.clip_by_value(image, 0.0, 1.0)
    image = tf.image.stateless_random_saturation(image, *config.saturation_range, saturation)
    image = tf.image.stateless_random_hue(image, config.hue_delta, hue)
    image = tf.image.stateless_random_contrast(image, *config.contrast_range, contrast)
    image = image + config.noise_std * tf.random.stateless_normal(tf.shape(image), noise)
    return tf.clip_by_value(image, 0.0, 1.0)


def decoded_stream(paths: list[Path], cache_dtype: tf.DType) -> tf.data.Dataset:
    """Decoded, resized, cached images as [0, 1] floats; the cache holds ``cache_dtype``."""

    def decode(serialized):
        example = shards.parse_example(serialized)
        image = shards.decode_image(example["image"])
        image = tf.image.resize(image, (IMAGE_SIZE, IMAGE_SIZE))
        image = tf.saturate_cast(tf.round(image), tf.uint8)
        if cache_dtype == tf.float32:
            image = tf.cast(image, tf.float32) / 255.0
        return image

    def to_float(image):
        return tf.cast(image, tf.float32) / 255.0 if image.dtype == tf.uint8 else image

    return (
        tf.data.TFRecordDataset([str(p) for p in paths])
        .map(decode, num_parallel_calls=tf.data.AUTOTUNE)
        .cache()
        .map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    )


def main() -> None:
    config = AugmentConfig()
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_synthetic_shards(Path(tmp))
        for training in (True, False):
            cached, uncached = (
                pipeline.make_dataset(
                    paths,
                    2,
                    image_size=IMAGE_SIZE,
                    batch_size=BATCH_SIZE,
                    training=training,
                    augment=config if training else None,
                    cache_limit_bytes=cache_limit,
                    num_examples=NUM_IMAGES,
                )
                for cache_limit in (pipeline.DEFAULT_CACHE_LIMIT_BYTES, 0)
            )
            rates[training] = images_per_second(cached, uncached)

        def seeds():
            return tf.data.Dataset.random(seed=1, rerandomize_each_iteration=True).batch(2)

        stream = decoded_stream(paths, tf.uint8)
        ours, tf_image = images_per_second(
            tf.data.Dataset.zip(stream, seeds()).batch(BATCH_SIZE).map(
                lambda images, seeds: (augment_batch(images, seeds, config),),
                tf.data.AUTOTUNE),
            tf.data.Dataset.zip(stream, seeds())
            .map(lambda image, seed: augment_image_tf_image(image, seed, config),
                 tf.data.AUTOTUNE)
            .batch(BATCH_SIZE)
            .map(lambda images: (images,)),
        )
        uint8_cache, float_cache = images_per_second(
            *(
                decoded_stream(paths, dtype).batch(BATCH_SIZE).map(lambda images: (images,))
                for dtype in (tf.uint8, tf.float32)
            )
        )

    print(
        f"{NUM_IMAGES} images {SOURCE_SIZE}px -> {IMAGE_SIZE}px, batch {BATCH_SIZE}, "
        f"{os.cpu_count()} CPUs; images/s, best of {TIMED_EPOCHS} epochs after a warm-up"
    )
    for training in (True, False):
        name = "training, augmented" if training else "evaluation"
        cached, uncached = rates[training]
        print(
            f"make_dataset {name:20s} cached {cached:7.0f}  not cached {uncached:7.0f}"
            f"  cached/not = {cached / uncached:.2f}"
        )
    print(
        f"augment_batch {ours:7.0f}  tf.image ops {tf_image:7.0f}"
        f"  augment_batch/tf.image = {ours / tf_image:.2f}"
    )
    print(
        f"cache uint8 {uint8_cache:7.0f}  float32 {float_cache:7.0f}"
        f"  uint8/float32 = {uint8_cache / float_cache:.2f} at 0.25x the memory"
    )


if __name__ == "__main__":
    main()
