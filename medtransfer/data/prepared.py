"""Loading a prepared dataset by name: ``load_prepared("cancer")``.

A name resolves, in this order, to: a prepared folder ``<data_dir>/<name>/`` (any name:
your own ``folder``, ``csv`` or ``medmnist`` data prepared with ``--out
datasets/NAME``); ``digits`` or ``digits_pairs``, which are prepared on first use; a
registered dataset not prepared yet, which fails with where to download it and the
``prepare`` command; or an unknown name, which fails with a did-you-mean.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medtransfer.data import shards
from medtransfer.data.catalog import MANIFEST, prepared_datasets
from medtransfer.data.images import ConvertOptions
from medtransfer.data.prepare import SPLIT_CSV, prepare_dataset
from medtransfer.data.registry import DATASETS, DatasetSpec
from medtransfer.errors import (
    MedtransferError,
    look_up_option,
    working_directory_note,
)
from medtransfer.fileio import read_json

MULTI_LABEL = "multi_label"
# Layouts for the user's own data: they have no single dataset to download.
_OWN_DATA_LAYOUTS = ("folder", "csv", "medmnist")


@dataclass(frozen=True, eq=False)
class PreparedDataset:
    """A prepared dataset folder, ready for the input pipeline.

    Attributes:
        name: the folder name, which ``run --dataset`` uses.
        path: the folder.
        manifest: the contents of ``manifest.json``.
        class_names: the classes; a label index is a position in this list. For a
            multi-label dataset, the findings.
        split: ``split.csv``: one row per image (id, label, split; multi-label: masked;
            grouped: group), in shard order.
        spec: the :class:`DatasetSpec` of the layout it was prepared from (learning
            rate and augmentation defaults).
    """

    name: str
    path: Path
    manifest: dict[str, Any] = field(repr=False)
    class_names: list[str]
    split: pd.DataFrame = field(repr=False)
    spec: DatasetSpec = field(repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def task(self) -> str:
        """``"multi_label"`` (a set of findings per image) or ``"single_label"``."""
        return str(self.manifest.get("task", "single_label"))

    @property
    def multi_label(self) -> bool:
        return self.task == "multi_label"

    def label_matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The ``(n, F)`` int8 labels of a :meth:`split_frame` of a multi-label dataset:
        1 positive, 0 negative, -1 unknown, one column per finding of ``class_names``.

        The same values as the shards' ``label`` feature, read from the frame's ``label``
        (the findings present) and ``masked`` (the findings unknown) columns.
        """
        index = {name: i for i, name in enumerate(self.class_names)}
        matrix = np.zeros((len(frame), len(index)), dtype=np.int8)
        masked = frame["masked"] if "masked" in frame else [""] * len(frame)
        for row, (present, unknown) in enumerate(zip(frame["label"], masked, strict=True)):
            for value, names in ((1, present), (-1, unknown)):
                for name in filter(None, names.split("|")):
                    matrix[row, index[name]] = value
        return matrix

    @property
    def convert_options(self) -> ConvertOptions:
        """How ``prepare`` turned each source image into the stored one (channel rule,
        the layout's own step, ``--max-size``): what ``predict`` applies to new images."""
        options = self.manifest["options"]
        return ConvertOptions(self.spec.channels, self.spec.preprocess, int(options["max_size"]),
                              options.get("image_format", "png"))

    def shard_paths(self, split: str) -> list[Path]:
        """The TFRecord files of ``split`` ("train", "validation" or "test"), in order."""
        if split not in shards.SPLITS:
            raise ValueError(f"split must be one of {shards.SPLITS}, got {split!r}")
        return [self.path / name for name in self.manifest["shards"][split]]

    def split_frame(self, split: str, classes: Sequence[str] | None = None) -> pd.DataFrame:
        """The rows of ``split.csv`` for ``split``, in shard order, indexed from 0.

        Args:
            split: "train", "validation" or "test".
            classes: keep only the rows of these classes (``--classes``); None keeps all.
        """
        if split not in shards.SPLITS:
            raise ValueError(f"split must be one of {shards.SPLITS}, got {split!r}")
        rows = self.split["split"] == split
        if classes is not None:
            rows &= self.split["label"].isin(classes)
        return self.split[rows].reset_index(drop=True)

    def label_indices(self, classes: Sequence[str] | None) -> list[int] | None:
        """The label index of each class name (the pipeline's ``keep_labels``); None for None."""
        return None if classes is None else [self.class_names.index(name) for name in classes]


