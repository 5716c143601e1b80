"""Figure 2: medtransfer's training input pipeline against the Keras standard.

Both sides read the same photographs (500x375 JPEGs, class-per-folder; ``--quick``: 64x48),
resize them to 224 (quick: 32), augment and batch 32 for training:

- medtransfer: the images prepared once by ``medtransfer prepare folder`` (PNG shards),
  read by ``data.pipeline.make_dataset`` (decode, resize, cache, shuffle, augment with
  flips + brightness, saturation, hue, contrast + noise, batch, prefetch).
- Keras: ``keras.utils.image_dataset_from_directory`` + Keras augmentation layers
  (Rescaling, RandomFlip, RandomBrightness, RandomContrast, GaussianNoise) mapped on
  the dataset with ``num_parallel_calls=AUTOTUNE``, then ``.prefetch(AUTOTUNE)``: the
  keras.io example "Image classification from scratch" (option 2, augmentation in the
  tf.data pipeline). It does not cache, so every epoch decodes the JPEGs again; the row
  "Keras + .cache()" adds the cache of tensorflow.org's "Load and preprocess images"
  tutorial (``.cache()`` after decoding, before augmentation), for the record.

Two rows stream the same photos prepared as a multi-label dataset (a CSV with three 0/1
finding columns, some labels unknown: :func:`multi_label_photos`), per-finding targets
against the same Keras stream (issue #22: a multi-label run keeps the targets).
Two more rows add the affine warp on both sides: medtransfer's ``--affine`` against Keras'
RandomRotation, RandomTranslation, RandomZoom and RandomShear (:func:`keras_affine_layers`).

The first epoch builds the datasets and reads them once (no warm-up); medtransfer's
first epoch does not include ``prepare``, so ``prepare`` is timed too and a row adds it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from benchmarks.photos import PhotoDataset
from benchmarks.report import Figure, Target
from benchmarks.timing import best_rates, count_images, dataset_rate, rate_of
from medtransfer.data import pipeline
from medtransfer.data.augment import AugmentConfig

BATCH_SIZE = 32


@dataclass(frozen=True)
class Sizes:
    image_size: int
    repeats: int
    later_epochs: int


SIZES = {False: Sizes(image_size=224, repeats=3, later_epochs=4),
         True: Sizes(image_size=32, repeats=1, later_epochs=1)}


def medtransfer_dataset(photos: PhotoDataset, image_size: int,
                        augment: bool = True, affine: bool = False) -> tf.data.Dataset:
    """The training stream a run builds, over every prepared image (``--no-augment``
    when ``augment`` is False, ``--affine`` when ``affine``)."""
    return pipeline.make_dataset(
        photos.shard_paths(), len(_classes(photos)), image_size=image_size,
        batch_size=BATCH_SIZE, training=True,
        augment=AugmentConfig(affine=affine) if augment else None, num_examples=photos.count,
    )


FINDINGS = ("A", "B", "C")


def multi_label_photos(photos: PhotoDataset) -> list[Path]:
    """The photos prepared again as a multi-label dataset (``prepare csv --label-columns
    A,B,C``): finding A is the photo's first class, B its second, C every third photo,
    unknown (-1) every seventh. Returns its shards (every split)."""
    from medtransfer.data.prepare import prepare_dataset

    classes = _classes(photos)
    table = photos.data_dir / "multi_label.csv"
    files = sorted(path for path in photos.source.rglob("*.jpg"))
    with table.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", *FINDINGS])
        for index, path in enumerate(files):
            kind = classes.index(path.parent.name)
            writer.writerow([str(path), int(kind == 0), int(kind == 1),
                             -1 if index % 7 == 0 else int(index % 3 == 0)])
    out = photos.data_dir / "photos_multi_label"
    prepare_dataset("csv", table, out, progress=False,
                    layout_options={"label_columns": list(FINDINGS)})
    return sorted(out.glob("*.tfrecord"))


def medtransfer_multi_label_dataset(shards: list[Path], count: int,
                                    image_size: int) -> tf.data.Dataset:
    """A multi-label run's training stream: one float target per finding, -1 kept."""
    return pipeline.make_dataset(
        shards, len(FINDINGS), image_size=image_size, batch_size=BATCH_SIZE, training=True,
        augment=AugmentConfig(), num_examples=count, label_length=len(FINDINGS),
    )


