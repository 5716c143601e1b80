"""``prepare``: a downloaded dataset -> a prepared folder every run shares.

    datasets/<name>/
        train-00000.tfrecord ...   the images, BMP or PNG in TFRecord (see ``shards``)
        split.csv                  id,label,split: one row per kept image, shard order
                                   (multi-label: also masked; grouped: also group)
        rejected.csv               path,id,reason: one row per image left out
        manifest.json              written last and atomically: its presence marks a
                                   complete prepare

The steps: the layout's reader scans the source (no decoding); a thread per core decodes
every image (OpenCV), converts it to 8-bit RGB, applies the layout's preprocessing,
shrinks it to ``max_size`` and encodes it (BMP or PNG) into a staging file; the images that
fail are rejected with a reason; the survivors are split 8:1:1 (or keep MedMNIST's
official splits; grouped by patient, by iterative stratification, whenever the source has
a group id or is multi-label) and copied from the staging file into the shards in ``split.csv``
order; ``manifest.json`` comes last.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import math
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, TypeVar

import pandas as pd

from medtransfer.data import images, shards
from medtransfer.data.catalog import MANIFEST
from medtransfer.data.registry import DatasetSpec, get_dataset
from medtransfer.data.sources import DEFAULT_MIN_CLASS_COUNT, Candidate, Rejection, SourceScan
from medtransfer.data.split import FRACTIONS, check_class_sizes, grouped_split, stratified_split
from medtransfer.errors import MedtransferError, look_up_option
from medtransfer.fileio import read_json, write_json_atomic
from medtransfer.machine import usable_cores
from medtransfer.options import IMAGE_FORMATS, check_seed
from medtransfer.progress import notebook_bar
from medtransfer.version import __version__

__all__ = ["DEFAULT_MIN_CLASS_COUNT", "PrepareResult", "prepare_dataset"]

SPLIT_CSV = "split.csv"
REJECTED_CSV = "rejected.csv"
_STAGING = ".prepare-staging.bin"
# fileio.write_json_atomic stages manifest.json as ".manifest.json.<random>.tmp".
_MANIFEST_TEMP_PREFIX = ".manifest.json."
# Results a conversion thread may compute ahead of the one being stored.
_AHEAD_PER_THREAD = 4
_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True)
class PrepareResult:
    """What ``prepare_dataset`` did.

    Attributes:
        path: the prepared dataset's folder.
        skipped: True when the folder was already prepared with the same arguments.
        counts: images per class per split, ``{split: {class: n}}``.
        num_rejected: images rejected as bad input (excludes the protein selection rule).
        num_excluded: images left out by the dataset's selection rule.
        class_names: the classes in label-index order.
        manifest: the contents of ``manifest.json``.
    """

    path: Path
    skipped: bool
    counts: dict[str, dict[str, int]]
    num_rejected: int
    num_excluded: int
    class_names: list[str]
    manifest: dict[str, Any]


def prepare_dataset(
    layout: str,
    source: Path | None,
    out: Path,
    *,
    seed: int = 0,
    max_reject: float = 0.01,
    max_size: int = 512,
    image_format: str = "bmp",
    min_class_count: int = DEFAULT_MIN_CLASS_COUNT,
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
    layout_options: Mapping[str, Any] | None = None,
) -> PrepareResult:
    """Prepares a downloaded dataset for training (``medtransfer prepare``).

    Args:
        layout: a registered dataset layout (``cancer``, ``retina``, ``folder``, ...).
        source: the downloaded data (``--source``): a folder, the CSV file for ``csv``,
            the ``.npz`` (or its folder) for ``medmnist``; None for ``digits``.
        out: the prepared dataset's folder (``--out``), e.g. ``datasets/cancer``; its
            name is the dataset name ``run --dataset`` uses.
        seed: seed of the stratified split (``--seed``).
        max_reject: the largest fraction of images that may be rejected as bad input
            before ``prepare`` fails (``--max-reject``).
        max_size: the stored images' longer side is at most this (``--max-size``);
            smaller images are never enlarged.
        image_format: how the images are stored (``--image-format``): ``bmp`` (raw
            pixels, fastest to decode) or ``png`` (smaller on disk); both lossless.
        min_class_count: proteins only: a class joins the single-label subset with at
            least this many single-label images (``--min-class-count``).
        workers: conversion threads (``--workers``); default: every core this process
            may use.
        force: prepare again even when ``out`` is already prepared (``--force``).
        progress: show a progress line on stderr (``--no-progress`` turns it off).
        layout_options: the layout's own options, those its ``DatasetSpec.options``
            names (chexpert: ``views``, ``uncertain``; csv: ``label_columns``,
            ``labels_column``, ``labels_sep``, ``group_column``); None values are left out.

    Returns:
        A :class:`PrepareResult`; ``skipped`` is True when nothing needed doing.

    Raises:
        MedtransferError: bad arguments, an unrecognised source layout, a class too
            small to split, more than ``max_reject`` of the images rejected, or ``out``
            already prepared from another source or with other options.
    """
    spec = get_dataset(layout)
    _check_arguments(seed, max_reject, max_size, image_format, min_class_count, workers)
    out = Path(out)
    source = _resolve_source(source, out)
    given = {k: v for k, v in (layout_options or {}).items() if v is not None}
    _check_layout_options(spec, given)
    scan = spec.reader(source, min_class_count=min_class_count, **given)
    plan = _Plan(spec, scan, out, seed, max_size, image_format, max_reject, min_class_count)

    existing = read_manifest(out)
    if existing is not None and not force:
        _refuse_unless_same(plan, existing)
        return _result(out, existing, skipped=True)
    out.mkdir(parents=True, exist_ok=True)
    remove_prepare_files(out)

    rejected, excluded = list(scan.rejected), list(scan.excluded)
    total = len(scan.candidates) + len(rejected)
    if total == 0:
        raise MedtransferError(
            f"Found no images in {scan.source_label} for the {layout} layout. Check "
            f"--source; datasets/README.md shows the layout prepare expects."
        )
    # Fail before hours of decoding when the scan alone already decides the outcome.
    _check_reject_fraction(plan, rejected, excluded, total, decoded=False)
    if not scan.official_splits and not scan.multi_label:
        check_class_sizes(Counter(c.label for c in scan.candidates), plan.split_hint)

    staging = out / _STAGING
    try:
        kept, details = _convert_all(plan, staging, workers, _Progress(out.name, progress))
        for index, candidate in enumerate(scan.candidates):
            if index not in kept:
                reason, path = details[index]
                rejected.append(Rejection(path or candidate.path, candidate.id, reason))
        _check_reject_fraction(plan, rejected, excluded, total, decoded=True)
        split, shard_names, warnings = _write_shards(plan, kept, staging)
    finally:
        staging.unlink(missing_ok=True)
    split.to_csv(out / SPLIT_CSV, index=False)
    for warning in warnings:
        _say(f"warning: {warning}")

    manifest = _manifest(plan, split, shard_names, shapes=[details[i] for i in kept],
                         num_rejected=len(rejected), num_excluded=len(excluded), total=total,
                         warnings=warnings)
    write_json_atomic(out / MANIFEST, manifest)
    return _result(out, manifest, skipped=False)


def _check_layout_options(spec: DatasetSpec, given: Mapping[str, Any]) -> None:
    """Refuses a layout option the layout does not have (``--views`` for cancer, ...)."""
    wrong = [name for name in given if name not in spec.options]
    if wrong:
        flags = ", ".join("--" + name.replace("_", "-") for name in wrong)
        valid = ", ".join("--" + name.replace("_", "-") for name in spec.options) or "none"
        raise MedtransferError(
            f"{flags} {'does' if len(wrong) == 1 else 'do'} not apply to the {spec.name} "
            f"layout (its own options: {valid}). Leave {'it' if len(wrong) == 1 else 'them'} "
            f"out, or choose the layout {'it belongs' if len(wrong) == 1 else 'they belong'} "
            f"to; datasets/README.md lists every layout's options."
        )


def _resolve_source(source: Path | None, out: Path) -> Path | None:
    """``--source`` as an absolute path; refuses an ``--out`` inside it."""
    if source is None:
        return None
    source = Path(source).expanduser().resolve()
    if source.is_dir() and out.resolve().is_relative_to(source):
        raise MedtransferError(
            f"--out {out} is inside --source {source}; prepare would mix its output "
            f"with the downloaded files. Choose an --out outside it, e.g. "
            f"datasets/{out.name}."
        )
    return source


def _refuse_unless_same(plan: _Plan, existing: dict[str, Any]) -> None:
    """Says "nothing to do" when ``existing`` was prepared as ``plan`` would; refuses otherwise."""
    if existing.get("fingerprint") != plan.fingerprint:
        raise MedtransferError(
            f"{plan.out} is already prepared, {plan.difference(existing)}. Runs that used it "
            f"depend on its split, so it is not replaced silently: pass --force to prepare "
            f"it again, or choose another --out."
        )
    # Only the arguments that change the data are compared (_Plan.significant).
    recorded = existing.get("options", {}).get("max_reject", plan.max_reject)
    aside = (
        f" (--max-reject {plan.max_reject:g} differs from the {recorded:g} it was prepared "
        f"with, but it only decides whether a prepare succeeds, not the data)"
        if recorded != plan.max_reject else ""
    )
    _say(
        f"{plan.out} is already prepared ({_summary(existing)}); nothing to do{aside}. Use "
        f"--force to prepare it again."
    )


def _manifest(plan: _Plan, split: pd.DataFrame, shard_names: list[str], *,
              shapes: list[tuple[int, int]], num_rejected: int, num_excluded: int,
              total: int, warnings: list[str]) -> dict[str, Any]:
    """The prepared dataset's ``manifest.json``: what it holds and how it was made."""
    spec, scan = plan.spec, plan.scan
    multi = scan.multi_label
    return {
        "format_version": shards.MULTI_LABEL_FORMAT_VERSION if multi else shards.FORMAT_VERSION,
        "task": "multi_label" if multi else "single_label",
        "name": plan.out.resolve().name,
        "layout": spec.name,
        "source": scan.source_label,
        "created": datetime.now(UTC).astimezone().isoformat(timespec="seconds"),
        "medtransfer_version": __version__,
        "seed": plan.seed,
        "options": {
            "max_size": plan.max_size,
            "image_format": plan.image_format,
            "max_reject": plan.max_reject,
            "min_class_count": plan.min_class_count,
            **scan.options,
        },
        "class_names": scan.class_names,
        "num_classes": len(scan.class_names),
        "counts": _counts(split, scan.class_names, multi),
        **(_multi_label_counts(split, scan.class_names) if multi else {}),
        "group_column": scan.group_column,
        "totals": {
            **{s: int((split["split"] == s).sum()) for s in shards.SPLITS},
            "all": len(split),
        },
        "num_rejected": num_rejected,
        "num_excluded": num_excluded,
        "reject_fraction": round(num_rejected / total, 6),
        "shards": shard_names,
        "split": _split_text(plan),
        "split_warnings": warnings,
        "preprocessing": _preprocessing_text(spec, scan, plan.max_size, plan.image_format),
        "image_size": {
            "min_height": min(h for h, _ in shapes),
            "max_height": max(h for h, _ in shapes),
            "min_width": min(w for _, w in shapes),
            "max_width": max(w for _, w in shapes),
        },
        "selection": _selection_with_counts(scan.selection, split),
        "fingerprint": plan.fingerprint,
    }


