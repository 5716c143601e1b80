"""Figure 6: ``prepare chexpert`` and ``prepare chestxray14`` against ``prepare folder``.

CheXpert-v1.0-small has about 224,000 images and ChestX-ray14 112,000, so their readers
must cost what the other layouts cost per image: the CSV rows, the label columns, the
patient groups and the grouped split on top of the decoding must not slow ``prepare``
down, and the scan (every row, kept in memory until the images are written) must stay
small per row. Both are measured against the ``folder`` layout on the same files in the
same process, so the machine's load cancels out of the ratio:

- rate: images per CPU second (user + system, every thread of the process) of
  ``prepare_dataset`` with one conversion thread, on synthetic folders in each real
  layout (gray photo-like JPEGs for CheXpert, PNGs for ChestX-ray14), and on the same
  image files hard-linked into a class-per-folder tree;
- scan memory: the peak Python allocation (tracemalloc) of the layout's reader per row,
  against ``read_folder`` per image, on thousands of rows whose images are hard links of
  a few files (so that the scan, not the disk, is measured), each reader's second scan
  (the first fills Python's table of interned strings); the 224,316-row estimate is that
  per-row figure times 224,316.
"""

from __future__ import annotations

import csv
import os
import resource
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from benchmarks.photos import photo
from benchmarks.report import Figure, Target
from benchmarks.timing import best_rates
from medtransfer.data import sources
from medtransfer.data.prepare import prepare_dataset
from medtransfer.data.registry import get_dataset

CHEXPERT_ROWS = 224_316
CHESTXRAY14_ROWS = 112_120


@dataclass(frozen=True)
class Sizes:
    images: int
    scan_rows: int
    repeats: int


SIZES = {False: Sizes(images=600, scan_rows=20_000, repeats=3),
         True: Sizes(images=40, scan_rows=400, repeats=1)}
CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA",
                   *sources.CHEXPERT_FINDINGS]
CHESTXRAY14_HEADER = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID"]


@dataclass(frozen=True)
class Layout:
    """A synthetic download in one chest layout and the same files as a folder layout."""

    name: str
    source: Path
    folder: Path
    images: int


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _link_folder(files: list[Path], folder: Path) -> None:
    for index, path in enumerate(files):
        target = folder / ("a", "b")[index % 2] / f"{index:06d}{path.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)