def keras_affine_layers() -> list[keras.layers.Layer]:
    """``--affine``'s warp as Keras layers: rotation ±15°, shift ±10%, zoom ±10%, shear
    of up to tan(10°) of the side, black outside, bilinear; four warps, one per layer."""
    return [
        keras.layers.RandomRotation(15 / 360, fill_mode="constant"),
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant"),
        keras.layers.RandomZoom(0.1, fill_mode="constant"),
        keras.layers.RandomShear(x_factor=0.18, fill_mode="constant"),
    ]


def keras_dataset(photos: PhotoDataset, image_size: int, cache: bool = False,
                  augment: bool = True, affine: bool = False) -> tf.data.Dataset:
    """What a Keras user writes (see the module docstring); ``cache`` as tensorflow.org;
    without ``augment`` only the Rescaling layer is left; ``affine`` adds
    :func:`keras_affine_layers` first."""
    augmentation = keras.Sequential([keras.layers.Rescaling(1 / 255)] + ([
        *(keras_affine_layers() if affine else []),
        keras.layers.RandomFlip("horizontal_and_vertical"),
        keras.layers.RandomBrightness(0.1, value_range=(0, 1)),
        keras.layers.RandomContrast(0.2, value_range=(0, 1)),
        keras.layers.GaussianNoise(0.02),
    ] if augment else []))
    dataset = keras.utils.image_dataset_from_directory(
        photos.source, label_mode="categorical", image_size=(image_size, image_size),
        batch_size=BATCH_SIZE, shuffle=True, seed=0, verbose=False,
    )
    if cache:
        dataset = dataset.cache()
    return dataset.map(
        lambda images, labels: (augmentation(images, training=True), labels),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).prefetch(tf.data.AUTOTUNE)