@dataclass(frozen=True)
class _Plan:
    """What one prepare call works from, once the source is scanned."""

    spec: DatasetSpec
    scan: SourceScan
    out: Path
    seed: int
    max_size: int
    image_format: str
    max_reject: float
    min_class_count: int

    def significant(self) -> dict[str, Any]:
        """The arguments that change the prepared data (``max_reject`` does not: it only
        decides whether prepare succeeds; ``min_class_count`` only for a selection rule)."""
        values = {
            "layout": self.spec.name,
            "source": self.scan.source_label,
            "seed": self.seed,
            "max_size": self.max_size,
            "image_format": self.image_format,
            **self.scan.options,
        }
        if self.scan.selection is not None:
            values["min_class_count"] = self.min_class_count
        return values

    @property
    def fingerprint(self) -> str:
        """A hash of the significant arguments and every source file's name and size."""
        digest = hashlib.sha256(json.dumps(self.significant(), sort_keys=True).encode())
        for path, size in sorted(self.scan.files):
            digest.update(f"\n{path}\t{size}".encode())
        return "sha256:" + digest.hexdigest()

    def difference(self, manifest: dict[str, Any]) -> str:
        """Says how a prepared folder's manifest differs from this plan."""
        recorded = {**manifest.get("options", {}), **manifest}
        changed = [
            f"{key} {recorded.get(key)} (now {value})"
            for key, value in self.significant().items()
            if recorded.get(key) != value
        ]
        if changed:
            return "but with " + ", ".join(changed)
        return "but the source files changed since (names or sizes differ)"

    @property
    def split_hint(self) -> str:
        if self.scan.selection is not None:
            return " Or raise --min-class-count to leave small classes out of the subset."
        if self.spec.name == "folder":
            return " (A class is a subfolder: remove or merge it.)"
        return ""


