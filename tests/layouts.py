"""Tiny datasets in each real on-disk layout and file format, for tests.

Each ``write_*`` function writes a few small images per class exactly as the public
download lays them out (TIFF, PNG, JPEG, four single-channel PNGs, npz) and returns a
:class:`Written` saying what ``--source`` to pass and what was written. Images are
class-dependent (each class has its own brightness and pattern), so a model can learn
them. Import with ``from layouts import write_cancer`` (``tests/`` is on ``sys.path``
under pytest).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np


@dataclass
class Written:
    """What a ``write_*`` function wrote.

    Attributes:
        source: what to pass as ``--source``.
        classes: the class names ``prepare`` will find, in label-index order.
        counts: good images per class.
        labels: image id -> class name of every good image.
        files: image id -> path of its (first) file.
    """

    source: Path
    classes: list[str]
    counts: dict[str, int]
    labels: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def add(self, image_id: str, label: str, path: Path) -> None:
        self.labels[image_id] = label
        self.files[image_id] = path
        self.counts[label] = self.counts.get(label, 0) + 1


def class_image(
    class_index: int, height: int, width: int, seed: int, channels: int = 3
) -> np.ndarray:
    """A uint8 image whose brightness and stripe period depend on the class, plus noise."""
    rng = np.random.default_rng(seed)
    level = 40 + 45 * (class_index % 5)
    yy, xx = np.mgrid[0:height, 0:width]
    stripes = 25 * np.sin((xx + yy) * (1 + class_index % 4) * np.pi / 8)
    base = level + stripes + rng.normal(0, 8, (height, width))
    if channels == 1:
        return np.clip(base, 0, 255).astype(np.uint8)
    tint = np.array([1.0, 0.85, 0.7])[:channels] if channels <= 3 else np.ones(channels)
    image = base[..., None] * tint[None, None, :]
    return np.clip(image, 0, 255).astype(np.uint8)


def fundus_image(class_index: int, height: int, width: int, seed: int) -> np.ndarray:
    """An RGB fundus-like photograph: black background, a bright disk of the eye centred
    in the frame with a class-dependent brightness, and faint background noise."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 6, (height, width, 3), dtype=np.uint8)
    radius = int(0.45 * min(height, width))
    level = 90 + 35 * class_index
    colour = (level, int(level * 0.6), int(level * 0.3))  # reddish, like a retina
    cv2.circle(image, (width // 2, height // 2), radius, colour, thickness=-1)
    return image


def _write_bgr(path: Path, rgb_or_gray: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = rgb_or_gray
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")


def _write_rows(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)


def write_cancer(root: Path, n_per_class: int = 10, size: int = 32) -> Written:
    """Histopathologic cancer detection: ``train_labels.csv`` + ``train/<id>.tif`` (RGB TIFF)."""
    written = Written(root, ["0", "1"], {})
    rows = []
    for label in (0, 1):
        for i in range(n_per_class):
            image_id = f"{label}a{i:03d}f"
            path = root / "train" / f"{image_id}.tif"
            _write_bgr(path, class_image(label, size, size, seed=label * 1000 + i))
            rows.append([image_id, str(label)])
            written.add(image_id, str(label), path)
    _write_rows(root / "train_labels.csv", ["id", "label"], rows)
    return written


def write_retina(root: Path, n_per_class: int = 10) -> Written:
    """APTOS 2019: ``train.csv`` (id_code,diagnosis) + ``train_images/<id_code>.png``, fundus
    photographs of varied sizes (all at most 64 px)."""
    sizes = [(40, 56), (48, 64), (36, 48), (64, 64), (50, 40)]
    written = Written(root, ["0", "1", "2", "3", "4"], {})
    rows = []
    for grade in range(5):
        for i in range(n_per_class):
            image_id = f"{grade:x}{i:02d}c0ffee"
            height, width = sizes[(grade + i) % len(sizes)]
            path = root / "train_images" / f"{image_id}.png"
            _write_bgr(path, fundus_image(grade, height, width, seed=grade * 100 + i))
            rows.append([image_id, str(grade)])
            written.add(image_id, str(grade), path)
    _write_rows(root / "train.csv", ["id_code", "diagnosis"], rows)
    return written


PROTEIN_STAINS = ("red", "green", "blue", "yellow")


def write_protein_stack(folder: Path, image_id: str, class_id: int, seed: int, size: int) -> None:
    """Writes ``<image_id>_{red,green,blue,yellow}.png``, each single-channel."""
    for offset, stain in enumerate(PROTEIN_STAINS):
        plane = class_image(class_id + offset, size, size, seed=seed * 4 + offset, channels=1)
        _write_bgr(folder / f"{image_id}_{stain}.png", plane)


def write_proteins(
    root: Path,
    single_per_class: dict[int, int] | None = None,
    multi_label: int = 4,
    size: int = 24,
) -> Written:
    """Human Protein Atlas: ``train.csv`` (Id,Target space-separated) + four single-channel
    PNGs per image. ``single_per_class`` maps class id -> single-label images; the
    returned ``counts`` hold those, by class id as text, and ``multi_label`` images with
    two class ids are written too."""
    single_per_class = single_per_class or {0: 12, 25: 11, 2: 3}
    written = Written(root, [], {})
    rows = []
    serial = 0
    for class_id, count in single_per_class.items():
        for _ in range(count):
            image_id = f"{serial:08x}-aaaa-bbbb"
            write_protein_stack(root / "train", image_id, class_id, serial, size)
            rows.append([image_id, str(class_id)])
            written.add(image_id, str(class_id), root / "train" / f"{image_id}_red.png")
            serial += 1
    classes = sorted(single_per_class)
    for i in range(multi_label):
        image_id = f"{serial:08x}-cccc-dddd"
        write_protein_stack(root / "train", image_id, classes[0], serial, size)
        rows.append([image_id, f"{classes[i % len(classes)]} {classes[(i + 1) % len(classes)]}"])
        serial += 1
    _write_rows(root / "train.csv", ["Id", "Target"], rows)
    written.classes = [str(c) for c in classes]
    return written


def write_cats_vs_dogs(
    root: Path, n_per_class: int = 10, layout: str = "kaggle", size: int = 40
) -> Written:
    """Cats vs dogs JPEGs: ``layout="kaggle"`` writes ``train/cat.<n>.jpg``,
    ``layout="petimages"`` writes ``PetImages/Cat/<n>.jpg`` (ids ``cat.<n>`` either way)."""
    if layout not in ("kaggle", "petimages"):
        raise ValueError(f"layout must be 'kaggle' or 'petimages', got {layout!r}")
    written = Written(root, ["cat", "dog"], {})
    for class_index, label in enumerate(("cat", "dog")):
        for i in range(n_per_class):
            if layout == "kaggle":
                path = root / "train" / f"{label}.{i}.jpg"
            else:
                path = root / "PetImages" / label.capitalize() / f"{i}.jpg"
            height, width = size, size - 8 + 4 * (i % 3)
            _write_bgr(path, class_image(class_index, height, width, seed=class_index * 50 + i))
            written.add(f"{label}.{i}", label, path)
    return written


FOLDER_FORMATS = ("png", "jpg", "tif", "bmp")


def write_folder(
    root: Path,
    classes: tuple[str, ...] = ("benign", "malignant"),
    n_per_class: int = 10,
    size: int = 32,
) -> Written:
    """One subfolder per class, cycling through PNG, JPEG, TIFF and BMP; the first image of
    each class is a gray PNG and the second an RGBA PNG, as users' own data often are."""
    written = Written(root, sorted(classes), {})
    for class_index, label in enumerate(classes):
        for i in range(n_per_class):
            if i == 0:
                image, suffix = class_image(class_index, size, size, i, channels=1), "png"
            elif i == 1:
                image, suffix = class_image(class_index, size, size, i, channels=4), "png"
            else:
                suffix = FOLDER_FORMATS[i % len(FOLDER_FORMATS)]
                image = class_image(class_index, size, size, seed=class_index * 70 + i)
            path = root / label / f"img{i:02d}.{suffix}"
            _write_bgr(path, image)
            written.add(f"{label}/{path.name}", label, path)
    return written


def write_csv(
    root: Path,
    classes: tuple[str, ...] = ("nodule", "normal", "tumor"),
    n_per_class: int = 10,
    size: int = 32,
    csv_name: str = "labels.csv",
) -> Written:
    """A CSV (path,label) listing PNGs under ``images/`` by paths relative to the CSV;
    ``source`` is the CSV file. Ids are the paths as written in the CSV."""
    written = Written(root / csv_name, sorted(classes), {})
    rows = []
    for class_index, label in enumerate(classes):
        for i in range(n_per_class):
            relative = f"images/{label}_{i:02d}.png"
            _write_bgr(root / relative, class_image(class_index, size, size, class_index * 9 + i))
            rows.append([relative, label])
            written.add(relative, label, root / relative)
    _write_rows(root / csv_name, ["path", "label"], rows)
    return written


def write_medmnist(
    path: Path,
    n_per_split: tuple[int, int, int] = (20, 6, 6),
    num_classes: int = 3,
    rgb: bool = False,
    size: int = 28,
) -> Written:
    """A MedMNIST ``.npz``: ``{train,val,test}_images`` uint8 ``(N, 28, 28)`` (or
    ``(N, 28, 28, 3)`` when ``rgb``) and ``{train,val,test}_labels`` ``(N, 1)``. Labels
    cycle through the classes. ``labels`` maps the ids prepare gives (``train-000000``,
    ``val-000003``, ...) to class names."""
    arrays = {}
    written = Written(path, [str(c) for c in range(num_classes)], {})
    for split, count in zip(("train", "val", "test"), n_per_split, strict=True):
        labels = np.arange(count, dtype=np.uint8) % num_classes
        channels = 3 if rgb else 1
        images = np.stack(
            [
                class_image(int(c), size, size, seed=i, channels=channels)
                for i, c in enumerate(labels)
            ]
        )
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels.reshape(-1, 1)
        for index, label in enumerate(labels):
            written.add(f"{split}-{index:06d}", str(int(label)), path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return written


# One tiny dataset per layout, by case name: "<layout>" or "<layout>-<variant>".
WRITERS = {
    "cancer": lambda root: write_cancer(root),
    "retina": lambda root: write_retina(root),
    "proteins": lambda root: write_proteins(root, {0: 12, 25: 11, 2: 3}),
    "cats_vs_dogs": lambda root: write_cats_vs_dogs(root, layout="kaggle"),
    "cats_vs_dogs-petimages": lambda root: write_cats_vs_dogs(root, layout="petimages"),
    "folder": lambda root: write_folder(root),
    "csv": lambda root: write_csv(root),
    "medmnist": lambda root: write_medmnist(root / "pathmnist.npz", rgb=True),
    "medmnist-gray": lambda root: write_medmnist(root / "organamnist.npz", rgb=False),
}