def measure(photos: PhotoDataset, quick: bool) -> tuple[list[Figure], list[str]]:
    """Images/s of both pipelines, first epoch and later epochs."""
    sizes = SIZES[quick]
    multi_label = multi_label_photos(photos)
    builders = {
        "medtransfer_multi_label": lambda: medtransfer_multi_label_dataset(
            multi_label, photos.count, sizes.image_size),
        "medtransfer": lambda: medtransfer_dataset(photos, sizes.image_size),
        "keras": lambda: keras_dataset(photos, sizes.image_size),
        "keras_cache": lambda: keras_dataset(photos, sizes.image_size, cache=True),
        # Both sides without augmentation: the reading, decoding and caching alone.
        "medtransfer_plain": lambda: medtransfer_dataset(photos, sizes.image_size,
                                                         augment=False),
        "keras_plain": lambda: keras_dataset(photos, sizes.image_size, augment=False),
        # Both sides with the affine warp too (--affine; issue #23).
        "medtransfer_affine": lambda: medtransfer_dataset(photos, sizes.image_size,
                                                          affine=True),
        "keras_affine": lambda: keras_dataset(photos, sizes.image_size, affine=True),
    }
    # First epoch: a new dataset each time, built and read once (caches start empty).
    first = best_rates(
        {name: (lambda build=build: rate_of(lambda: count_images(build())))
         for name, build in builders.items()},
        sizes.repeats,
    )
    # Later epochs: one dataset per side, read once untimed (the first epoch), then
    # epochs taking turns.
    datasets = {name: build() for name, build in builders.items()}
    later = best_rates({name: dataset_rate(dataset) for name, dataset in datasets.items()},
                       sizes.later_epochs, warmup=1)
    with_prepare = photos.count / (photos.prepare_seconds + photos.count / first["medtransfer"])
    what = (f"{photos.count} JPEGs {photos.width}x{photos.height} -> {sizes.image_size}px, "
            f"batch {BATCH_SIZE}")
    figures = [
        Figure("pipeline_first_epoch", f"input pipeline, first epoch ({what})",
               first["medtransfer"], first["keras"], "images/s", Target(at_least=1.5)),
        Figure("pipeline_later_epochs", f"input pipeline, later epochs ({what})",
               later["medtransfer"], later["keras"], "images/s", Target(at_least=10)),
        Figure("pipeline_first_epoch_multi_label",
               f"input pipeline, first epoch, multi-label targets ({len(FINDINGS)} findings)",
               first["medtransfer_multi_label"], first["keras"], "images/s",
               Target(at_least=1.5)),
        Figure("pipeline_later_epochs_multi_label",
               f"input pipeline, later epochs, multi-label targets ({len(FINDINGS)} findings)",
               later["medtransfer_multi_label"], later["keras"], "images/s",
               Target(at_least=10)),
        Figure("pipeline_first_epoch_with_prepare",
               "input pipeline, prepare + first epoch vs Keras first epoch",
               with_prepare, first["keras"], "images/s"),
        Figure("pipeline_later_epochs_vs_keras_cache",
               "input pipeline, later epochs vs Keras + .cache()",
               later["medtransfer"], later["keras_cache"], "images/s"),
        Figure("pipeline_first_epoch_no_augmentation",
               "input pipeline, first epoch, neither side augmenting",
               first["medtransfer_plain"], first["keras_plain"], "images/s"),
        Figure("pipeline_later_epochs_no_augmentation",
               "input pipeline, later epochs, neither side augmenting",
               later["medtransfer_plain"], later["keras_plain"], "images/s"),
        Figure("pipeline_first_epoch_affine",
               "input pipeline, first epoch, both sides with the affine warp",
               first["medtransfer_affine"], first["keras_affine"], "images/s",
               Target(at_least=1.5)),
        Figure("pipeline_later_epochs_affine",
               "input pipeline, later epochs, both sides with the affine warp",
               later["medtransfer_affine"], later["keras_affine"], "images/s",
               Target(at_least=10)),
    ]
    notes = [
        "Input pipeline: both sides iterate the training stream without a model. Keras side: "
        "`image_dataset_from_directory(label_mode='categorical', image_size="
        f"({sizes.image_size}, {sizes.image_size}), batch_size={BATCH_SIZE})` + "
        "`.map(augmentation(x, training=True), num_parallel_calls=AUTOTUNE)"
        ".prefetch(AUTOTUNE)` with Rescaling, RandomFlip, RandomBrightness(0.1), "
        "RandomContrast(0.2), GaussianNoise(0.02), as in the keras.io example 'Image "
        "classification from scratch' (no cache there). medtransfer also applies saturation "
        "and hue, which the Keras side does not: more work on medtransfer's side. 'Keras + "
        ".cache()' caches the decoded batches as tensorflow.org's 'Load and preprocess "
        "images' tutorial does. The rows 'neither side augmenting' drop the augmentation "
        "on both sides (medtransfer's --no-augment; Keras keeps only Rescaling): what "
        "reading, decoding, resizing and caching cost without it. The rows 'with the "
        "affine warp' add it on both sides: medtransfer's --affine (one compiled warp per "
        "image before the rest), Keras' RandomRotation(15/360), RandomTranslation(0.1, "
        "0.1), RandomZoom(0.1), RandomShear(x_factor=0.18), fill_mode='constant', before "
        "its other layers. "
        "First epoch: datasets built and read once, no warm-up, best "
        f"of {sizes.repeats}; later epochs: best of {sizes.later_epochs} after one untimed "
        "epoch.",
        f"medtransfer's first epoch excludes `prepare`, which took {photos.prepare_seconds:.1f} "
        f"s for these {photos.count} images ({photos.count / photos.prepare_seconds:.0f} "
        "images/s, every core) and is done once per dataset; the row 'prepare + first "
        "epoch' counts it.",
    ]
    return figures, notes


def _classes(photos: PhotoDataset) -> list[str]:
    return sorted(path.name for path in photos.source.iterdir() if path.is_dir())