def _split_text(plan: _Plan) -> str:
    scan = plan.scan
    if scan.official_splits:
        return "official splits of the source"
    if scan.split_note:
        return f"{scan.split_note} (iterative stratification, seed {plan.seed})"
    if scan.multi_label or scan.group_column:
        by = f"grouped by {scan.group_column}" if scan.group_column else "per image"
        return (f"train:validation:test = 8:1:1 of the groups, {by}, iterative "
                f"stratification over the {'findings' if scan.multi_label else 'classes'}, "
                f"seed {plan.seed}")
    return f"stratified train:validation:test = 8:1:1, seed {plan.seed}"


def _split_frame(plan: _Plan, survivors: list[Candidate]) -> tuple[pd.DataFrame, list[str]]:
    """The split of the kept images: official, grouped (a group id or multi-label) or
    stratified by class; and the split's warnings (findings too rare for every split)."""
    scan = plan.scan
    grouped = scan.multi_label or scan.group_column is not None
    columns = ["id", "label", "split", *(["masked"] if scan.multi_label else []),
               *(["group"] if scan.group_column else [])]
    frame = pd.DataFrame({
        "id": [c.id for c in survivors],
        "label": [c.label for c in survivors],
        "split": [c.split for c in survivors],
        "masked": [c.masked for c in survivors],
        # Without a group column every image is its own group.
        "group": [c.group if c.group is not None else c.id for c in survivors],
    })
    order = {name: i for i, name in enumerate(shards.SPLITS)}
    if scan.official_splits:
        frame = frame.sort_values("split", key=lambda s: s.map(order), kind="stable")
        return frame.reset_index(drop=True)[columns], []
    if not grouped:
        split = stratified_split(frame["id"].tolist(), frame["label"].tolist(),
                                 scan.class_names, plan.seed, plan.split_hint)
        return split, []
    # Candidates with their own split (ChestX-ray14's test list) keep it; the others fill
    # the remaining splits in proportion to the 8:1:1 fractions.
    fixed = frame[frame["split"].notna()]
    free = [s for s in shards.SPLITS if s not in set(fixed["split"])]
    shares = [FRACTIONS[shards.SPLITS.index(s)] for s in free]
    split, warnings = grouped_split(
        frame[frame["split"].isna()].drop(columns="split"), scan.class_names, plan.seed,
        scan.multi_label, splits=free, fractions=[share / sum(shares) for share in shares])
    split = pd.concat([split, fixed], ignore_index=True)
    split = split.sort_values("split", key=lambda s: s.map(order), kind="stable")
    return split.reset_index(drop=True)[columns], warnings


