"""Figure 5: ``prepare`` on every core against one core, and what memory a dataset needs.

- Scaling: ``prepare_dataset`` (folder layout) on retina-like photographs (a bright disk
  on black, about 2000x1500 JPEG) with ``--workers`` left to every core against
  ``--workers 1``, taking turns.
- Memory: peak resident memory (the process and any it starts, together) of the
  ``medtransfer prepare`` command, and of ``medtransfer run`` with the cache on (the
  default) and off (``--cache-limit 0``), each a fresh process as a user runs it. A
  run's peak is mostly its model's activations, which swamp the cache of a small
  dataset, and a run without the cache shuffles still-encoded images in a buffer of its
  own (the difference between the two runs has come out negative), so the cache's
  cost per image is measured on the training stream alone: the whole train split
  against a quarter of it, both cached, each in a fresh process.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.photos import PhotoDataset, write_photos
from benchmarks.report import Figure, Target
from benchmarks.timing import (
    CommandUsage,
    best_rates,
    run_measured,
    single_core,
)
from medtransfer.data.pipeline import UNCACHED_SHUFFLE_BUFFER, cached_bytes
from medtransfer.data.prepare import prepare_dataset
from medtransfer.data.prepared import load_prepared
from medtransfer.machine import keep_freed_memory, usable_cores


@dataclass(frozen=True)
class Sizes:
    images: int
    width: int
    height: int
    repeats: int
    run_image_size: int
    run_train_size: int


SIZES = {
    # 300 images: about 5 s with every core, enough that what runs once per prepare
    # (starting the workers, scanning, the split) weighs as little as on a real dataset
    # (the retina set, APTOS 2019, has 3,662 images); at 100 it was a fifth of the job.
    False: Sizes(images=300, width=2000, height=1500, repeats=2, run_image_size=224,
                 run_train_size=320),
    # 64 tiny images: every step of both sides runs (threads included), in about a second.
    True: Sizes(images=64, width=80, height=60, repeats=1, run_image_size=32,
                run_train_size=16),
}
MIB = 1024**2
SPLITS = ("train", "validation", "test")


# Reads the first N images of a prepared dataset's train split for two epochs, cached:
# argv is the dataset's name, its data dir, the image size and N.
READ_STREAM = """
import sys
from pathlib import Path
from medtransfer.data.pipeline import make_dataset
from medtransfer.data.prepared import load_prepared
name, data_dir, size, count = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
dataset = load_prepared(name, data_dir)
ids = set(dataset.split_frame("train")["id"][:count])
for _ in make_dataset(dataset.shard_paths("train"), dataset.num_classes, image_size=size,
                      batch_size=32, training=True, keep_ids=ids, epochs=2):
    pass
