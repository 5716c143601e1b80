"""Figure 5: ``prepare`` on every core against one core, and what memory a dataset needs.

- Scaling: ``prepare_dataset`` (folder layout) on retina-like photographs (a bright disk
  on black, about 2000x1500 JPEG) with ``--workers`` left to every core against
  ``--workers 1``, taking turns.
- Memory: peak resident memory (the process and its workers together) of the
  ``medtransfer prepare`` command, and of ``medtransfer run`` with the cache on (the
  default) and off (``--cache-limit 0``), each a fresh process as a user runs it.
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
    usable_cores,
)
from medtransfer.data.pipeline import cached_bytes
from medtransfer.data.prepare import prepare_dataset
from medtransfer.data.prepared import load_prepared


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
    # 64 images: prepare starts a worker per 32 images, so 2 cores still use the pool.
    True: Sizes(images=64, width=80, height=60, repeats=1, run_image_size=32,
                run_train_size=16),
}
MIB = 1024**2
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class MemoryUsage:
    """Peak memory of the three commands, each a fresh process as a user runs it."""

    prepare: CommandUsage
    cache_on: CommandUsage
    cache_off: CommandUsage


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
    return MemoryUsage(prepare, cache_on, cache_off)


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
        # --workers 1 decodes in this process, where OpenCV's own thread pool would
        # still spread a resize over every core: pinned, it is one core.
        with single_core():
            return prepare_rate(1)

    rates = best_rates({"all": lambda: prepare_rate(None), "one": one_core_rate},
                       sizes.repeats)
    usage = memory() if memory is not None else measure_memory(root, photos, source, quick)
    prepare_usage, cache_on, cache_off = usage.prepare, usage.cache_on, usage.cache_off
    totals = {**load_prepared(photos.name, photos.data_dir).manifest["totals"],
              "train": sizes.run_train_size}
    expected = sum(cached_bytes(totals[split], sizes.run_image_size) for split in SPLITS)
    decoded_source = sizes.images * sizes.width * sizes.height * 3
    figures = [
        Figure("prepare_cores", f"prepare, {cores} cores vs 1 ({sizes.images} JPEGs "
               f"{sizes.width}x{sizes.height})", rates["all"], rates["one"], "images/s",
               Target(at_least=0.8 * cores)),
        Figure("prepare_memory", "prepare peak memory (all processes) vs the source "
               "images decoded", prepare_usage.peak_bytes / MIB, decoded_source / MIB, "MiB"),
        Figure("run_memory_cache", "run peak memory, cache on vs off (small_cnn "
               f"{sizes.run_image_size}px, {sum(totals[s] for s in SPLITS)} images in 3 splits)",
               cache_on.peak_bytes / MIB, cache_off.peak_bytes / MIB, "MiB"),
        Figure("run_memory_cache_growth", "run memory added by the cache vs its expected "
               "size (images x size² x 3 bytes)",
               (cache_on.peak_bytes - cache_off.peak_bytes) / MIB, expected / MIB, "MiB"),
    ]
    notes = [
        f"prepare scaling: prepare_dataset('folder', workers=None (every core) vs 1, with "
        "the process pinned to one core so that OpenCV's threads stay on it too) on "
        f"{sizes.images} synthetic fundus-like JPEGs, best of {sizes.repeats}, taking turns; "
        f"the target is 80% of linear scaling ({cores} cores).",
        "Memory: peak resident memory of `python -m medtransfer prepare` and `run` (0+1 "
        f"epochs, --train-size {sizes.run_train_size}) in a fresh process, summed over the "
        "process and its workers (sampled every 20 ms from /proc, and at least the "
        "process's own high-water mark). The run with the cache keeps every split's "
        "resized images as uint8 in memory: a dataset of N images at S px needs about "
        "N x S x S x 3 bytes on top of the run without it.",
    ]
    return figures, notes