def load_prepared(name: str, data_dir: Path = Path("datasets")) -> PreparedDataset:
    """Loads the prepared dataset ``name`` from ``data_dir``.

    Args:
        name: a prepared folder's name under ``data_dir``, or a registered dataset.
        data_dir: where prepared datasets live (``--data-dir``).

    Returns:
        The :class:`PreparedDataset`.

    Raises:
        MedtransferError: the dataset is not prepared (with the download and ``prepare``
            commands), the name is unknown (with a did-you-mean), or the folder was
            prepared by an incompatible version of medtransfer.
    """
    data_dir = Path(data_dir)
    folder = data_dir / name
    if not (folder / MANIFEST).is_file():
        if not _prepared_on_first_use(name):
            _raise_not_prepared(name, data_dir)
        made = "" if name == "digits" else ", two side by side"
        print(
            f"{folder} is not prepared yet; preparing it from scikit-learn's bundled "
            f"digits (1,797 images{made}, a few seconds).",
            file=sys.stderr,
            flush=True,
        )
        prepare_dataset(name, None, folder, progress=False)
    return _load_folder(folder)


def not_prepared_message(name: str, data_dir: Path = Path("datasets")) -> str | None:
    """Why :func:`load_prepared` cannot load ``name`` yet, with the ``prepare`` command;
    None when it can (a prepared folder, or ``digits`` / ``digits_pairs``, prepared on
    first use).

    Reads only whether the manifest exists, so a sweep checks its whole plan at once.
    """
    data_dir = Path(data_dir)
    if (data_dir / name / MANIFEST).is_file() or _prepared_on_first_use(name):
        return None
    try:
        _raise_not_prepared(name, data_dir)
    except MedtransferError as error:
        return str(error)
    return None


def _prepared_on_first_use(name: str) -> bool:
    """scikit-learn bundles the digits: no download, so no prepare step either."""
    return name in ("digits", "digits_pairs")


def dataset_spec(name: str, data_dir: Path = Path("datasets")) -> DatasetSpec | None:
    """The layout whose defaults (learning rate, augmentation) a dataset name trains with,
    without loading the dataset: the prepared folder's layout, else the registered dataset
    of that name; None when it is neither (it cannot be trained until prepared)."""
    try:
        layout = read_json(Path(data_dir) / name / MANIFEST).get("layout")
    except (OSError, ValueError, AttributeError):
        layout = name
    return DATASETS.get(layout) if layout in DATASETS else None


def default_findings(name: str, data_dir: Path = Path("datasets")) -> tuple[str, ...] | None:
    """The findings a run on a multi-label dataset predicts without ``--findings``: its
    layout's :attr:`DatasetSpec.default_findings`, else every finding of its manifest;
    None for a single-label dataset (or one not prepared), without loading it."""
    try:
        manifest = read_json(Path(data_dir) / name / MANIFEST)
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("task") != MULTI_LABEL:
        return None
    spec = DATASETS.get(manifest["layout"]) if manifest.get("layout") in DATASETS else None
    return (spec.default_findings if spec and spec.default_findings
            else tuple(manifest["class_names"]))


def native_image_size(name: str, data_dir: Path = Path("datasets")) -> int | None:
    """The longer side of a dataset's stored images, without loading it: the largest
    height or width in a prepared folder's manifest, else the registered dataset's fixed
    size (:attr:`DatasetSpec.native_size`); None when neither tells."""
    try:
        sizes = read_json(Path(data_dir) / name / MANIFEST)["image_size"]
        return max(int(sizes["max_height"]), int(sizes["max_width"]))
    except (OSError, ValueError, KeyError, TypeError):
        spec = DATASETS.get(name) if name in DATASETS else None
        return spec.native_size if spec else None