def _write_gray(path: Path, rng: np.random.Generator, size: tuple[int, int],
                files: list[Path], distinct: int | None) -> None:
    """Writes one gray photo-like image (JPEG quality 90 or PNG, by suffix) at ``path``,
    or, once ``distinct`` files exist, a hard link of one of them; appends it to ``files``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if distinct is None or len(files) < distinct:
        gray = cv2.cvtColor(photo(rng, *size), cv2.COLOR_BGR2GRAY)
        cv2.imwrite(str(path), gray, [cv2.IMWRITE_JPEG_QUALITY, 90])
    else:
        os.link(files[len(files) % distinct], path)
    files.append(path)


def write_chexpert(root: Path, images: int, distinct: int | None = None) -> Layout:
    """CheXpert-v1.0-small/train.csv and ``images`` frontal JPEGs (320x390 gray), 3 per
    patient; with ``distinct``, only that many image files, the rest hard links of them."""
    rng = np.random.default_rng(0)
    source = root / "CheXpert-v1.0-small"
    values = np.array(["1.0", "0.0", "-1.0", ""])
    source.mkdir(parents=True)
    files = []
    with open(source / "train.csv", "w", newline="") as table:
        writer = csv.writer(table)
        writer.writerow(CHEXPERT_HEADER)
        for index in range(images):
            inner = f"train/patient{index // 3:05d}/study{index % 3 + 1}/view1_frontal.jpg"
            _write_gray(source / inner, rng, (320, 390), files, distinct)
            labels = rng.choice(values, len(sources.CHEXPERT_FINDINGS), p=[.15, .35, .05, .45])
            writer.writerow([f"{source.name}/{inner}", "Female", "60", "Frontal", "AP", *labels])
    _link_folder(files, root / "chexpert_as_folder")
    return Layout("chexpert", source, root / "chexpert_as_folder", images)


def write_chestxray14(root: Path, images: int, distinct: int | None = None) -> Layout:
    """Data_Entry_2017.csv and ``images`` 256x256 gray PNGs under images_001/images,
    2 per patient (Kaggle's layout)."""
    rng = np.random.default_rng(1)
    source = root / "chestxray14"
    folder = source / "images_001" / "images"
    folder.mkdir(parents=True)
    files = []
    with open(source / "Data_Entry_2017.csv", "w", newline="") as table:
        writer = csv.writer(table)
        writer.writerow(CHESTXRAY14_HEADER)
        for index in range(images):
            name = f"{index // 2 + 1:08d}_{index % 2:03d}.png"
            _write_gray(folder / name, rng, (256, 256), files, distinct)
            present = [f for f in sources.CHESTXRAY14_FINDINGS if rng.random() < 0.08]
            writer.writerow([name, "|".join(present) or "No Finding", "0", str(index // 2 + 1)])
    _link_folder(files, root / "chestxray14_as_folder")
    return Layout("chestxray14", source, root / "chestxray14_as_folder", images)


def prepare_rates(layout: Layout, out: Path, repeats: int) -> dict[str, float]:
    """Images per CPU second of prepare on the chest layout and on the folder layout."""

    def rate(name: str, source: Path) -> Callable[[], float]:
        def once() -> float:
            start = _cpu_seconds()
            prepare_dataset(name, source, out / name, workers=1, force=True, progress=False)
            return layout.images / (_cpu_seconds() - start)
        return once

    return best_rates({"chest": rate(layout.name, layout.source),
                       "folder": rate("folder", layout.folder)}, repeats, warmup=1)


def scan_bytes_per_row(layout: Layout) -> dict[str, float]:
    """Peak traced allocation of each reader, per row (image) it scans."""
    reader = get_dataset(layout.name).reader
    readers = {"chest": lambda: reader(layout.source, min_class_count=1),
               "folder": lambda: sources.read_folder(layout.folder, min_class_count=1)}
    peaks = {}
    for name, read in readers.items():
        # An untraced scan first: pathlib and the readers intern path parts and labels in
        # Python's one table of interned strings, whose one-off growth would otherwise be
        # charged to whichever reader happens to trigger it.
        read()
        tracemalloc.start()
        scan = read()
        peaks[name] = tracemalloc.get_traced_memory()[1] / len(scan.candidates)
        tracemalloc.stop()
        del scan
    return peaks


def measure(root: Path, quick: bool) -> tuple[list[Figure], list[str]]:
    """The rate and scan-memory figures of both chest layouts against folder."""
    sizes = SIZES[quick]
    figures, estimates = [], []
    for write, rows in ((write_chexpert, CHEXPERT_ROWS), (write_chestxray14, CHESTXRAY14_ROWS)):
        layout = write(root / "chest" / write.__name__, sizes.images)
        rates = prepare_rates(layout, root / "chest" / "prepared", sizes.repeats)
        scan = write(root / "chest" / f"{write.__name__}_scan", sizes.scan_rows, distinct=8)
        memory = scan_bytes_per_row(scan)
        figures += [
            Figure(f"prepare_{layout.name}_rate", f"prepare {layout.name} vs folder, images "
                   f"per CPU second ({sizes.images} images, 1 thread)", rates["chest"],
                   rates["folder"], "images/CPU s", Target(at_least=0.8)),
            Figure(f"scan_{layout.name}_memory", f"{layout.name} scan vs folder scan, memory "
                   f"per row ({sizes.scan_rows:,} rows)", memory["chest"] / 1024,
                   memory["folder"] / 1024, "KiB", Target(at_most=2.0)),
        ]
        estimates.append(f"{layout.name} {memory['chest'] * rows / 1024**2:,.0f} MiB for its "
                         f"{rows:,} rows")
    notes = [
        "Chest layouts: prepare_dataset(LAYOUT, workers=1) against prepare_dataset('folder', "
        "workers=1) on the same image files (hard links), best of "
        f"{sizes.repeats} after one untimed round, in CPU seconds (user+sys of this "
        "process, every thread) so that other load on the machine does not count; the "
        "target: at least 80% of the folder layout's rate. Scan memory: tracemalloc's peak "
        "while the reader scans N rows whose images are hard links of 8 files (its second "
        "scan: the first fills the interned-string table), divided by N; the target: at "
        "most twice the folder layout's per image. The scan is what prepare holds per row "
        "until the shards are written (the images are streamed through a staging file, a "
        "bounded number in flight); at the measured figures: " + ", ".join(estimates) + ".",
    ]
    return figures, notes
