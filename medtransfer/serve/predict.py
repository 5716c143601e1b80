"""``medtransfer predict``: a finished run's best checkpoint applied to new images.

Each image goes the way the run's own images went, through the same code:

    file(s) -> prepare's decoding, channel rule, layout step (retina's fundus crop,
               proteins' stain stacking) and downsizing to the dataset's --max-size
            -> the pipeline's resize to the run's image size, [0, 1] scaling and the
               net's preprocess_input under --scaling native
            -> the best checkpoint

``prepare`` then stores the pixels losslessly (BMP or PNG), so that step is skipped.
An image that cannot be read is listed with the reason and the others go on.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.images import COLOR, GRAY, ConvertOptions, ImageRejected, prepared_pixels
from medtransfer.data.sources import (
    PROTEIN_STAIN_FILE,
    Candidate,
    image_files,
    protein_stain_files,
)
from medtransfer.errors import MedtransferError
from medtransfer.training.rundir import TrainedRun, open_run

REJECTED_SUFFIX = ".rejected.csv"


@dataclass(frozen=True)
class PredictResult:
    """What :func:`predict_images` wrote.

    Attributes:
        out: the predictions CSV (path, predicted, one ``prob_<class>`` per class; a
            multi-label run: ``predicted`` the findings at probability 0.5 or more,
            ``|``-joined, and ``prob_<finding>`` per finding).
        predicted: how many images it holds.
        rejected: ``(path, reason)`` of every input that could not be used.
        rejected_file: the CSV listing them, or None when every input was used.
    """

    out: Path
    predicted: int
    rejected: list[tuple[str, str]]
    rejected_file: Path | None


@dataclass(frozen=True)
class _Image:
    """One image to predict: what the CSV calls it, and where its pixels are."""

    name: str
    candidate: Candidate
    channels: str | None = None  # None: the dataset's own channel rule


def predict_images(
    run_dir: str | Path,
    inputs: Sequence[str | Path],
    *,
    out: str | Path = "predictions.csv",
    batch_size: int | None = None,
) -> PredictResult:
    """Predicts the class of every input image with a finished run's best checkpoint.

    Args:
        run_dir: a complete run directory.
        inputs: image files, folders (every file under them, recursively, sorted), or CSV
            files with a ``path`` column (relative paths are relative to the CSV). For a
            run on ``proteins``, stain files ``<Id>_<stain>.png`` are stacked into one
            image per ``<Id>`` (red, green, blue); other files must be RGB.
        out: the predictions CSV; rejected inputs go to ``<out stem>.rejected.csv``.
        batch_size: images per forward pass (default: the run's batch size).

    Returns:
        A :class:`PredictResult`.

    Raises:
        MedtransferError: the run is not complete, its prepared dataset is gone, a CSV
            has no ``path`` column, ``batch_size`` is below 1, or no input image could be
            read (the reasons are listed).
    """
    out = Path(out)
    rejected_file = out.with_name(out.stem + REJECTED_SUFFIX)
    frame = _prediction_frame(run_dir, inputs, batch_size)
    rejected = frame.attrs["rejected"]
    class_columns = [column for column in frame.columns if column.startswith("prob_")]
    _write_csv(out, ["path", "predicted", *class_columns], (
        [path, predicted, *(f"{p:.8g}" for p in probabilities)]
        for path, predicted, probabilities in zip(
            frame["path"], frame["predicted"], frame[class_columns].to_numpy(), strict=True)
    ))
    if rejected:
        _write_csv(rejected_file, ["path", "reason"], rejected)
    else:
        rejected_file.unlink(missing_ok=True)
    if frame.empty:
        raise MedtransferError(_none_readable(rejected, f"the full list is in {rejected_file}"))
    return PredictResult(out, len(frame), rejected, rejected_file if rejected else None)


def predict_frame(run_dir: str | Path, inputs: Sequence[str | Path], *,
                  batch_size: int | None = None) -> pd.DataFrame:
    """The predictions of :func:`predict_images` as a DataFrame, without writing files.

    Returns:
        One row per readable image: ``path``, ``predicted`` and ``prob_<class>`` (float)
        per class, in input order. ``.attrs["rejected"]`` lists the ``(path, reason)``
        of every input that could not be read.

    Raises:
        MedtransferError: as :func:`predict_images`.
    """
    frame = _prediction_frame(run_dir, inputs, batch_size)
    if frame.empty:
        raise MedtransferError(_none_readable(frame.attrs["rejected"], "each is named above"))
    return frame


def _prediction_frame(run_dir: str | Path, inputs: Sequence[str | Path],
                      batch_size: int | None) -> pd.DataFrame:
    if batch_size is not None and batch_size < 1:
        raise MedtransferError(f"--batch-size {batch_size} must be a whole number ≥ 1.")
    run = open_run(run_dir, "predict")
    options = _prepared_dataset(run).convert_options
    images, rejected = _collect(inputs, stacks=options.channels == GRAY)
    rows = _probabilities(run, images, options, rejected, batch_size or run.config.batch_size)
    class_names = run.class_names()
    frame = pd.DataFrame(
        [[images[index].name, _predicted(row, class_names, run.config.multi_label), *row]
         for index, row in rows],
        columns=["path", "predicted", *(f"prob_{name}" for name in class_names)])
    frame.attrs["rejected"] = rejected
    return frame


def _predicted(probabilities: np.ndarray, class_names: list[str], multi_label: bool) -> str:
    """The ``predicted`` column: the most probable class; for a multi-label run, every
    finding with a probability of at least 0.5, ``|``-joined in the run's finding order as
    in split.csv ("" when none is)."""
    from medtransfer.training.metrics import THRESHOLD

    if multi_label:
        return "|".join(name for name, p in zip(class_names, probabilities, strict=True)
                        if p >= THRESHOLD)
    return class_names[int(np.argmax(probabilities))]


def _none_readable(rejected: list[tuple[str, str]], where: str) -> str:
    listing = "; ".join(f"{path}: {reason}" for path, reason in rejected[:5])
    more = f" (and {len(rejected) - 5} more)" if len(rejected) > 5 else ""
    return (
        f"predict: none of the {len(rejected)} input image(s) could be read: "
        f"{listing or 'no image files found'}{more}. Give image files, folders of images "
        f"or a CSV with a path column; {where}."
    )


def _probabilities(run: TrainedRun, images: list[_Image], options: ConvertOptions,
                   rejected: list[tuple[str, str]], batch_size: int
                   ) -> list[tuple[int, np.ndarray]]:
    """(index into ``images``, class probabilities) of every image that could be read.

    Each image is prepared as ``prepare`` prepared the run's dataset (``options``), then
    resized and scaled by the training pipeline's own functions. An image that cannot be
    read is appended to ``rejected`` with the reason, and named on stderr.
    """
    import tensorflow as tf

    from medtransfer.data.pipeline import (
        apply_scaling,
        resize_image,
        to_unit_range,
        without_autograph,
    )

    def decoded() -> Iterator[tuple[np.ndarray, int]]:
        for index, image in enumerate(images):
            try:
                rgb = prepared_pixels(image.candidate, _with_channels(options, image.channels))
            except ImageRejected as error:
                reason = error.reason if error.path is None else f"{error.path}: {error.reason}"
                rejected.append((image.name, reason))
                print(f"rejected {image.name}: {reason}", file=sys.stderr, flush=True)
                continue
            yield rgb, index

    image_size, preprocess = run.config.image_size, run.preprocess()
    batches = (
        tf.data.Dataset.from_generator(decoded, output_signature=(
            tf.TensorSpec((None, None, 3), tf.uint8), tf.TensorSpec((), tf.int64)))
        .map(without_autograph(
            lambda rgb, index: (to_unit_range(resize_image(rgb, image_size)), index)))
        .batch(batch_size)
        .map(without_autograph(lambda pixels, index: (apply_scaling(pixels, preprocess), index)))
    )
    model = run.model()
    rows = []
    for pixels, indices in batches:
        probabilities = np.asarray(model.predict_on_batch(pixels), dtype=np.float64)
        rows.extend(zip(indices.numpy(), probabilities, strict=True))
    return rows


def _prepared_dataset(run: TrainedRun):
    try:
        return run.dataset()
    except MedtransferError as error:
        raise MedtransferError(
            f"predict needs the prepared dataset run {run.path} was trained on: its "
            "manifest.json says how images were prepared and names the classes. It was "
            f"not found under data_dir '{run.config.data_dir}' (config.yaml; a relative "
            f"path is relative to where you run medtransfer): {error}"
        ) from None


def _with_channels(options: ConvertOptions, channels: str | None) -> ConvertOptions:
    if channels is None or channels == options.channels:
        return options
    return replace(options, channels=channels)


def _collect(
    inputs: Sequence[str | Path], stacks: bool
) -> tuple[list[_Image], list[tuple[str, str]]]:
    """Expands the inputs into images, in order; inputs that do not exist are rejected.

    With ``stacks`` (proteins), stain files of one ``<Id>`` in one folder become one image.
    """
    files: list[str] = []
    rejected: list[tuple[str, str]] = []
    for given in inputs:
        path = Path(given).expanduser()
        if path.is_file() and path.suffix.lower() == ".csv":
            entries = [path.parent / entry for entry in _csv_paths(path)]
        else:
            entries = [path]
        for entry in entries:
            if entry.is_dir():
                found = [str(file) for file in image_files(entry)]
                files.extend(found)
                if not found:
                    rejected.append((str(entry), "empty folder"))
            elif entry.is_file():
                files.append(str(entry))
            else:
                rejected.append((str(entry), "missing file"))
    for path, reason in rejected:
        print(f"rejected {path}: {reason}", file=sys.stderr, flush=True)
    if not stacks:
        return [_Image(file, Candidate(file, "", (file,))) for file in files], rejected
    images: dict[str, _Image] = {}
    for file in files:
        match = PROTEIN_STAIN_FILE.match(os.path.basename(file))
        if match is None:
            images.setdefault(file, _Image(file, Candidate(file, "", (file,)), COLOR))
            continue
        stem = os.path.join(os.path.dirname(file), match["id"])
        paths = tuple(os.path.join(os.path.dirname(file), name)
                      for name in protein_stain_files(match["id"]))
        images.setdefault(stem, _Image(stem, Candidate(stem, "", paths), GRAY))
    return list(images.values()), rejected


def _csv_paths(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8-sig") as stream:
        reader = csv.DictReader(stream)
        header = [name.strip() for name in reader.fieldnames or []]
        if "path" not in header:
            raise MedtransferError(
                f"predict: {path} has no column 'path' (its columns: "
                f"{', '.join(header) or 'none'}). A CSV input lists one image per row in a "
                "column named path (relative paths are relative to the CSV); rename its "
                "header, or pass the images or their folder instead."
            )
        reader.fieldnames = header
        return [row["path"].strip() for row in reader if (row.get("path") or "").strip()]


def _write_csv(path: Path, header: list[str], rows) -> None:
    """Writes the whole CSV or nothing (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.tmp")
    with staged.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(staged, path)
