"""Synthetic photographs on disk, and the one prepared dataset several figures share.

The images are photo-like rather than random: smooth colour gradients, soft blobs and a
little sensor noise compress at JPEG quality 90 about as real photographs do, so that
decoding costs what it costs on real data (pure noise would make the files huge, flat
colour would make them trivial). ``fundus=True`` draws a bright disk on black, like the
retina photographs the study used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("class_a", "class_b")


def photo(rng: np.random.Generator, width: int, height: int, fundus: bool = False) -> np.ndarray:
    """One ``(height, width, 3)`` uint8 BGR photo-like image."""
    # Work at a quarter of the size and upscale: smooth structure, cheap to make.
    small_w, small_h = max(width // 4, 8), max(height // 4, 8)
    y, x = np.mgrid[0:small_h, 0:small_w].astype(np.float32)
    image = np.empty((small_h, small_w, 3), np.float32)
    for channel in range(3):
        gx, gy, base = rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(60, 190)
        image[..., channel] = base + 80 * (gx * x / small_w + gy * y / small_h)
    for _ in range(rng.integers(4, 10)):
        cx, cy = rng.uniform(0, small_w), rng.uniform(0, small_h)
        radius = rng.uniform(0.03, 0.2) * small_w
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2))
        image += blob[..., None] * rng.uniform(-70, 70, size=3)
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)
    image += rng.standard_normal(image.shape, dtype=np.float32) * 5
    image = np.clip(image, 0, 255).astype(np.uint8)
    if fundus:
        disk = np.zeros((height, width), np.uint8)
        cv2.circle(disk, (width // 2, height // 2), int(0.47 * height), 1, thickness=-1)
        image *= disk[..., None]
    return image


def write_photos(root: Path, count: int, width: int, height: int, *, fundus: bool = False,
                 seed: int = 0) -> Path:
    """Writes ``count`` JPEGs (quality 90) in a class-per-folder layout under ``root``.

    Returns:
        ``root``, ready for ``prepare folder --source`` and ``image_dataset_from_directory``.
    """
    rng = np.random.default_rng(seed)
    for index in range(count):
        folder = root / CLASSES[index % len(CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"img{index:05d}.jpg"), photo(rng, width, height, fundus),
                    [cv2.IMWRITE_JPEG_QUALITY, 90])
    return root


@dataclass(frozen=True)
class PhotoDataset:
    """Photographs on disk and the same images prepared by ``medtransfer prepare folder``.

    Attributes:
        source: the JPEG folders (one per class).
        data_dir: the root of the prepared datasets (``--data-dir``).
        name: the prepared dataset's name (``--dataset``).
        count: how many images.
        prepare_seconds: how long ``prepare`` took (every core).
    """

    source: Path
    data_dir: Path
    name: str
    count: int
    prepare_seconds: float

    def shard_paths(self) -> list[Path]:
        """Every split's shards: the pipeline figure reads all the images, as Keras does."""
        return sorted((self.data_dir / self.name).glob("*.tfrecord"))


def prepare_photos(root: Path, count: int, width: int = 500, height: int = 375) -> PhotoDataset:
    """Writes ``count`` photos under ``root`` and prepares them (folder layout, every core)."""
    import time

    from medtransfer.data.prepare import prepare_dataset

    source = write_photos(root / "photos", count, width, height)
    data_dir = root / "datasets"
    start = time.perf_counter()
    prepare_dataset("folder", source, data_dir / "photos", progress=False)
    return PhotoDataset(source, data_dir, "photos", count, time.perf_counter() - start)