def _write_shards(
    plan: _Plan, kept: dict[int, tuple[int, int]], staging: Path
) -> tuple[pd.DataFrame, dict[str, list[str]], list[str]]:
    """Splits the kept images and copies their encoded images from ``staging`` into the shards.

    Returns:
        The split frame (id, label, split, and masked and group when the dataset has them;
        rows in shard order), the shard file names of each split, and the split's warnings.
    """
    candidates = plan.scan.candidates
    survivors = [c for i, c in enumerate(candidates) if i in kept]
    split, warnings = _split_frame(plan, survivors)
    class_index = {name: i for i, name in enumerate(plan.scan.class_names)}
    if plan.scan.multi_label:
        def encode(row) -> list[int]:
            vector = [0] * len(class_index)
            for value, names in ((1, row.label), (-1, row.masked)):
                for name in filter(None, names.split("|")):
                    vector[class_index[name]] = value
            return vector
    else:
        def encode(row) -> int:
            return class_index[row.label]
    location = {c.id: kept[i] for i, c in enumerate(candidates) if i in kept}
    shard_names = {}
    with open(staging, "rb") as staged:
        for split_name in shards.SPLITS:
            rows = split[split["split"] == split_name]
            records = (
                (row.id, encode(row), _read_staged(staged, location[row.id]))
                for row in rows.itertuples(index=False)
            )
            shard_names[split_name] = shards.write_split_shards(plan.out, split_name, records)
    return split, shard_names, warnings