def _load_folder(folder: Path) -> PreparedDataset:
    try:
        manifest = read_json(folder / MANIFEST)
    except (OSError, ValueError) as error:
        raise MedtransferError(
            f"{folder / MANIFEST} cannot be read ({error}). Prepare the dataset again with "
            f"'medtransfer prepare LAYOUT --source DIR --out {folder} --force'."
        ) from None
    layout = manifest.get("layout", "?")
    again = (
        f"'medtransfer prepare {layout} --source {manifest.get('source', 'DIR')} "
        f"--out {folder} --force'"
    )
    if _prepared_on_first_use(layout):
        again = f"'medtransfer prepare {layout} --out {folder} --force'"
    version = manifest.get("format_version")
    if version not in shards.READABLE_FORMAT_VERSIONS:
        raise MedtransferError(
            f"{folder} was prepared in format version {version}, but this medtransfer reads "
            f"versions {', '.join(map(str, shards.READABLE_FORMAT_VERSIONS))}. Prepare it "
            f"again: {again}."
        )
    if layout not in DATASETS:
        raise MedtransferError(
            f"{folder / MANIFEST} names the layout '{layout}', which this medtransfer does not "
            f"know (known: {', '.join(DATASETS.names())}). Prepare it again with a known layout."
        )
    missing = [
        name
        for names in manifest["shards"].values()
        for name in names
        if not (folder / name).is_file()
    ]
    if missing or not (folder / SPLIT_CSV).is_file():
        lost = ", ".join(missing[:3]) or SPLIT_CSV
        raise MedtransferError(
            f"{folder} is incomplete: {lost} {'is' if len(missing) <= 1 else 'are'} missing. "
            f"Prepare it again: {again}."
        )
    # Ids such as "0001" or "1e5" must stay text, and an empty label must not become NaN.
    split = pd.read_csv(folder / SPLIT_CSV, dtype=str, keep_default_na=False)
    return PreparedDataset(
        name=folder.name,
        path=folder,
        manifest=manifest,
        class_names=list(manifest["class_names"]),
        split=split,
        spec=DATASETS.get(layout),
    )


def _raise_not_prepared(name: str, data_dir: Path) -> None:
    out = "" if data_dir == Path("datasets") else f" --out {data_dir / name}"
    if name in _OWN_DATA_LAYOUTS:
        spec = DATASETS.get(name)
        raise MedtransferError(
            f"'{name}' is a layout for your own data, not a dataset: prepare your data under "
            f"a name of your choice with 'medtransfer prepare {name} --source "
            f"{'FILE' if name == 'csv' else 'DIR'} --out {data_dir / 'NAME'}', then use "
            f"--dataset NAME. {spec.description}"
        )
    if name in DATASETS:
        spec = DATASETS.get(name)
        raise MedtransferError(
            f"Dataset '{name}' is not prepared yet ({data_dir / name}/manifest.json does not "
            f"exist{working_directory_note(data_dir)}). Download it: {spec.download} Then "
            f"prepare it once: 'medtransfer prepare {name} --source DIR{out}', with DIR the "
            "unzipped folder."
        )
    prepared = [summary.name for summary in prepared_datasets(data_dir)]
    choices = [*DATASETS.names(), *(p for p in prepared if p not in DATASETS)]
    try:
        look_up_option(name, choices, "dataset")
    except MedtransferError as error:
        out = data_dir / name
        raise MedtransferError(
            f"{error} Prepared datasets are looked for in {data_dir}"
            f"{working_directory_note(data_dir)}; pass --data-dir to look elsewhere. If "
            f"'{name}' is your own data, prepare it once under that name: 'medtransfer "
            f"prepare folder --source DIR --out {out}' (DIR holding one sub-folder of "
            f"images per class), 'medtransfer prepare csv --source FILE.csv --out {out}' "
            f"(a CSV with the columns path and label) or 'medtransfer prepare medmnist "
            f"--source FILE.npz --out {out}' (a MedMNIST file); then run --dataset {name}."
        ) from None
