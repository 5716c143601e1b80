"""One reader per source layout, exactly as each dataset is downloaded.

A reader looks at the source without decoding any image. It returns a
:class:`SourceScan`: the candidate images (id, class name, the file or files holding
the pixels, or the pixels themselves for in-memory arrays), and every image it already
knows to be unusable (missing file, unknown label, duplicate id) with the reason.
Decoding, and the rejections that only decoding finds, happen later in ``prepare``.

Readers share one signature, ``reader(source, *, min_class_count, **layout_options) ->
SourceScan``; ``min_class_count`` only matters to the protein reader's selection rule, and
the layout options (``views``, ``uncertain``, ``label_columns``, ...) are the ones the
layout's :class:`~medtransfer.data.registry.DatasetSpec` lists.

A multi-label layout (CheXpert, ChestX-ray14, multi-label csv and MedMNIST, digits_pairs)
gives each candidate the findings present (``label``, "|"-joined in ``class_names`` order),
the findings whose label is unknown (``masked``) and, where the source has one, its group
(the patient), so that the split keeps each group in one split.
"""

from __future__ import annotations

import csv
import os
import re
import stat
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medtransfer.errors import MedtransferError, look_up_option

# Files that operating systems drop into image folders; they are not images of a class.
IGNORED_FILES = frozenset({"thumbs.db", ".ds_store", "desktop.ini"})

PROTEIN_CLASSES = (
    "Nucleoplasm",
    "Nuclear membrane",
    "Nucleoli",
    "Nucleoli fibrillar center",
    "Nuclear speckles",
    "Nuclear bodies",
    "Endoplasmic reticulum",
    "Golgi apparatus",
    "Peroxisomes",
    "Endosomes",
    "Lysosomes",
    "Intermediate filaments",
    "Actin filaments",
    "Focal adhesion sites",
    "Microtubules",
    "Microtubule ends",
    "Cytokinetic bridge",
    "Mitotic spindle",
    "Microtubule organizing center",
    "Centrosome",
    "Lipid droplets",
    "Plasma membrane",
    "Cell junctions",
    "Mitochondria",
    "Aggresome",
    "Cytosol",
    "Cytoplasmic bodies",
    "Rods & rings",
)
"""Human Protein Atlas class names; the position is the class id used in ``Target``."""

PROTEIN_RGB_STAINS = ("red", "green", "blue")
"""The stains that make a protein image's red, green and blue channels (yellow is unused)."""

PROTEIN_STAIN_FILE = re.compile(r"^(?P<id>.+)_(?P<stain>red|green|blue|yellow)\.png$")
"""A Human Protein Atlas stain file's name: ``<Id>_<stain>.png``."""


def protein_stain_files(image_id: str) -> list[str]:
    """The file names of one protein image's red, green and blue stains, in that order."""
    return [f"{image_id}_{stain}.png" for stain in PROTEIN_RGB_STAINS]


DEFAULT_MIN_CLASS_COUNT = 100
"""Proteins: a class enters the single-label subset with at least this many images."""

MEDMNIST_SPLITS = {"train": "train", "val": "validation", "test": "test"}


# Slots: CheXpert has 224,316 candidates, all held until the shards are written.
@dataclass(frozen=True, slots=True)
class Candidate:
    """One image a layout offers, before it is decoded.

    Attributes:
        id: unique within the dataset; becomes the ``id`` in ``split.csv`` and the shards.
        label: the class name.
        paths: the file holding the image, or the red, green and blue files of a protein
            stack. Empty for in-memory images.
        pixels: the uint8 pixels of an in-memory image (MedMNIST, digits), else None.
        split: the official split for layouts that have one (MedMNIST, ChestX-ray14's
            test list), else None.
        masked: multi-label: the findings whose label is unknown, "|"-joined ("" = none).
        group: the group (patient) id when the source has one, else None.
    """

    id: str
    label: str
    paths: tuple[str, ...] = ()
    pixels: np.ndarray | None = field(default=None, compare=False, repr=False)
    split: str | None = None
    masked: str = ""
    group: str | None = None

    @property
    def path(self) -> str:
        """The path to show for this image in ``rejected.csv``."""
        return self.paths[0] if self.paths else ""


@dataclass(frozen=True)
class Rejection:
    """One row of ``rejected.csv``: an image left out, and why."""

    path: str
    id: str
    reason: str


@dataclass
class SourceScan:
    """What a reader found in a source.

    Attributes:
        class_names: the classes, in label-index order.
        candidates: the images to decode, in source order.
        rejected: images the reader already knows are unusable; they count towards
            ``--max-reject``.
        excluded: images a dataset's selection rule leaves out (the protein single-label
            subset); listed in ``rejected.csv`` but not counted towards ``--max-reject``.
        files: ``(path, size)`` of every source file used, for the fingerprint.
        source_label: what ``manifest.json`` records as the source.
        official_splits: the candidates carry their own split (MedMNIST).
        selection: the selection rule and its counts, for ``manifest.json``, or None.
        multi_label: each candidate's ``label`` is a set of findings (see the module).
        group_column: what the candidates' ``group`` is (``Patient ID``, ...), or None.
        options: the layout options as used, for ``manifest.json`` and the fingerprint.
        split_note: how the source's own split lists were used, for ``manifest.json``.
    """

    class_names: list[str]
    candidates: list[Candidate]
    rejected: list[Rejection]
    excluded: list[Rejection]
    files: list[tuple[str, int]]
    source_label: str
    official_splits: bool = False
    selection: dict[str, Any] | None = None
    multi_label: bool = False
    group_column: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    split_note: str | None = None