# --- the decoding pass -------------------------------------------------------------------


def _convert_all(
    plan: _Plan, staging: Path, workers: int | None, progress: _Progress
) -> tuple[dict[int, tuple[int, int]], dict[int, Any]]:
    """Converts every candidate in ``workers`` threads, appending the encoded images to
    ``staging`` in candidate order.

    Returns:
        ``kept``: candidate index -> (offset, length) of its image in ``staging``, and
        ``details``: candidate index -> (height, width) when kept, else (reason, path).
    """
    options = images.ConvertOptions(plan.spec.channels, plan.spec.preprocess, plan.max_size,
                                    plan.image_format)
    convert = functools.partial(images.convert_indexed, options=options)
    kept: dict[int, tuple[int, int]] = {}
    details: dict[int, Any] = {}
    progress.start(len(plan.scan.candidates))
    results = _map_in_threads(convert, enumerate(plan.scan.candidates),
                              workers or usable_cores())
    # closing: should storing an image fail, the threads stop at once, not when the
    # error's traceback lets go of the generator.
    with open(staging, "wb") as staged, images.opencv_for_our_threads(), closing(results):
        for index, encoded, reason, path, height, width in results:
            if encoded is None:
                details[index] = (reason, path)
            else:
                kept[index] = (staged.tell(), len(encoded))
                staged.write(encoded)
                details[index] = (height, width)
            progress.advance()
    progress.finish()
    return kept, details


def _map_in_threads(
    function: Callable[[_T], _R], items: Iterable[_T], threads: int
) -> Iterator[_R]:
    """``map(function, items)`` computed by ``threads`` threads, in order.

    At most ``_AHEAD_PER_THREAD`` results per thread are computed ahead of the one the
    caller waits for, so memory stays bounded however many items there are. When the
    caller stops early (an error, Ctrl-C), the items not started are cancelled and the
    ones running are waited for.
    """
    if threads == 1:
        yield from map(function, items)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="medtransfer-prepare") as pool:
        pending: deque[Future[_R]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(function, item))
                if len(pending) >= _AHEAD_PER_THREAD * threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _read_staged(staged, location: tuple[int, int]) -> bytes:
    offset, length = location
    staged.seek(offset)
    return staged.read(length)


# --- checks and messages -----------------------------------------------------------------