"""
# The stream's share of the train split: all of it against a quarter.
STREAM_FRACTIONS = (1.0, 0.25)


@dataclass(frozen=True)
class MemoryUsage:
    """Peak memory of each command, each a fresh process as a user runs it."""

    prepare: CommandUsage
    cache_on: CommandUsage
    cache_off: CommandUsage
    # Images streamed -> its usage, in STREAM_FRACTIONS order (the most images first).
    streams: dict[int, CommandUsage]


def write_source(root: Path, quick: bool) -> Path:
    """Writes the retina-like JPEGs both halves of this figure read; returns their folder."""
    sizes = SIZES[quick]
    return write_photos(root / "retina_like", sizes.images, sizes.width, sizes.height,
                        fundus=True, seed=1)


def measure_memory(root: Path, photos: PhotoDataset, source: Path, quick: bool) -> MemoryUsage:
    """Peak memory of ``medtransfer prepare`` on ``source`` and of ``medtransfer run``
    with the cache on and off. Writes only under ``root / "memory"``, so that it may run
    beside the other figures (``--quick``)."""
    sizes = SIZES[quick]
    command = [sys.executable, "-m", "medtransfer"]
    prepare = run_measured([
        *command, "prepare", "folder", "--source", str(source),
        "--out", str(root / "memory" / "retina_like"), "--force", "--no-progress"])
    run = [*command, "run", "--dataset", photos.name, "--data-dir", str(photos.data_dir),
           "--logdir", str(root / "memory" / "runs"), "--net", "small_cnn",
           "--image-size", str(sizes.run_image_size), "--train-size", str(sizes.run_train_size),
           "--epochs", "0+1", "--overwrite"]
    cache_on = run_measured([*run, "--experiment", "cache_on"])
    cache_off = run_measured([*run, "--experiment", "cache_off", "--cache-limit", "0"])
    stream = [sys.executable, "-c", READ_STREAM, photos.name, str(photos.data_dir),
              str(sizes.run_image_size)]
    train = load_prepared(photos.name, photos.data_dir).manifest["totals"]["train"]
    counts = [round(train * fraction) for fraction in STREAM_FRACTIONS]
    streams = {count: run_measured([*stream, str(count)]) for count in counts}
    return MemoryUsage(prepare, cache_on, cache_off, streams)


def measure(root: Path, photos: PhotoDataset, quick: bool,
            memory: Callable[[], MemoryUsage] | None = None) -> tuple[list[Figure], list[str]]:
    """The scaling and memory figures. ``memory`` returns the memory measurements when
    they were started elsewhere (``--quick`` runs them beside the other figures, after
    :func:`write_source`); otherwise they are taken here, after the scaling."""
    sizes = SIZES[quick]
    cores = usable_cores()
    source = root / "retina_like"
    if not source.is_dir():
        write_source(root, quick)

    def prepare_rate(workers: int | None) -> float:
        start = time.perf_counter()
        prepare_dataset("folder", source, root / "prepared" / "retina_like", workers=workers,
                        force=True, progress=False)
        return sizes.images / (time.perf_counter() - start)

    def one_core_rate() -> float:
        # --workers 1 converts on the calling thread with OpenCV's own thread pool off;
        # pinned, nothing else of the process (TensorFlow's threads) uses another core.
        with single_core():
            return prepare_rate(1)

    # As `medtransfer prepare` does (both sides): freed image buffers are reused, not
    # page-faulted back in; this is the last figure, so no other one runs with it.
    keep_freed_memory()
    rates = best_rates({"all": lambda: prepare_rate(None), "one": one_core_rate},
                       sizes.repeats)
    usage = memory() if memory is not None else measure_memory(root, photos, source, quick)
    prepare_usage, cache_on, cache_off = usage.prepare, usage.cache_on, usage.cache_off
    totals = load_prepared(photos.name, photos.data_dir).manifest["totals"]
    run_images = sum(totals[split] for split in SPLITS if split != "train") \
        + sizes.run_train_size
    (most, most_usage), (fewest, fewest_usage) = usage.streams.items()
    decoded_source = sizes.images * sizes.width * sizes.height * 3
    figures = [
        Figure("prepare_cores", f"prepare, {cores} cores vs 1 ({sizes.images} JPEGs "
               f"{sizes.width}x{sizes.height})", rates["all"], rates["one"], "images/s",
               Target(at_least=0.8 * cores)),
        Figure("prepare_memory", "prepare peak memory (all processes) vs the source "
               "images decoded", prepare_usage.peak_bytes / MIB, decoded_source / MIB, "MiB"),
        Figure("run_memory_cache", "run peak memory, cache on vs off (small_cnn "
               f"{sizes.run_image_size}px, {run_images} images in 3 splits)",
               cache_on.peak_bytes / MIB, cache_off.peak_bytes / MIB, "MiB"),
        Figure("stream_memory_cache", "cached training stream, memory per image vs "
               f"{sizes.run_image_size}² x 3 bytes ({most} images against {fewest})",
               (most_usage.peak_bytes - fewest_usage.peak_bytes) / (most - fewest) / 1024,
               cached_bytes(1, sizes.run_image_size) / 1024, "KiB"),
    ]
    notes = [
        f"prepare scaling: prepare_dataset('folder', workers=None (a conversion thread per "
        "core) vs 1, with the process pinned to one core, after keep_freed_memory() as "
        "`medtransfer prepare` does) on "
        f"{sizes.images} synthetic fundus-like JPEGs, best of {sizes.repeats}, taking turns; "
        f"the target is 80% of linear scaling ({cores} cores).",
        "Memory: peak resident memory of `python -m medtransfer prepare` and `run` (0+1 "
        f"epochs, --train-size {sizes.run_train_size}) in a fresh process, summed over the "
        "process and any it starts (sampled every 20 ms from /proc, and at least the "
        "process's own high-water mark). The run with the cache keeps every split's "
        "resized images as uint8 in memory: a dataset of N images at S px needs about "
        "N x S x S x 3 bytes on top of the run without it. A run's peak is mostly its "
        "model's activations, which swamp the cache of a dataset this small, and the run "
        f"without the cache holds a shuffle buffer of up to {UNCACHED_SHUFFLE_BUFFER:,} "
        "still-encoded images "
        "instead (BMP: raw pixels at the prepared size), so the cache's cost per image is "
        "measured on the training stream alone: make_dataset over the whole train split "
        f"and over a quarter of it at {sizes.run_image_size} px, cached, read for two "
        "epochs, each in a fresh process; the difference in peak memory divided by the "
        "difference in images.",
    ]
    return figures, notes