def class_order(names: Iterable[str]) -> list[str]:
    """Sorts class names, numerically when every name is an integer ("2" before "10")."""
    names = sorted(set(names))
    if names and all(re.fullmatch(r"-?\d+", name) for name in names):
        return sorted(names, key=int)
    return names


def _layout_error(layout: str, problem: str, expected: str) -> MedtransferError:
    return MedtransferError(
        f"{problem} The {layout} layout expects {expected}, exactly as downloaded and "
        f"unzipped (see datasets/README.md). Point --source at that folder."
    )


def _require_source(source: Path | None, layout: str) -> Path:
    if source is None:
        raise MedtransferError(
            f"{layout} needs --source: the folder (or file) you downloaded. Run "
            f"'medtransfer prepare {layout} --source DIR'; datasets/README.md says where to "
            f"get the data."
        )
    if not source.exists():
        raise MedtransferError(
            f"--source {source} does not exist. Check the path; it should point at the "
            f"downloaded {layout} data."
        )
    return source


def _visible(name: str) -> bool:
    return not name.startswith(".") and name.lower() not in IGNORED_FILES


def _list_files(folder: Path) -> dict[str, int]:
    """Maps each file name directly in ``folder`` to its size, in one directory pass."""
    sizes = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_file():
                sizes[entry.name] = entry.stat().st_size
    return sizes