def _check_arguments(
    seed: int, max_reject: float, max_size: int, image_format: str, min_class_count: int,
    workers: int | None,
) -> None:
    check_seed(seed, "--seed")
    if not 0 <= max_reject < 1:
        raise MedtransferError(
            f"--max-reject must be a fraction in [0, 1), got {max_reject}; e.g. 0.01 allows "
            f"1% of the images to be rejected."
        )
    if max_size < 8:
        raise MedtransferError(f"--max-size must be at least 8 pixels, got {max_size}.")
    look_up_option(image_format, IMAGE_FORMATS, "image format",
                   see="bmp: raw pixels, the fastest to decode; png: smaller on disk. Both "
                       "are lossless (--image-format).")
    if min_class_count < 1:
        raise MedtransferError(f"--min-class-count must be at least 1, got {min_class_count}.")
    if workers is not None and workers < 1:
        raise MedtransferError(f"--workers must be at least 1, got {workers}.")


def _check_reject_fraction(
    plan: _Plan, rejected: list[Rejection], excluded: list[Rejection], total: int, decoded: bool
) -> None:
    """Fails with the numbers and the path of ``rejected.csv`` when too many are rejected;
    ``rejected.csv`` is written first so the user can look, and no manifest is written."""
    out, max_reject = plan.out, plan.max_reject
    if decoded or len(rejected) / total > max_reject:
        write_rejected(out / REJECTED_CSV, rejected, excluded)
    if len(rejected) / total <= max_reject:
        return
    (out / _STAGING).unlink(missing_ok=True)
    reasons = Counter(r.reason.split(" (")[0] for r in rejected).most_common(3)
    common = ", ".join(f"{n} {reason}" for reason, n in reasons)
    before = "" if decoded else " before decoding (the rest were not decoded)"
    raise MedtransferError(
        f"{len(rejected):,} of {total:,} images ({len(rejected) / total:.1%}) were rejected"
        f"{before}, more than --max-reject {max_reject:g} ({max_reject:.1%}) allows; most "
        f"often: {common}. See {out / REJECTED_CSV} for every file and its reason, fix or "
        f"remove those files, or raise --max-reject to accept the loss. Nothing was "
        f"prepared (no manifest.json)."
    )


def _summary(manifest: dict[str, Any]) -> str:
    totals = manifest.get("totals", {})
    return (
        f"{totals.get('all', 0):,} images, {manifest.get('num_classes')} classes, "
        f"created {manifest.get('created')}"
    )


def _preprocessing_text(spec: DatasetSpec, scan: SourceScan, max_size: int,
                        image_format: str) -> str:
    steps = ["decoded with OpenCV to 8-bit RGB"]
    if spec.preprocessing:
        steps.append(spec.preprocessing)
    if scan.selection is not None:
        steps.append(scan.selection["rule"])
    steps.append(f"longer side ≤ {max_size} px (area interpolation; never enlarged)")
    steps.append(f"stored as {image_format.upper()} (lossless)")
    return "; ".join(steps)


def _counts(split: pd.DataFrame, class_names: list[str], multi_label: bool = False
            ) -> dict[str, dict[str, int]]:
    """Images per class per split; multi-label: positive images per finding per split."""
    if multi_label:
        return _per_finding(split, "label", class_names, keep_zero=True)
    table = split.groupby(["split", "label"]).size()
    return {s: {name: int(table.get((s, name), 0)) for name in class_names} for s in shards.SPLITS}


def _per_finding(split: pd.DataFrame, column: str, class_names: list[str], keep_zero: bool
                 ) -> dict[str, dict[str, int]]:
    rows = split.assign(name=split[column].str.split("|")).explode("name")
    table = rows.groupby(["split", "name"]).size()
    return {s: {name: int(table.get((s, name), 0)) for name in class_names
                if keep_zero or table.get((s, name), 0)} for s in shards.SPLITS}


def _multi_label_counts(split: pd.DataFrame, class_names: list[str]) -> dict[str, Any]:
    """A multi-label manifest's images per split and unknown labels per finding per split."""
    return {
        "images": {s: int((split["split"] == s).sum()) for s in shards.SPLITS},
        "masked": _per_finding(split, "masked", class_names, keep_zero=False),
    }