def _read_csv(path: Path, required: tuple[str, ...], layout: str) -> Iterator[tuple[int, dict]]:
    """Yields ``(line number, row)`` of a CSV whose header must hold ``required``."""
    with open(path, newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [name for name in required if name not in header]
        if missing:
            raise MedtransferError(
                f"{path} has no column {', '.join(repr(m) for m in missing)} (its columns: "
                f"{', '.join(header) or 'none'}). The {layout} layout needs the columns "
                f"{', '.join(required)}; rename the header row or point --source at the "
                f"right file."
            )
        reader.fieldnames = header
        for row in reader:
            yield reader.line_num, {k: (v or "").strip() for k, v in row.items() if k}


class _ScanBuilder:
    """Collects candidates and the reader-level rejections, with the same checks and
    reasons for every layout: duplicate id, then unknown label, then missing file."""

    def __init__(self, class_names: list[str], valid_text: str | None = None):
        self.class_names = class_names
        self._valid = set(class_names)
        self._valid_text = valid_text or ", ".join(class_names)
        self._first_seen: dict[str, str] = {}
        self.candidates: list[Candidate] = []
        self.rejected: list[Rejection] = []
        self.excluded: list[Rejection] = []
        self.files: list[tuple[str, int]] = []
        self._shared: dict[str, str] = {}

    def claim_id(self, image_id: str, path: str, origin: str) -> bool:
        """Records ``image_id``; a later image with the same id is rejected."""
        if image_id in self._first_seen:
            reason = f"duplicate id (first seen at {self._first_seen[image_id]})"
            self.rejected.append(Rejection(path, image_id, reason))
            return False
        self._first_seen[image_id] = origin
        return True

    def check_label(self, image_id: str, label: str, path: str) -> bool:
        if label in self._valid:
            return True
        reason = f"unknown label '{label}' (valid: {self._valid_text})"
        self.rejected.append(Rejection(path, image_id, reason))
        return False

    def check_files(self, image_id: str, paths: tuple[str, ...], sizes: list[int | None]) -> bool:
        for path, size in zip(paths, sizes, strict=True):
            if size is None:
                self.rejected.append(Rejection(path, image_id, "missing file"))
                return False
        self.files.extend(zip(paths, sizes, strict=True))
        return True

    def add(
        self,
        image_id: str,
        label: str,
        paths: tuple[str, ...],
        sizes: list[int | None],
        origin: str,
        group: str | None = None,
    ) -> None:
        """Runs every check and keeps the image as a candidate when it passes them."""
        if not self.claim_id(image_id, paths[0], origin):
            return
        if not self.check_label(image_id, label, paths[0]):
            return
        if self.check_files(image_id, paths, sizes):
            self.candidates.append(Candidate(image_id, label, paths, group=group))

    def add_findings(
        self,
        image_id: str,
        path: str,
        origin: str,
        findings: dict[str, int] | str,
        group: str | None = None,
        split: str | None = None,
    ) -> None:
        """Keeps a multi-label image, or rejects it with the reason ``findings`` gives.

        Args:
            image_id: the image id; a repeated id is rejected.
            path: the image file; a missing one is rejected.
            origin: where the image was listed, for the duplicate-id reason.
            findings: each finding's value (1 positive, 0 negative, -1 unknown), or the
                reason the row cannot be used.
            group: the image's group (patient) id.
            split: its official split, if any.
        """
        if not self.claim_id(image_id, path, origin):
            return
        if isinstance(findings, str):
            self.rejected.append(Rejection(path, image_id, findings))
            return
        paths = (path,)
        if not self.check_files(image_id, paths, [_file_size(path)]):
            return
        # One string object per distinct label set and patient id: they repeat over
        # many rows (sys.intern would do, but its process-wide table grows in jumps).
        share = self._shared.setdefault
        label = _joined(findings, self.class_names, 1)
        masked = _joined(findings, self.class_names, -1)
        self.candidates.append(Candidate(
            image_id, share(label, label), paths, split=split, masked=share(masked, masked),
            group=None if group is None else share(group, group),
        ))

    def scan(self, source_files: list[tuple[str, int]], source_label: str, **extra) -> SourceScan:
        return SourceScan(
            class_names=self.class_names,
            candidates=self.candidates,
            rejected=self.rejected,
            excluded=self.excluded,
            files=source_files + self.files,
            source_label=source_label,
            **extra,
        )


def _joined(findings: dict[str, int], class_names: list[str], value: int) -> str:
    return "|".join(name for name in class_names if findings.get(name) == value)


FINDING_VALUES = {"1": 1, "1.0": 1, "0": 0, "0.0": 0, "": 0, "-1": -1, "-1.0": -1}
"""A finding column's values: 1 positive, 0 negative, -1 uncertain/unknown, blank = not
mentioned, which counts as negative (as CheXpert's labeller means it)."""

UNCERTAIN_POLICIES = ("ones", "zeros", "ignore")
"""CheXpert's U-Ones, U-Zeros and U-Ignore: what an uncertain (-1) label becomes."""


def finding_values(row: dict[str, str], columns: Iterable[str], uncertain: str
                   ) -> dict[str, int] | str:
    """Each finding column's value as 1, 0 or -1 (unknown) under the ``uncertain`` policy,
    or, when a value is none of 1, 0, -1 or blank, the reason the row is rejected."""
    values = {}
    for column in columns:
        value = FINDING_VALUES.get(row[column])
        if value is None:
            return (f"label value '{row[column]}' in column '{column}' is not 1, 0, -1 or "
                    f"blank")
        if value == -1 and uncertain != "ignore":
            value = 1 if uncertain == "ones" else 0
        values[column] = value
    return values


def _file_size(path: str | Path) -> int | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_size if stat.S_ISREG(status.st_mode) else None


def _labelled_folder(
    source: Path | None,
    layout: str,
    csv_name: str,
    columns: tuple[str, str],
    image_dir: str,
    suffix: str,
    class_names: list[str],
) -> SourceScan:
    """Reads the Kaggle layout "labels CSV + one image file per id in a folder"."""
    source = _require_source(source, layout)
    expected = f"{csv_name} ({','.join(columns)}) and {image_dir}/<{columns[0]}>{suffix}"
    labels_csv, images = source / csv_name, source / image_dir
    if not labels_csv.is_file() or not images.is_dir():
        missing = csv_name if not labels_csv.is_file() else f"the folder {image_dir}/"
        raise _layout_error(layout, f"{source} has no {missing}.", expected)
    sizes = _list_files(images)
    builder = _ScanBuilder(class_names)
    id_column, label_column = columns
    for line, row in _read_csv(labels_csv, columns, layout):
        image_id, label = row[id_column], row[label_column]
        name = f"{image_id}{suffix}"
        builder.add(
            image_id,
            label,
            (str(images / name),),
            [sizes.get(name)],
            origin=f"{csv_name} line {line}",
        )
    return builder.scan([(str(labels_csv), labels_csv.stat().st_size)], str(source))


def read_cancer(source: Path | None, *, min_class_count: int) -> SourceScan:
    """Histopathologic cancer detection: ``train_labels.csv`` (id,label) + ``train/<id>.tif``."""
    return _labelled_folder(
        source, "cancer", "train_labels.csv", ("id", "label"), "train", ".tif", ["0", "1"]
    )


def read_retina(source: Path | None, *, min_class_count: int) -> SourceScan:
    """APTOS 2019: ``train.csv`` (id_code,diagnosis 0-4) + ``train_images/<id_code>.png``."""
    return _labelled_folder(
        source,
        "retina",
        "train.csv",
        ("id_code", "diagnosis"),
        "train_images",
        ".png",
        ["0", "1", "2", "3", "4"],
    )


def read_proteins(source: Path | None, *, min_class_count: int) -> SourceScan:
    """Human Protein Atlas: ``train.csv`` (Id,Target) + ``train/<Id>_<stain>.png``.

    The study's single-label subset is selected from ``train.csv``: images with exactly
    one class id, and, among them, classes with at least ``min_class_count`` images. The
    images it leaves out are ``excluded`` (listed, not counted as rejected); only the
    selected images are checked for their files. RGB comes from the red, green and blue
    stains; the yellow stain is not used and not required.
    """
    layout = "proteins"
    source = _require_source(source, layout)
    expected = "train.csv (Id,Target) and train/<Id>_{red,green,blue,yellow}.png"
    labels_csv, images = source / "train.csv", source / "train"
    if not labels_csv.is_file() or not images.is_dir():
        missing = "train.csv" if not labels_csv.is_file() else "the folder train/"
        raise _layout_error(layout, f"{source} has no {missing}.", expected)
    builder = _ScanBuilder(list(PROTEIN_CLASSES), valid_text=f"0-{len(PROTEIN_CLASSES) - 1}")
    rows, csv_rows, multi_label = _single_label_protein_rows(labels_csv, images, builder)
    per_class = Counter(class_id for _, class_id, _ in rows)
    kept_ids = sorted((c for c, n in per_class.items() if n >= min_class_count), key=int)
    if not kept_ids:
        raise MedtransferError(
            f"No protein class has {min_class_count} or more single-label images in "
            f"{labels_csv} (the most is {max(per_class.values(), default=0)}). Lower "
            f"--min-class-count, or check that --source is the full download."
        )
    kept = set(kept_ids)
    sizes = _list_files(images)
    for image_id, class_id, path in rows:
        name = PROTEIN_CLASSES[int(class_id)]
        if class_id not in kept:
            reason = (
                f"class '{name}' below --min-class-count "
                f"({per_class[class_id]} < {min_class_count})"
            )
            builder.excluded.append(Rejection(path, image_id, reason))
            continue
        names = protein_stain_files(image_id)
        paths = tuple(str(images / n) for n in names)
        if builder.check_files(image_id, paths, [sizes.get(n) for n in names]):
            builder.candidates.append(Candidate(image_id, name, paths))

    builder.class_names = [PROTEIN_CLASSES[int(c)] for c in kept_ids]
    selection = {
        "rule": (
            "single-label subset: images of train.csv with exactly one class id; classes "
            f"with at least {min_class_count} such images"
        ),
        "min_class_count": min_class_count,
        "rows": csv_rows,
        "multi_label": multi_label,
        "single_label": len(rows),
        "single_label_per_class": {
            PROTEIN_CLASSES[int(c)]: per_class[c] for c in sorted(per_class, key=int)
        },
        "kept_classes": {PROTEIN_CLASSES[int(c)]: int(c) for c in kept_ids},
        "dropped_classes": {
            PROTEIN_CLASSES[int(c)]: per_class[c]
            for c in sorted(per_class, key=int)
            if c not in kept
        },
        "selected_images": sum(per_class[c] for c in kept_ids),
    }
    return builder.scan(
        [(str(labels_csv), labels_csv.stat().st_size)], str(source), selection=selection
    )


def _single_label_protein_rows(labels_csv: Path, images: Path, builder: _ScanBuilder
                               ) -> tuple[list[tuple[str, str, str]], int, int]:
    """The single-label rows of the proteins' ``train.csv``: (id, class id, first path).

    A row with an unknown or missing class id is rejected, a multi-label row excluded,
    both through ``builder``. Also returns how many rows the CSV has, and how many of
    them are multi-label.
    """
    valid_ids = {str(i) for i in range(len(PROTEIN_CLASSES))}
    rows, csv_rows, multi_label = [], 0, 0
    for line, row in _read_csv(labels_csv, ("Id", "Target"), "proteins"):
        csv_rows += 1
        image_id = row["Id"]
        path = str(images / f"{image_id}_green.png")
        if not builder.claim_id(image_id, path, f"train.csv line {line}"):
            continue
        targets = set(row["Target"].split())
        unknown = sorted(targets - valid_ids) or ([""] if not targets else [])
        if unknown:
            builder.check_label(image_id, unknown[0], path)
        elif len(targets) > 1:
            multi_label += 1
            reason = "multi-label (not in the single-label subset)"
            builder.excluded.append(Rejection(path, image_id, reason))
        else:
            rows.append((image_id, targets.pop(), path))
    return rows, csv_rows, multi_label


def image_files(folder: Path) -> Iterator[Path]:
    """Every visible file under ``folder``, recursively, in sorted order."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if _visible(name):
                yield Path(root) / name


def read_cats_vs_dogs(source: Path | None, *, min_class_count: int) -> SourceScan:
    """Cats vs dogs, in either public layout.

    - Kaggle "dogs-vs-cats": ``train/cat.<n>.jpg`` and ``train/dog.<n>.jpg``; the label
      is the file name's prefix.
    - Microsoft "PetImages": ``PetImages/Cat/<n>.jpg`` and ``PetImages/Dog/<n>.jpg``
      (``--source`` may be the folder holding ``PetImages`` or ``PetImages`` itself).
      Its zero-byte and unreadable files end up in ``rejected.csv``.

    Ids are ``cat.<n>`` / ``dog.<n>`` in both layouts.
    """
    layout = "cats_vs_dogs"
    source = _require_source(source, layout)
    classes = ["cat", "dog"]
    builder = _ScanBuilder(classes)
    pets = source / "PetImages" if (source / "PetImages").is_dir() else source
    if (source / "train").is_dir():
        train = source / "train"
        for path in image_files(train):
            label = path.name.split(".", 1)[0].lower()
            image_id = path.relative_to(train).with_suffix("").as_posix()
            builder.add(image_id, label, (str(path),), [path.stat().st_size], str(path))
    elif (pets / "Cat").is_dir() or (pets / "Dog").is_dir():
        for folder in sorted(p for p in pets.iterdir() if p.is_dir() and _visible(p.name)):
            label = folder.name.lower()
            for path in image_files(folder):
                image_id = f"{label}.{path.relative_to(folder).with_suffix('').as_posix()}"
                builder.add(image_id, label, (str(path),), [path.stat().st_size], str(path))
    elif (source / "train.zip").is_file():
        raise MedtransferError(
            f"{source} holds train.zip but no train/ folder. Unzip it first "
            f"('unzip {source / 'train.zip'} -d {source}'), then prepare again."
        )
    else:
        raise _layout_error(
            layout,
            f"{source} has neither a train/ folder nor PetImages/Cat and PetImages/Dog.",
            "train/cat.<n>.jpg and train/dog.<n>.jpg (Kaggle dogs-vs-cats) or "
            "PetImages/Cat/<n>.jpg and PetImages/Dog/<n>.jpg (Microsoft)",
        )
    return builder.scan([], str(source))


def read_folder(source: Path | None, *, min_class_count: int) -> SourceScan:
    """Your own images, one subfolder per class: ``<source>/<class>/**/<image>``.

    Class names are the subfolder names; files directly in ``source`` belong to no class
    and are ignored. Any image format OpenCV reads (jpg, png, tif, bmp, webp) with 1, 3
    or 4 channels; other files are rejected as "not an image".
    """
    layout = "folder"
    source = _require_source(source, layout)
    expected = "one subfolder per class holding that class's images: <source>/<class>/<image>"
    if not source.is_dir():
        raise _layout_error(layout, f"--source {source} is a file, not a folder.", expected)
    folders = [p for p in source.iterdir() if p.is_dir() and _visible(p.name)]
    if not folders:
        raise _layout_error(layout, f"{source} has no subfolders.", expected)
    by_name = {folder.name: folder for folder in folders}
    builder = _ScanBuilder(class_order(by_name))
    for label in builder.class_names:
        for path in image_files(by_name[label]):
            image_id = path.relative_to(source).as_posix()
            builder.add(image_id, label, (str(path),), [path.stat().st_size], image_id)
    return builder.scan([], str(source))


def read_csv_layout(source: Path | None, *, min_class_count: int,
                    label_columns: Sequence[str] | None = None, labels_column: str | None = None,
                    labels_sep: str = "|", group_column: str | None = None) -> SourceScan:
    """Your own images listed in a CSV with the columns ``path`` and ``label``.

    ``--source`` is the CSV file. Relative paths are relative to the CSV's folder. An
    optional ``id`` column names the images; without it the path is the id. Class names
    are the distinct labels; an empty label is rejected.

    Multi-label instead of ``label``: ``label_columns``, one column per finding holding
    1, 0, -1 (unknown: masked) or blank (negative); or ``labels_column``, one column of
    finding names separated by ``labels_sep`` (empty: none present), whose findings are
    the distinct names. ``group_column`` names a group (patient) id column; the split
    then keeps each group in one split, and a row with an empty group id is rejected.
    """
    layout = "csv"
    source = _require_source(source, layout)
    if source.is_dir():
        raise MedtransferError(
            f"--source {source} is a folder; the csv layout needs the CSV file itself "
            f"(columns path,label), e.g. --source {source / 'labels.csv'}."
        )
    if label_columns and labels_column:
        raise MedtransferError(
            "--label-columns and --labels-column are two ways to give multi-label labels; "
            "pass one: --label-columns A,B,C for one 0/1 column per finding, or "
            "--labels-column X for one column of names separated by --labels-sep."
        )
    if labels_sep != "|" and not labels_column:
        raise MedtransferError(
            f"--labels-sep '{labels_sep}' separates the names of --labels-column, which is not "
            f"given. Add --labels-column COLUMN (the column holding the finding names), or "
            f"leave --labels-sep out."
        )
    label_columns = list(label_columns or [])
    if label_columns:
        required = ("path", *label_columns)
    else:
        required = ("path", labels_column or "label")
    rows = list(_read_csv(source, (*required, *([group_column] if group_column else [])),
                          layout))
    if labels_column:
        names = class_order(n.strip() for _, row in rows
                            for n in row[labels_column].split(labels_sep) if n.strip())
    else:
        names = label_columns or class_order(row["label"] for _, row in rows if row["label"])
    builder = _ScanBuilder(names)
    for line, row in rows:
        path = Path(row["path"])
        if not path.is_absolute():
            path = source.parent / path
        image_id = row.get("id") or row["path"]
        origin = f"{source.name} line {line}"
        group = row[group_column] if group_column else None
        if group_column and not group:
            findings: dict[str, int] | str = f"empty group id in column '{group_column}'"
        elif label_columns:
            findings = finding_values(row, label_columns, "ignore")
        elif labels_column:
            findings = dict.fromkeys((n.strip() for n in row[labels_column].split(labels_sep)
                                      if n.strip()), 1)
        else:
            if not row["label"]:
                if builder.claim_id(image_id, str(path), origin):
                    builder.rejected.append(Rejection(str(path), image_id, "empty label"))
                continue
            builder.add(image_id, row["label"], (str(path),), [_file_size(path)], origin,
                        group=group)
            continue
        builder.add_findings(image_id, str(path), origin, findings, group=group)
    multi_label = bool(label_columns or labels_column)
    options: dict[str, Any] = {"group_column": group_column}
    if label_columns:
        options["label_columns"] = label_columns
    elif labels_column:
        options.update(labels_column=labels_column, labels_sep=labels_sep)
    if not multi_label and not group_column:
        options = {}
    return builder.scan([(str(source), source.stat().st_size)], str(source),
                        multi_label=multi_label, group_column=group_column, options=options)


def _medmnist_file(source: Path) -> Path:
    if source.is_file():
        return source
    found = sorted(source.glob("*.npz"))
    if len(found) != 1:
        listing = ", ".join(p.name for p in found) or "none"
        raise MedtransferError(
            f"--source {source} must be one MedMNIST .npz file or a folder holding exactly "
            f"one (found: {listing}). Pass the file itself, e.g. --source "
            f"{source / 'pathmnist.npz'}."
        )
    return found[0]


def read_medmnist(source: Path | None, *, min_class_count: int) -> SourceScan:
    """A MedMNIST ``.npz`` (2D, single-label), keeping its official train/val/test splits.

    Images are ``(N, H, W)`` or ``(N, H, W, 3)`` uint8, labels ``(N, 1)`` class indices.
    Class names are the label values as text ("0", "1", ...). Ids are
    ``<split>-<index>`` with the npz's own split names (``train``, ``val``, ``test``).
    """
    layout = "medmnist"
    path = _medmnist_file(_require_source(source, layout))
    if not zipfile.is_zipfile(path):
        # np.load would try it as a pickle and suggest allow_pickle: wrong advice here.
        raise MedtransferError(
            f"{path} is not a .npz file (an .npz is a zip archive; a failed download often "
            f"leaves an HTML page or a partial file instead). Download it again from MedMNIST "
            f"(see datasets/README.md)."
        )
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise MedtransferError(
            f"{path} is not a readable .npz file ({error}). Download it again from "
            f"MedMNIST (see datasets/README.md)."
        ) from None
    keys = [f"{split}_{kind}" for split in MEDMNIST_SPLITS for kind in ("images", "labels")]
    with archive:
        missing = [key for key in keys if key not in archive.files]
        if missing:
            raise MedtransferError(
                f"{path} has no {', '.join(missing)} (it holds: {', '.join(archive.files)}). "
                f"A MedMNIST .npz holds {', '.join(keys)}; is this a MedMNIST file?"
            )
        arrays = {key: archive[key] for key in keys}
    labels = {}
    widths = {a.shape[1] if a.ndim == 2 else 1 for k, a in arrays.items() if k.endswith("labels")}
    if len(widths) == 1 and widths != {1}:
        return _medmnist_multi_label(path, arrays, widths.pop())
    for split in MEDMNIST_SPLITS:
        images, split_labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if split_labels.ndim == 2 and split_labels.shape[1] != 1:
            raise MedtransferError(
                f"{path}: {split}_labels has shape {split_labels.shape}, but the other "
                f"splits' labels have other widths ({sorted(widths)}). A MedMNIST file has "
                f"one label per image (single-label) or the same number of 0/1 labels per "
                f"image in every split (multi-label, ChestMNIST); download it again."
            )
        _check_medmnist_images(path, split, images, len(split_labels))
        labels[split] = [str(int(v)) for v in split_labels.reshape(len(split_labels))]
    builder = _ScanBuilder(class_order(v for values in labels.values() for v in values))
    for split, official in MEDMNIST_SPLITS.items():
        images = _medmnist_pixels(arrays[f"{split}_images"])
        for index, label in enumerate(labels[split]):
            image_id = f"{split}-{index:06d}"
            builder.candidates.append(
                Candidate(image_id, label, pixels=images[index], split=official)
            )
    return builder.scan(
        [(str(path), path.stat().st_size)], str(path.resolve()), official_splits=True
    )


def _check_medmnist_images(path: Path, split: str, images: np.ndarray, num_labels: int) -> None:
    shape_ok = images.ndim == 3 or (images.ndim == 4 and images.shape[3] in (1, 3))
    if images.dtype != np.uint8 or not shape_ok or len(images) != num_labels:
        raise MedtransferError(
            f"{path}: {split}_images is {images.dtype} {images.shape} with "
            f"{num_labels} labels; expected uint8 (N, H, W) or (N, H, W, 3) with "
            f"one label per image. 3D MedMNIST subsets are not supported."
        )


def _medmnist_pixels(images: np.ndarray) -> np.ndarray:
    return images[..., 0] if images.ndim == 4 and images.shape[3] == 1 else images


MEDMNIST_FINDINGS = {
    "chestmnist": (
        "atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule",
        "pneumonia", "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis",
        "pleural", "hernia",
    ),
}
"""The finding names of multi-label MedMNIST subsets, from MedMNIST's ``INFO[...]["label"]``."""


def _medmnist_multi_label(path: Path, arrays: dict[str, np.ndarray], width: int
                          ) -> SourceScan:
    """A multi-label MedMNIST npz (ChestMNIST: labels ``(N, 14)`` of 0/1), official splits
    kept. Findings are MedMNIST's names when the file is a known subset (by its name and
    width), else "0", "1", ...; a value other than 0 or 1 rejects that image."""
    subset = path.stem.split("_")[0].lower()
    known = MEDMNIST_FINDINGS.get(subset, ())
    names = list(known) if len(known) == width else [str(i) for i in range(width)]
    builder = _ScanBuilder(names)
    for split, official in MEDMNIST_SPLITS.items():
        images, labels = _medmnist_pixels(arrays[f"{split}_images"]), arrays[f"{split}_labels"]
        _check_medmnist_images(path, split, arrays[f"{split}_images"], len(labels))
        for index, row in enumerate(labels):
            image_id = f"{split}-{index:06d}"
            if not np.isin(row, (0, 1)).all():
                reason = f"label values {row.tolist()} are not all 0 or 1"
                builder.rejected.append(Rejection(str(path), image_id, reason))
                continue
            findings = {name: int(v) for name, v in zip(names, row, strict=True)}
            builder.candidates.append(Candidate(
                image_id, _joined(findings, names, 1), pixels=images[index], split=official))
    return builder.scan([(str(path), path.stat().st_size)], str(path.resolve()),
                        official_splits=True, multi_label=True)


def _bundled_digits(source: Path | None, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digit images as uint8 (N, 8, 8) and their digits; refuses a
    ``--source``, which a bundled dataset does not take."""
    if source is not None:
        raise MedtransferError(
            f"{layout} is bundled (made from scikit-learn's digits) and takes no --source. "
            f"Run 'medtransfer prepare {layout}' without it."
        )
    # Imported here: scikit-learn is slow to import and only the digits need it.
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are 0..16; stretch them to the full 8-bit range.
    return np.round(digits.images * (255.0 / 16.0)).astype(np.uint8), digits.target


def read_digits(source: Path | None, *, min_class_count: int) -> SourceScan:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes); needs no source."""
    images, targets = _bundled_digits(source, "digits")
    builder = _ScanBuilder([str(d) for d in range(10)])
    for index, (image, target) in enumerate(zip(images, targets, strict=True)):
        builder.candidates.append(Candidate(f"digit-{index:04d}", str(int(target)), pixels=image))
    return builder.scan([], "sklearn.datasets.load_digits")


def read_digits_pairs(source: Path | None, *, min_class_count: int) -> SourceScan:
    """Two scikit-learn digits side by side: a bundled multi-label dataset.

    The recipe (fixed, independent of ``--seed``): the 1,797 digit images are shuffled
    with seed 0 and cut into 599 groups of three, a, b, c; each group gives the three
    16x16 images a|b, b|c, c|a (the 8x8 digits side by side, centred vertically), so
    1,797 images in all. An image's findings are the digits it shows ("0".."9"; one
    finding when both digits are the same). The group is the split's group, so no source
    digit image appears in two splits.
    """
    images, targets = _bundled_digits(source, "digits_pairs")
    order = np.random.default_rng(0).permutation(len(images))
    builder = _ScanBuilder([str(d) for d in range(10)])
    for group_index in range(len(order) // 3):
        members = order[3 * group_index: 3 * group_index + 3]
        for position in range(3):
            left, right = members[position], members[(position + 1) % 3]
            pixels = np.zeros((16, 16), np.uint8)
            pixels[4:12, :8], pixels[4:12, 8:] = images[left], images[right]
            present = {str(int(targets[left])), str(int(targets[right]))}
            builder.candidates.append(Candidate(
                f"pair-{3 * group_index + position:04d}",
                _joined(dict.fromkeys(present, 1), builder.class_names, 1),
                pixels=pixels, group=f"group-{group_index:03d}",
            ))
    return builder.scan([], "sklearn.datasets.load_digits (pairs)", multi_label=True,
                        group_column="group")


CHEXPERT_FINDINGS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices",
)
"""CheXpert's 14 observations, in the column order of its train.csv and valid.csv."""

CHEXPERT_VIEWS = ("frontal", "lateral", "all")
_PATIENT = re.compile(r"^patient\d+$")


def read_chexpert(source: Path | None, *, min_class_count: int, views: str = "frontal",
                  uncertain: str = "ones") -> SourceScan:
    """CheXpert (``CheXpert-v1.0-small`` or the full ``CheXpert-v1.0``), as downloaded.

    ``train.csv`` and ``valid.csv`` (``Path, Sex, Age, Frontal/Lateral, AP/PA`` and the 14
    observations) list ``<folder>/{train,valid}/patientNNNNN/studyK/viewM_<view>.jpg``; the
    first part of each path is the downloaded folder's own name, so paths are read
    relative to ``--source`` whatever it is called now. Both CSVs are pooled (the
    prepared dataset makes its own grouped 8:1:1 split; see datasets/README.md); the
    group is the patient folder. Rows of the other view (``--views``) are excluded
    (listed, not counted as rejected). Values: 1.0 positive, 0.0 negative, blank
    negative, -1.0 uncertain, which ``--uncertain`` makes 1 (ones), 0 (zeros) or unknown
    (ignore: masked out of the loss and that finding's metrics for that image).
    """
    layout = "chexpert"
    source = _require_source(source, layout)
    views = look_up_option(views, CHEXPERT_VIEWS, "--views value",
                           see="frontal (default), lateral or all.")
    uncertain = look_up_option(uncertain, UNCERTAIN_POLICIES, "--uncertain policy",
                               see="ones (U-Ones, default), zeros (U-Zeros) or ignore "
                                   "(U-Ignore).")
    expected = ("train.csv and valid.csv (Path, Sex, Age, Frontal/Lateral, AP/PA, then the 14 "
                "observations) and train/, valid/ with patientNNNNN/studyK/viewM_*.jpg")
    tables = [source / name for name in ("train.csv", "valid.csv") if (source / name).is_file()]
    if not source.is_dir() or not (source / "train.csv").is_file():
        raise _layout_error(layout, f"{source} has no train.csv.", expected)
    builder = _ScanBuilder(list(CHEXPERT_FINDINGS))
    # Plain strings, not Path objects, per row: 224,316 rows.
    root = str(source)
    for table in tables:
        for line, row in _read_csv(table, ("Path", "Frontal/Lateral", *CHEXPERT_FINDINGS),
                                   layout):
            inner = [part for part in row["Path"].replace("\\", "/").split("/")[1:] if part]
            path = os.path.join(root, *inner)
            image_id = os.path.splitext("/".join(inner))[0] if inner else row["Path"]
            origin = f"{table.name} line {line}"
            view = row["Frontal/Lateral"].lower()
            if views != "all" and view in ("frontal", "lateral") and view != views:
                if builder.claim_id(image_id, path, origin):
                    builder.excluded.append(Rejection(path, image_id,
                                                      f"{view} view (--views {views})"))
                continue
            patient = next((part for part in inner if _PATIENT.match(part)), None)
            if not inner or ".." in inner or row["Path"].startswith(("/", "\\")):
                problem: dict[str, int] | str = (
                    f"path '{row['Path']}' is outside the source (expected "
                    f"{source.name}/train/patientNNNNN/...)")
            elif view not in ("frontal", "lateral"):
                problem = (f"Frontal/Lateral value '{row['Frontal/Lateral']}' is not Frontal "
                           f"or Lateral")
            elif patient is None:
                problem = f"path '{row['Path']}' has no patientNNNNN folder (the patient id)"
            else:
                problem = finding_values(row, CHEXPERT_FINDINGS, uncertain)
            builder.add_findings(image_id, path, origin, problem, group=patient)
    return builder.scan(
        [(str(t), t.stat().st_size) for t in tables], str(source), multi_label=True,
        group_column="patient (from Path)", options={"views": views, "uncertain": uncertain},
        split_note=f"{' and '.join(t.name for t in tables)} pooled, then split 8:1:1 grouped by "
                   f"patient",
    )


CHESTXRAY14_FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
    "Hernia",
)
"""NIH ChestX-ray14's 14 findings, as spelled in ``Finding Labels`` ("No Finding": none)."""

_CHESTXRAY14_TABLES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")


def read_chestxray14(source: Path | None, *, min_class_count: int) -> SourceScan:
    """NIH ChestX-ray14, as downloaded from NIH or Kaggle.

    ``Data_Entry_2017.csv`` (or ``Data_Entry_2017_v2020.csv``) lists ``Image Index``,
    ``Finding Labels`` ("Cardiomegaly|Effusion", or "No Finding") and ``Patient ID``; the
    PNGs are in ``images/`` (NIH, once its tarballs are unpacked) or ``images_NNN/images/``
    (Kaggle). When ``test_list.txt`` is present, its images are the test split (the
    official, patient-disjoint test set); the rest are split 8:1 into train and validation,
    grouped by patient. Without it, all images are split 8:1:1 grouped by patient.
    """
    layout = "chestxray14"
    source = _require_source(source, layout)
    expected = ("Data_Entry_2017.csv (Image Index, Finding Labels, Patient ID, ...) and the "
                "PNGs under images/ or images_NNN/images/")
    table = next((source / n for n in _CHESTXRAY14_TABLES if (source / n).is_file()), None)
    if not source.is_dir() or table is None:
        raise _layout_error(layout, f"{source} has no Data_Entry_2017.csv.", expected)
    folders = [source / "images"] if (source / "images").is_dir() else []
    folders += sorted(p for p in source.glob("images*/images") if p.is_dir())
    located = {name: os.path.join(folder, name) for folder in folders
               for name in _list_files(folder)}
    if not located:
        raise _layout_error(layout, f"{source} has no images/ or images_NNN/images/ folder "
                                    f"with images.", expected)
    test_list = source / "test_list.txt"
    test_names = set(test_list.read_text().split()) if test_list.is_file() else set()
    builder = _ScanBuilder(list(CHESTXRAY14_FINDINGS))
    for line, row in _read_csv(table, ("Image Index", "Finding Labels", "Patient ID"), layout):
        name = row["Image Index"]
        path = located.get(name) or os.path.join(folders[0], name)
        names = {n.strip() for n in row["Finding Labels"].split("|")} - {"No Finding", ""}
        unknown = sorted(names - set(CHESTXRAY14_FINDINGS))
        findings: dict[str, int] | str = dict.fromkeys(names, 1)
        if unknown:
            findings = (f"unknown finding '{unknown[0]}' in Finding Labels (valid: "
                        f"{', '.join(CHESTXRAY14_FINDINGS)}, No Finding)")
        elif not row["Patient ID"]:
            findings = "empty Patient ID"
        builder.add_findings(os.path.splitext(name)[0], path, f"{table.name} line {line}", findings,
                             group=row["Patient ID"],
                             split="test" if name in test_names else None)
    lists = [table, *(p for p in (source / "train_val_list.txt", test_list) if p.is_file())]
    note = ("test_list.txt kept as the test split; the rest split 8:1 into train and "
            "validation, grouped by Patient ID") if test_names else None
    return builder.scan([(str(p), p.stat().st_size) for p in lists], str(source),
                        multi_label=True, group_column="Patient ID", split_note=note)