def _selection_with_counts(
    selection: dict[str, Any] | None, split: pd.DataFrame
) -> dict[str, Any] | None:
    if selection is None:
        return None
    kept = split["label"].value_counts()
    return {
        **selection,
        "prepared_per_class": {name: int(kept.get(name, 0)) for name in selection["kept_classes"]},
        "prepared_images": len(split),
    }


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _result(out: Path, manifest: dict[str, Any], skipped: bool) -> PrepareResult:
    return PrepareResult(
        path=out,
        skipped=skipped,
        counts=manifest["counts"],
        num_rejected=manifest["num_rejected"],
        num_excluded=manifest.get("num_excluded", 0),
        class_names=list(manifest["class_names"]),
        manifest=manifest,
    )


# --- files -------------------------------------------------------------------------------


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """Returns the folder's manifest when it marks a complete prepare of this format.

    A missing, unreadable or other-format manifest, or one whose ``split.csv`` or shards
    are gone, gives None: the folder does not hold a usable prepared dataset.
    """
    try:
        manifest = read_json(folder / MANIFEST)
    except (OSError, ValueError):
        return None
    written = (shards.FORMAT_VERSION, shards.MULTI_LABEL_FORMAT_VERSION)
    if not isinstance(manifest, dict) or manifest.get("format_version") not in written:
        return None
    names = [name for split in manifest.get("shards", {}).values() for name in split]
    if not (folder / SPLIT_CSV).is_file() or not all((folder / n).is_file() for n in names):
        return None
    return manifest


def remove_prepare_files(folder: Path) -> None:
    """Deletes what an earlier (possibly interrupted) prepare wrote, and nothing else.

    The manifest goes first, so that a folder is never left with a manifest describing
    shards that are already gone.
    """
    (folder / MANIFEST).unlink(missing_ok=True)
    for path in folder.iterdir():
        name = path.name
        ours = (
            name in (SPLIT_CSV, REJECTED_CSV, _STAGING)
            or name.startswith(_MANIFEST_TEMP_PREFIX)
            or (_is_shard_name(name))
        )
        if ours and path.is_file():
            path.unlink()


def _is_shard_name(name: str) -> bool:
    split, _, rest = name.partition("-")
    return split in shards.SPLITS and rest.endswith(".tfrecord") and rest[:-9].isdigit()


def write_rejected(path: Path, rejected: list[Rejection], excluded: list[Rejection]) -> None:
    """Writes ``rejected.csv`` (path,id,reason): bad input first, then selection exclusions."""
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "id", "reason"])
        for row in [*rejected, *excluded]:
            writer.writerow([row.path, row.id, row.reason])


# --- progress ----------------------------------------------------------------------------


class _Progress:
    """A progress line on stderr: "prepare NAME: 1,200/220,025 images (0.5%), ..., ETA 10:28".

    On a terminal the line is rewritten in place a few times a second; in a log file
    (not a TTY) a new line is written every 5%, so logs stay short; in a notebook, a live
    bar (:mod:`medtransfer.progress`).
    """

    def __init__(self, name: str, enabled: bool, stream: TextIO | None = None):
        self.name = name
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = enabled and self.stream.isatty()
        self.bar = None

    def start(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self.last_print = -math.inf
        self.next_step = 0.05
        if self.enabled:
            self.bar = notebook_bar(total, f"prepare {self.name}", "image")

    def advance(self) -> None:
        self.done += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update()
            return
        now = time.monotonic()
        if self.tty:
            if now - self.last_print >= 0.2 or self.done == self.total:
                self.last_print = now
                self.stream.write("\r" + self.line(now))
                self.stream.flush()
        elif self.done >= self.total * self.next_step or self.done == self.total:
            while self.next_step <= self.done / self.total:
                self.next_step += 0.05
            print(self.line(now), file=self.stream, flush=True)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-6)
        rate = self.done / elapsed
        remaining = (self.total - self.done) / rate if rate > 0 else math.inf
        percent = 100.0 * self.done / max(self.total, 1)
        return (
            f"prepare {self.name}: {self.done:,}/{self.total:,} images ({percent:.1f}%), "
            f"{rate:,.0f} img/s, ETA {_clock(remaining)}"
        )


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
