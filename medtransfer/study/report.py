"""``build_report(experiment_dir) -> Report``: an experiment's runs as the study's tables.

Reads every run directory through ``training.rundir.scan_experiment`` (never the files
themselves) and writes ``results.csv``, ``summary.md`` and PNG figures.

Definitions (also in the README):

- A *cell* is (dataset, net, init, freeze); its runs differ only in seed. Runs of one
  dataset and net whose configs differ in anything else that changes what is learned
  (a class subset, the epochs, the image size, ...) are different tasks: the dataset
  label then names what differs, e.g. ``digits (classes=5,6,7,8,9)``.
- Every init other than ``glorot`` (imagenet, mean_var, a transfer from a run) is
  compared with ``glorot``. The pair is: the init at freeze 0 (every layer fine-tuned,
  the study's setting) against glorot at freeze 0, same dataset and net.
- Improvement of A over glorot: ``(AUC_A - AUC_B) / AUC_B`` with test micro AUCs of the
  best checkpoints (the mean over seeds when there are several); per dataset, the mean
  over the nets that have both; overall, the mean of the per-dataset values.
- Speed-up: ``e_B / e_A``, ``e_B`` the first epoch of glorot's best validation AUC,
  ``e_A`` the first epoch at which A's validation AUC reaches it ("never reached" when
  it does not); per seed shared by both, then mean ± std.
- Paired bootstrap: every run of a non-glorot init (at any freeze) against the glorot
  run at freeze 0 of the same dataset, net and seed, on the same test images.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import math
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medtransfer.config import (
    FIELDS,
    NOT_IDENTITY,
    RUN_ID_BASE,
    RunConfig,
    absolute_path,
    config_from_mapping,
    freeze_text,
    init_source_name,
    parse_epochs,
    value_text,
)
from medtransfer.errors import MedtransferError
from medtransfer.fileio import read_json, write_json_atomic, write_text_atomic
from medtransfer.machine import usable_cores
from medtransfer.study import figures
from medtransfer.study.grid import RUN_REFERENCE, check_expect
from medtransfer.study.stats import (
    LEVEL,
    Difference,
    Interval,
    auc_micro,
    paired_mean_difference,
    percentile_interval,
    resample_counts,
    resampled_auc_micro,
)
from medtransfer.training.rundir import RunRecord, scan_experiment

MIN_RESAMPLES = 1000
GLOROT = "glorot"
NAMED_INITS = ("glorot", "imagenet", "mean_var")
MISSING = "—"
# How far (in AUC) metrics.json may lie outside the interval from the predictions.
_AGREEMENT = 1e-4
FIGURE_DIGESTS = ".figures.json"
"""In the report folder: a digest of each figure's data, to redraw only what changed."""
CACHE_NAME = "bootstrap_{resamples}x_seed{seed}.json"
"""Each run's resampled test AUCs, beside its predictions_test.csv (see ``Bootstrap``)."""
DIFFERENCE_LEGEND = (
    "Δ AUC: the mean over seeds of AUC_A − AUC_glorot, runs paired by seed, on the same "
    f"test images; {LEVEL:.0%} percentile interval and p-value (the share of resamples on "
    "the other side of zero, doubled, capped at 1) from a two-level paired bootstrap: each "
    "resample draws the seeds with replacement and the test images (stratified; the same "
    "image indices for every run), so the interval covers both the variation between "
    "training runs and that of the test sample (with one seed, the test sample only)."
)
# Config fields that cannot change a run's numbers, and a cell's own axes: runs that
# differ only in these are the same task.
NOT_TASK = frozenset(NOT_IDENTITY) | frozenset(RUN_ID_BASE)
# Fields whose default is the net's own (config.resolved_defaults): a resolved config
# holds each net's default, which differs between nets without making another task.
NET_DEFAULTS = ("image_size",)
# Fields a run fills from its dataset or net (training.run.resolve_config).
RESOLVED = frozenset({"lr", "image_size", "flips", "noise", "color"})


@dataclass
class Report:
    """What ``build_report`` wrote.

    Attributes:
        out_dir: the report folder.
        results: results.csv.
        summary: summary.md.
        figures: the PNG files.
        main_text: the main table with its legend, the config's expectation and the
            improvement table: what ``medtransfer report`` prints.
        skipped: broken run directories and why.
    """

    out_dir: Path
    results: Path
    summary: Path
    figures: list[Path]
    main_text: str
    skipped: list[tuple[Path, str]] = field(default_factory=list)


@dataclass
class StudyRun:
    record: RunRecord
    task: str
    dataset: str
    net: str
    init: str
    freeze: float
    seed: int
    task_any_size: str = ""  # the task label without the training-set size

    @property
    def complete(self) -> bool:
        return self.record.status == "complete"

    @property
    def auc(self) -> float:
        return float(self.record.metrics["test_auc_micro"])


def load_study(experiment_dir: str | Path, *, resamples: int = MIN_RESAMPLES,
               seed: int = 0) -> Study:
    """Reads an experiment's runs (and its sweep.yaml, when present) for tables and figures.

    Args:
        experiment_dir: ``<logdir>/<experiment>``.
        resamples: bootstrap resamples, at least 1000.
        seed: seeds the bootstrap; the same seed gives the same numbers.

    Raises:
        MedtransferError: not an experiment folder, no run in it, or too few resamples.
    """
    experiment_dir = Path(experiment_dir).expanduser()
    if resamples < MIN_RESAMPLES:
        raise MedtransferError(
            f"--resamples {resamples} is too few for a 95% percentile interval. Use at "
            f"least {MIN_RESAMPLES} (the default)."
        )
    records = scan_experiment(experiment_dir)
    if not records:
        raise MedtransferError(_no_runs_message(experiment_dir))
    sweep, sweep_note = _read_sweep(experiment_dir / "sweep.yaml")
    return Study(experiment_dir, records, sweep, Bootstrap(resamples, seed), sweep_note)


def build_report(experiment_dir: str | Path, out: str | Path | None = None, *,
                 resamples: int = MIN_RESAMPLES, seed: int = 0) -> Report:
    """Reads every run of an experiment and writes its tables, statistics and figures.

    Args:
        experiment_dir: ``<logdir>/<experiment>``.
        out: the report folder (default ``<experiment_dir>/report``).
        resamples: bootstrap resamples, at least 1000.
        seed: seeds the bootstrap; the same seed gives the same numbers.

    Returns:
        Where the files went and the main table.

    Raises:
        MedtransferError: not an experiment folder, no run in it, too few resamples, or
            an output folder that cannot be written.
    """
    study = load_study(experiment_dir, resamples=resamples, seed=seed)
    out_dir = Path(out).expanduser() if out else study.experiment_dir / "report"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise MedtransferError(
            f"Cannot create the report folder '{out_dir}' ({error.strerror}). Choose "
            "another with --out."
        ) from None
    summary_text, main_text = study.summary()
    results = out_dir / "results.csv"
    summary = out_dir / "summary.md"
    write_text_atomic(results, study.results_csv())
    write_text_atomic(summary, summary_text)
    pngs = _draw_figures(study.figure_specs(), out_dir)
    return Report(out_dir, results, summary, pngs, main_text, study.skipped)


def _draw_figures(specs: list[tuple[str, Callable, tuple]], out_dir: Path) -> list[Path]:
    """Draws each figure, unless the report folder holds it drawn from the same data by
    the same figures module (:data:`FIGURE_DIGESTS`): drawing is most of a repeated report."""
    digests_path = out_dir / FIGURE_DIGESTS
    try:
        drawn = read_json(digests_path)
        drawn = drawn if isinstance(drawn, dict) else {}
    except (OSError, ValueError):
        drawn = {}
    module = hashlib.sha256(Path(figures.__file__).read_bytes()).hexdigest()
    paths = []
    for name, draw, arguments in specs:
        path = out_dir / name
        digest = hashlib.sha256(repr((module, draw.__qualname__, arguments)).encode()).hexdigest()
        if not (path.exists() and drawn.get(name) == digest):
            figures.save_png(draw(*arguments), path)
            drawn[name] = digest
        paths.append(path)
    write_json_atomic(digests_path, drawn)
    return paths


def _no_runs_message(experiment_dir: Path) -> str:
    if (experiment_dir / "config.yaml").exists():
        return (f"'{experiment_dir}' is a run directory, not an experiment. Pass the folder "
                f"that holds it: {experiment_dir.parent}.")
    experiments = sorted(child.name for child in experiment_dir.iterdir()
                         if child.is_dir() and scan_experiment(child))
    hint = (f" It holds experiments ({', '.join(experiments)}): pass one of them, for "
            f"example {experiment_dir / experiments[0]}." if experiments else "")
    return (f"No run directories in '{experiment_dir}'.{hint} A report reads "
            "<logdir>/<experiment>, the folder that 'medtransfer run --experiment NAME' "
            "or 'medtransfer sweep' fills.")


def _read_sweep(path: Path) -> tuple[dict[str, Any], str]:
    """The sweep config copied beside the runs; ({}, why) when absent or unreadable."""
    if not path.exists():
        return {}, ""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        return {}, f"{path.name} could not be read ({' '.join(str(error).split())})"
    if not isinstance(data, dict):
        return {}, f"{path.name} does not hold a mapping"
    return data, ""


@dataclass(frozen=True)
class PlannedCell:
    """One run the sweep file plans: its config and the keys the file sets explicitly."""

    config: RunConfig
    explicit: tuple[str, ...]
    compared: tuple[str, ...]
    grid_name: str | None = None
    reference: str | None = None  # "run:NAME" for a transfer from a named grid's run


def read_planned(sweep: dict[str, Any]) -> list[PlannedCell]:
    """Every run of the sweep file's grids, as far as the file alone tells (defaults that
    depend on the dataset or the net stay unset); cells with invalid values are left out
    (the sweep itself would have refused them)."""
    cells = []
    for grid in _grids(sweep):
        name = grid.pop("name", [None])[0]
        keys = list(grid)
        for combination in itertools.product(*(grid[key] for key in keys)):
            values = dict(zip(keys, combination, strict=True))
            init = values.get("init")
            reference = init if isinstance(init, str) and init.startswith(RUN_REFERENCE) \
                else None
            try:
                config = config_from_mapping(values, source="sweep.yaml")
            except MedtransferError:
                continue
            explicit = tuple(key for key in keys if key not in NOT_TASK)
            # A field the run fills from its dataset or net compares only when the file
            # sets it; every other field is what the file says, or the default.
            compared = tuple(key for key in FIELDS if key not in NOT_TASK
                             and (key not in RESOLVED or key in keys))
            cells.append(PlannedCell(config, explicit, compared,
                                  name if isinstance(name, str) else None, reference))
    return cells


def _same_setting(key: str, planned: Any, actual: Any) -> bool:
    if key == "epochs":
        return parse_epochs(str(planned)) == parse_epochs(str(actual))
    if isinstance(planned, list | tuple) and isinstance(actual, list | tuple):
        return [str(item) for item in planned] == [str(item) for item in actual]
    return planned == actual


def _matches(cell: PlannedCell, config: RunConfig, keys: Iterable[str]) -> bool:
    return all(_same_setting(key, getattr(cell.config, key), getattr(config, key))
               for key in keys)


def planned_tasks(cell: PlannedCell, placed: list[RunRecord], labels: dict[Path, str]) -> list[str]:
    """The task labels of the runs a planned cell belongs with: runs of its dataset that
    agree with every setting the sweep file gives it; a label of its own when none does."""
    found = [labels[record.path] for record in placed
             if record.config.dataset == cell.config.dataset
             and _matches(cell, record.config, cell.compared)]
    if found:
        return list(dict.fromkeys(found))
    settings = ", ".join(f"{key}={label_value(getattr(cell.config, key))}"
                         for key in cell.explicit)
    dataset = cell.config.dataset
    if not any(record.config.dataset == dataset for record in placed) or not settings:
        return [dataset]
    return [f"{dataset} ({settings})"]


def source_names(planned: list[PlannedCell], placed: list[RunRecord]) -> dict[str, str]:
    """Run directory name -> grid name, for each named grid's run present in the
    experiment (a named grid plans exactly one run; the sweep checks it)."""
    names = {}
    for cell in planned:
        if cell.grid_name is None:
            continue
        keys = [*cell.compared, *(key for key in RUN_ID_BASE if key != "init")]
        found = [record for record in placed if _matches(cell, record.config, keys)
                 and (cell.reference is not None or record.config.init == cell.config.init)]
        if len(found) == 1:
            names[found[0].path.name] = cell.grid_name
    return names


def planned_init(cell: PlannedCell, sources: dict[str, str], placed: list[RunRecord]) -> str:
    """A planned cell's init as its runs record it (see :func:`_reference_init`)."""
    if cell.reference is not None:
        return reference_init(cell.reference, sources, placed)
    init = cell.config.init
    return init if init in NAMED_INITS else absolute_path(init)


def reference_init(reference: str, sources: dict[str, str], records: list[RunRecord]) -> str:
    """``run:NAME`` as runs record it: the absolute path of the named grid's run that
    runs of this experiment start from (``run:NAME`` itself until one exists)."""
    directory = next((name for name, grid in sources.items()
                      if grid == reference.removeprefix(RUN_REFERENCE)), None)
    return next((record.config.init for record in records
                 if record.config is not None and record.config.init_is_path
                 and directory is not None
                 and init_source_name(record.config.init) == directory), reference)


def meets(config: RunConfig, filters: dict[str, Any]) -> bool:
    """Whether a run's config has every value of a check's ``where``."""
    for key, value in filters.items():
        try:
            wanted = getattr(config_from_mapping({key: value}, source="expect"), key)
        except MedtransferError:
            return False
        if not _same_setting(key, wanted, getattr(config, key)):
            return False
    return True


def _where_text(filters: dict[str, Any]) -> str:
    return "".join(f", {key}={label_value(value)}" for key, value in filters.items())


def _seeds(count: int) -> str:
    return f"{count} seed{'s' if count != 1 else ''}"


def init_label_texts(inits: list[str], sources: dict[str, str], experiment: str) -> dict[str, str]:
    """How each init reads in tables and figures: its name, or ``transfer from <name>``
    with the name of the sweep's grid that trained the source, else the source's
    experiment (when it is another one), else the source run's directory name."""
    labels = {}
    for init in inits:
        if init in NAMED_INITS:
            labels[init] = init
        elif init.startswith(RUN_REFERENCE):
            labels[init] = f"transfer from {init.removeprefix(RUN_REFERENCE)}"
        else:
            labels[init] = f"transfer from {_short_source(init, sources, experiment)}"
    counts = defaultdict(int)
    for label in labels.values():
        counts[label] += 1
    # Two sources with one short name: the full names tell them apart.
    return {init: label if counts[label] == 1 else f"transfer from {init_source_name(init)}"
            for init, label in labels.items()}


def _short_source(init: str, sources: dict[str, str], experiment: str) -> str:
    name = init_source_name(init)
    if name in sources:
        return sources[name]
    path = Path(init)
    run_dir = path.parent if path.name == "best.weights.h5" else path
    if run_dir.name == name and run_dir.parent.name and run_dir.parent.name != experiment:
        return run_dir.parent.name
    return name


def _grids(sweep: dict[str, Any]) -> list[dict[str, list]]:
    """Each grid of the sweep config merged over its base, every value as a list."""
    base = sweep.get("base") if isinstance(sweep.get("base"), dict) else {}
    grids = sweep.get("grid", [])
    grids = [grids] if isinstance(grids, dict) else grids if isinstance(grids, list) else []
    merged = []
    for grid in grids:
        if isinstance(grid, dict):
            values = {**base, **grid}
            merged.append({key: value if isinstance(value, list) else [value]
                           for key, value in values.items()})
    return merged


# -- reading runs into the study's axes -------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def task_labels(configs: dict[Any, RunConfig],
                 ignore: tuple[str, ...] = ()) -> dict[Any, str]:
    """Dataset label per config: the dataset, plus what differs between tasks on it.

    Computed per dataset across nets, so that a setting that varies for one net labels
    that dataset's runs of every net alike (one task is one row). A field whose default
    is the net's own (:data:`NET_DEFAULTS`) counts only where it varies within a net: a
    resolved config holds each net's default input size, which is not a task of its own.
    ``ignore`` lists config fields left out of the label.
    """
    settings: dict[str, dict[Any, dict[str, Any]]] = defaultdict(dict)
    nets: dict[Any, str] = {}
    for key, config in configs.items():
        values = config.to_dict()
        settings[values["dataset"]][key] = {
            name: value for name, value in values.items()
            if name not in NOT_TASK and name not in ignore}
        nets[key] = values["net"]
    labels = {}
    for dataset, by_key in settings.items():
        names = sorted({name for setting in by_key.values() for name in setting})
        varying = [name for name in names
                   if _varies(name, by_key, nets)]
        for key, setting in by_key.items():
            differs = ", ".join(f"{name}={label_value(setting.get(name))}"
                                for name in varying)
            labels[key] = f"{dataset} ({differs})" if differs else dataset
    return labels


def _varies(name: str, by_key: dict[Any, dict[str, Any]], nets: dict[Any, str]) -> bool:
    if name not in NET_DEFAULTS:
        return len({repr(setting.get(name)) for setting in by_key.values()}) > 1
    per_net = defaultdict(set)
    for key, setting in by_key.items():
        per_net[nets[key]].add(repr(setting.get(name)))
    return any(len(values) > 1 for values in per_net.values())


def label_value(value: Any) -> str:
    """A setting in a task label; None (the dataset's whole split, every class) is "all"."""
    return "all" if value is None else value_text(value)


def freeze_label(freeze: float) -> str:
    return freeze_text(freeze, decimals=0)


def status_text(record: RunRecord, *, detail: bool = True) -> str:
    """A run's state in one word (``running``, ``interrupted``, ``complete``, ...), with
    the epoch it reached or diverged in when ``detail``."""
    word = record.status
    if record.status == "in progress":
        word = "running" if record.running else "interrupted"
        if detail:
            return f"{word} (epoch {record.epochs_done}/{record.config.total_epochs})"
    if record.status == "diverged" and detail:
        return f"diverged (epoch {record.metrics.get('diverged_epoch', '?')})"
    return word


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); std is NaN for one value."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else math.nan


def ordered(values: Iterable, preferred: list) -> list:
    """``values`` in the order ``preferred`` gives them, the rest sorted after."""
    values = set(values)
    first = [value for value in dict.fromkeys(preferred) if value in values]
    return first + sorted(values - set(first), key=str)


def percent_text(value: float) -> str:
    return f"{100 * value:+.2f}%"


def markdown_table(rows: list[list[str]], header: list[str]) -> str:
    """A markdown table."""
    def line(cells):
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"
    return "\n".join([line(header), line(["---"] * len(header)), *map(line, rows)])


class Bootstrap:
    """Resampled AUCs per run, computed once; runs on the same test split share resamples.

    Each run's resampled AUCs are cached beside it (:data:`CACHE_NAME`), keyed by its
    predictions file's size and modification time, the resample count and the seed: a
    report run again while a sweep goes on recomputes only the new runs.
    """

    def __init__(self, resamples: int, seed: int):
        self.resamples, self.seed = resamples, seed
        self._counts: dict[str, np.ndarray] = {}
        self._counts_lock = threading.Lock()
        self._runs: dict[Path, tuple | str] = {}

    def prepare(self, runs: list[StudyRun]) -> None:
        """Computes (or reads from the cache) every run's resamples, on every core."""
        missing = [run for run in runs if run.record.path not in self._runs]
        with ThreadPoolExecutor(max(1, min(usable_cores(), len(missing)))) as pool:
            found = list(pool.map(self._compute, missing))
        for run, (result, fresh) in zip(missing, found, strict=True):
            self._runs[run.record.path] = result
            if fresh and not isinstance(result, str):
                self._write_cache(run, result)

    def resamples_of(self, run: StudyRun) -> tuple | str:
        if run.record.path not in self._runs:
            self.prepare([run])
        return self._runs[run.record.path]

    def _cache_path(self, run: StudyRun) -> Path:
        return run.record.path / CACHE_NAME.format(resamples=self.resamples, seed=self.seed)

    def _file_key(self, run: StudyRun) -> list[int] | None:
        try:
            status = run.record.directory.predictions.stat()
        except OSError:
            return None
        return [status.st_size, status.st_mtime_ns]

    def _compute(self, run: StudyRun) -> tuple[tuple | str, bool]:
        """(split digest, AUC from the predictions, resampled AUCs) or why not; and
        whether it was computed now (False: read from the cache)."""
        file_key = self._file_key(run)
        try:
            cached = read_json(self._cache_path(run))
            if cached.get("predictions") == file_key and file_key is not None:
                return (cached["split"], float(cached["auc"]),
                        np.asarray(cached["samples"], dtype=np.float64)), False
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            pass
        try:
            predictions = run.record.predictions
        except MedtransferError:
            return "no readable predictions_test.csv", True
        if predictions.probabilities.shape[1] < 2 or not predictions.ids:
            return "predictions_test.csv has fewer than two classes or no image", True
        # One canonical image order, so that two runs on the same split line up.
        order = np.argsort(np.asarray(predictions.ids, dtype=object), kind="stable")
        labels = predictions.labels[order]
        probabilities = predictions.probabilities[order]
        digest = hashlib.sha256()
        digest.update("\n".join(predictions.ids[i] for i in order).encode())
        digest.update(labels.astype(np.int64).tobytes())
        split = digest.hexdigest()
        samples = resampled_auc_micro(labels, probabilities, self._split_counts(split, labels))
        return (split, auc_micro(labels, probabilities), samples), True

    def _split_counts(self, split: str, labels: np.ndarray) -> np.ndarray:
        with self._counts_lock:
            if split not in self._counts:
                self._counts[split] = resample_counts(labels, self.resamples, self.seed)
            return self._counts[split]

    def _write_cache(self, run: StudyRun, result: tuple) -> None:
        file_key = self._file_key(run)
        if file_key is None:
            return
        split, auc, samples = result
        try:
            write_json_atomic(self._cache_path(run), {
                "predictions": file_key, "resamples": self.resamples, "seed": self.seed,
                "split": split, "auc": auc, "samples": samples.tolist()})
        except OSError:
            pass  # a read-only run directory: the report recomputes next time

    def interval(self, run: StudyRun) -> Interval | None:
        found = self.resamples_of(run)
        if isinstance(found, str):
            return None
        return percentile_interval(run.auc, found[2])

    def difference(self, pairs: list[tuple[StudyRun, StudyRun]]) -> Difference | str:
        """Paired bootstrap of the mean over seeds of ``AUC_A - AUC_B`` (one pair of runs
        per seed; see :func:`stats.paired_mean_difference`), or why it cannot be computed."""
        found = [(self.resamples_of(run_a), self.resamples_of(run_b)) for run_a, run_b in pairs]
        for pair in found:
            for item in pair:
                if isinstance(item, str):
                    return item
        if len({item[0] for pair in found for item in pair}) > 1:
            return "different test splits"
        return paired_mean_difference(
            np.array([a[1] for a, _ in found]), np.array([b[1] for _, b in found]),
            np.stack([a[2] for a, _ in found]), np.stack([b[2] for _, b in found]),
            seed=self.seed)


@dataclass
class _SpeedUp:
    glorot_epoch: int
    target: float
    epoch: int | None

    @property
    def value(self) -> float | None:
        return self.glorot_epoch / self.epoch if self.epoch else None


def speed_up(glorot_history: list[dict[str, Any]],
             transfer_history: list[dict[str, Any]]) -> _SpeedUp | None:
    """``e_B / e_A`` from two runs' history.csv rows (None when glorot has no epoch).

    ``e_B``: the first epoch at which glorot reaches its best validation micro AUC (the
    run's best epoch). ``e_A``: the first epoch at which the other run's validation
    micro AUC reaches that value; None when it never does.
    """
    curve = validation_curve(glorot_history)
    if not curve:
        return None
    target = max(value for _, value in curve)
    glorot_epoch = next(epoch for epoch, value in curve if value == target)
    reached = next((epoch for epoch, value in validation_curve(transfer_history)
                    if value >= target), None)
    return _SpeedUp(glorot_epoch, target, reached)


def validation_curve(history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    return [(int(row["epoch"]), float(row["val_auc_micro"])) for row in history
            if isinstance(row.get("val_auc_micro"), int | float)]


class Study:
    """The runs of one experiment on the study's axes, and every table and figure built
    from them (see :func:`load_study`)."""

    def __init__(self, experiment_dir: Path, records: list[RunRecord],
                 sweep: dict[str, Any], bootstrap: Bootstrap, sweep_note: str = ""):
        self.experiment_dir = experiment_dir
        self.sweep_note = sweep_note
        self.records = records
        self.bootstrap = bootstrap
        self.skipped = [(record.path, record.problem) for record in records
                        if record.status == "broken"]
        placed = [record for record in records if record.config is not None]
        self.sweep = sweep
        self.published = sweep.get("published") if isinstance(sweep.get("published"),
                                                              dict) else {}
        planned = read_planned(sweep)
        self.sources = sources = source_names(planned, placed)
        configs = {record.path: record.config for record in placed}
        labels = task_labels(configs)
        any_size = task_labels(configs, ignore=("train_size",))
        runs = [
            StudyRun(record, labels[record.path], record.config.dataset, record.config.net,
                 record.config.init, float(record.config.freeze), int(record.config.seed),
                 any_size[record.path])
            for record in placed
        ]
        bootstrap.prepare([run for run in runs if run.complete])
        disagree = {run.record.path: problem for run in runs if run.complete
                    for problem in [self._disagreement(run)] if problem}
        self.skipped += list(disagree.items())
        self.problems = dict(disagree)
        self.runs = [run for run in runs if run.record.path not in disagree]
        # None (the whole training split) is a size too.
        self.train_sizes = {record.config.train_size for record in placed}
        self.cells: dict[tuple, list[StudyRun]] = defaultdict(list)
        for run in sorted(self.runs, key=lambda run: run.seed):
            self.cells[(run.task, run.net, run.init, run.freeze)].append(run)
        self.task_dataset = {run.task: run.dataset for run in self.runs}
        # Rows and columns the sweep plans but no run has started yet show as missing.
        planned_cells = []
        for cell in planned:
            init = planned_init(cell, sources, placed)
            for task in planned_tasks(cell, placed, labels):
                planned_cells.append((task, cell.config.net, init, float(cell.config.freeze)))
                self.task_dataset.setdefault(task, cell.config.dataset)
        rows = {(run.task, run.net) for run in self.runs}
        rows |= {(task, net) for task, net, _, _ in planned_cells}
        task_order = ordered({task for task, _ in rows},
                            [task for task, _, _, _ in planned_cells])
        net_order = ordered({net for _, net in rows},
                           [net for _, net, _, _ in planned_cells])
        self.rows = sorted(rows, key=lambda row: (task_order.index(row[0]),
                                                  net_order.index(row[1])))
        self.inits = ordered({run.init for run in self.runs}
                            | {init for _, _, init, _ in planned_cells},
                            [*NAMED_INITS, *(init for _, _, init, _ in planned_cells)])
        self.transfer_inits = [init for init in self.inits if init != GLOROT]
        freezes = defaultdict(set)
        for _, _, init, freeze in [*planned_cells,
                                   *((None, None, run.init, run.freeze) for run in self.runs)]:
            freezes[init].add(freeze)
        self.freezes_of = {init: sorted(freezes[init]) for init in self.inits}
        self.init_labels = init_label_texts(self.inits, sources, experiment_dir.name)
        # Inits with a table and a line per freeze level: every transfer init, and glorot
        # when it ran at more than freeze 0.
        self.freeze_inits = [init for init in self.inits
                             if init != GLOROT or self.freezes_of[init] != [0.0]]

    def _disagreement(self, run: StudyRun) -> str:
        """Why a run's metrics.json and its own predictions_test.csv disagree, if they do:
        its test AUC outside the interval computed from the predictions."""
        interval = self.bootstrap.interval(run)
        auc = run.record.metrics.get("test_auc_micro")
        if interval is None or not isinstance(auc, int | float):
            return ""
        # metrics.json keeps float32 AUCs and the CSV rounded probabilities: allow for it.
        if interval.low - _AGREEMENT <= auc <= interval.high + _AGREEMENT:
            return ""
        found = self.bootstrap.resamples_of(run)
        return (f"metrics.json's test_auc_micro {auc:.4f} lies outside the {LEVEL:.0%} "
                f"interval [{interval.low:.4f}, {interval.high:.4f}] computed from its own "
                f"predictions_test.csv (AUC {found[1]:.4f}): the two files disagree, so the "
                "run is left out of the tables. Train it again with --overwrite (or put "
                "back the predictions file it wrote).")

    # -- cells ------------------------------------------------------------------

    def complete(self, task: str, net: str, init: str, freeze: float) -> list[StudyRun]:
        return [run for run in self.cells.get((task, net, init, freeze), []) if run.complete]

    def cell_text(self, task: str, net: str, init: str, freeze: float) -> str:
        runs = self.cells.get((task, net, init, freeze), [])
        done = [run for run in runs if run.complete]
        parts = []
        if len(done) == 1:
            interval = self.bootstrap.interval(done[0])
            parts.append(f"{done[0].auc:.4f}" + (
                f" [{interval.low:.4f}, {interval.high:.4f}]" if interval else ""))
        elif done:
            mean, std = mean_std([run.auc for run in done])
            parts.append(f"{mean:.4f} ± {std:.4f} (n={len(done)})")
        parts += [status_text(run.record) for run in runs if not run.complete]
        return "; ".join(parts) or MISSING

    def mean_auc(self, task: str, net: str, init: str, freeze: float = 0.0) -> float | None:
        done = self.complete(task, net, init, freeze)
        return mean_std([run.auc for run in done])[0] if done else None

    # -- tables -----------------------------------------------------------------

    def main_table(self) -> str:
        header = ["dataset", "net", *(self.init_labels[init] for init in self.inits)]
        rows = [[task, net, *(self._main_cell(task, net, init) for init in self.inits)]
                for task, net in self.rows]
        return markdown_table(rows, header)

    def _main_cell(self, task: str, net: str, init: str) -> str:
        """The cell's micro AUC, and for a binary task the positive class's AUC beside it."""
        text = self.cell_text(task, net, init, 0.0)
        done = self.complete(task, net, init, 0.0)
        positive = [run.record.metrics.get("test_auc_macro") for run in done]
        if not done or not all(_is_binary(run) for run in done) or not all(
                isinstance(value, int | float) for value in positive):
            return text
        if len(positive) == 1:
            return f"{text}; positive class {positive[0]:.4f}"
        mean, std = mean_std(positive)
        return f"{text}; positive class {mean:.4f} ± {std:.4f}"

    def legend(self) -> str:
        boot = self.bootstrap
        return (
            "Test micro AUC of the best checkpoint (best validation micro AUC) at freeze 0, "
            f"[{LEVEL:.0%} percentile bootstrap interval over the test images, "
            f"{boot.resamples} stratified resamples, seed {boot.seed}]; with several seeds, "
            "mean ± sample standard deviation (ddof=1) over n seeds. "
            f"{MISSING}: no run."
            + (" Binary tasks: \"positive class\" is the positive class's test AUC (our "
               "macro AUC), the metric MedMNIST, CheXpert and most benchmarks report; the "
               "micro AUC over both one-hot columns (the study's metric) comes first."
               if any(_is_binary(run) and "test_auc_macro" in run.record.metrics
                      for run in self.runs if run.complete) else "")
        )

    def freeze_table(self, init: str) -> str:
        rows = [(task, net) for task, net in self.rows
                if any(run.init == init for run in self.runs
                       if (run.task, run.net) == (task, net))]
        freezes = self.freezes_of[init]
        reference = [] if init == GLOROT else ["glorot (freeze 0)"]
        header = ["dataset", "net", *reference,
                  *(f"freeze {freeze_label(freeze)}" for freeze in freezes)]
        body = [[task, net,
                 *([self.cell_text(task, net, GLOROT, 0.0)] if reference else []),
                 *(self.cell_text(task, net, init, freeze) for freeze in freezes)]
                for task, net in rows]
        return markdown_table(body, header)

    def pair_rows(self, init: str) -> list[tuple[str, str]]:
        """(task, net) rows with a run of ``init`` or glorot at freeze 0."""
        return [(task, net) for task, net in self.rows
                if self.cells.get((task, net, init, 0.0))
                or self.cells.get((task, net, GLOROT, 0.0))]

    def improvement(self, task: str, net: str, init: str) -> float | None:
        ours, glorot = self.mean_auc(task, net, init), self.mean_auc(task, net, GLOROT)
        return None if ours is None or glorot is None else (ours - glorot) / glorot

    def speed_ups(self, task: str, net: str, init: str) -> list[_SpeedUp]:
        """One speed-up per seed that both glorot and ``init`` completed at freeze 0."""
        glorot = {run.seed: run for run in self.complete(task, net, GLOROT, 0.0)}
        result = []
        for run in self.complete(task, net, init, 0.0):
            if run.seed in glorot:
                found = speed_up(glorot[run.seed].record.history, run.record.history)
                if found is not None:
                    result.append(found)
        return result

    def per_net_table(self, init: str) -> str:
        label = self.init_labels[init]
        header = ["dataset", "net", "glorot", label, "improvement",
                  f"Δ AUC, mean over seeds [{LEVEL:.0%} CI]", "p", "speed-up"]
        body = []
        for task, net in self.pair_rows(init):
            improvement = self.improvement(task, net, init)
            body.append([
                task, net, self._mean_text(task, net, GLOROT), self._mean_text(task, net, init),
                percent_text(improvement) if improvement is not None else MISSING,
                *_difference_text(self.mean_difference(task, net, init)),
                self._speed_up_text(self.speed_ups(task, net, init)),
            ])
        return markdown_table(body, header)

    def seed_pairs(self, task: str, net: str, init: str,
                   freeze: float = 0.0) -> list[tuple[StudyRun, StudyRun]]:
        """(run of ``init`` at ``freeze``, glorot's run at freeze 0) per seed both completed."""
        glorot = {run.seed: run for run in self.complete(task, net, GLOROT, 0.0)}
        return [(run, glorot[run.seed]) for run in self.complete(task, net, init, freeze)
                if run.seed in glorot]

    def mean_difference(self, task: str, net: str, init: str,
                        freeze: float = 0.0) -> Difference | str | None:
        """The mean over paired seeds of ``AUC_init - AUC_glorot`` with its two-level paired
        bootstrap; why it cannot be computed; or None without a pair."""
        pairs = self.seed_pairs(task, net, init, freeze)
        return self.bootstrap.difference(pairs) if pairs else None

    def _mean_text(self, task: str, net: str, init: str) -> str:
        done = self.complete(task, net, init, 0.0)
        if not done:
            return self.cell_text(task, net, init, 0.0)
        mean, std = mean_std([run.auc for run in done])
        return f"{mean:.4f}" if len(done) == 1 else f"{mean:.4f} ± {std:.4f} (n={len(done)})"

    @staticmethod
    def _speed_up_text(found: list[_SpeedUp]) -> str:
        if not found:
            return MISSING
        reached = [item.value for item in found if item.value is not None]
        never = len(found) - len(reached)
        if not reached:
            item = found[0]
            return (f"never reached (glorot's best {item.target:.4f} at epoch "
                    f"{item.glorot_epoch})" if len(found) == 1 else
                    f"never reached ({never}/{len(found)} seeds)")
        if len(found) == 1:
            item = found[0]
            return f"{item.value:.2f}× (epoch {item.glorot_epoch} vs {item.epoch})"
        mean, std = mean_std(reached)
        text = f"{mean:.2f}×" if len(reached) == 1 else f"{mean:.2f} ± {std:.2f}×"
        text += f" (n={len(reached)})"
        return text + (f"; never reached in {never}/{len(found)} seeds" if never else "")

    def dataset_summary(self, init: str) -> tuple[str, list]:
        """Improvement and speed-up per dataset (mean over nets) and overall."""
        published = self._published_for(init)
        improvements, speeds = {}, {}
        for task in ordered({task for task, _ in self.pair_rows(init)},
                           [task for task, _ in self.rows]):
            nets = [net for row_task, net in self.pair_rows(init) if row_task == task]
            values = [v for v in (self.improvement(task, net, init) for net in nets)
                      if v is not None]
            # Each net's mean over its seeds, then the mean over nets: a net with more
            # seeds does not weigh more.
            ratios, never = [], 0
            for net in nets:
                found = self.speed_ups(task, net, init)
                reached = [item.value for item in found if item.value is not None]
                never += len(found) - len(reached)
                if reached:
                    ratios.append(float(np.mean(reached)))
            improvements[task] = (values, len(nets))
            speeds[task] = (ratios, never)
        header = ["dataset", "improvement (mean over nets)", "speed-up (mean over nets)"]
        if published:
            header = ["dataset", "improvement (mean over nets)", "published",
                      "speed-up (mean over nets)", "published"]
        body = []
        for task in improvements:
            values, nets = improvements[task]
            ratios, never = speeds[task]
            row = [task, _mean_text_percent(values, nets), _mean_ratio_text(ratios, never)]
            if published:
                dataset = self.task_dataset.get(task, task)
                row.insert(2, _published_percent(published.get("improvement"), dataset))
                row.append(_published_ratio(published.get("speedup"), dataset))
            body.append(row)
        per_task = [np.mean(values) for values, _ in improvements.values() if values]
        per_task_speed = [np.mean(ratios) for ratios, _ in speeds.values() if ratios]
        never = sum(never for _, never in speeds.values())
        never_text = f"; {never} never reached" if never else ""
        overall = [
            "overall",
            f"{percent_text(float(np.mean(per_task)))} (mean of {_datasets(len(per_task))})"
            if per_task else MISSING,
            f"{np.mean(per_task_speed):.2f}× (mean of {_datasets(len(per_task_speed))}"
            f"{never_text})" if per_task_speed else ("never reached" if never else MISSING),
        ]
        if published:
            overall.insert(2, _published_overall(published.get("improvement"), percent_text))
            overall.append(_published_overall(published.get("speedup"),
                                              lambda value: f"{value:g}×"))
        body.append(overall)
        return markdown_table(body, header), body

    def _published_for(self, init: str) -> dict[str, Any]:
        """The published numbers compare imagenet with glorot; without an imagenet run,
        they stand beside the experiment's only transfer init (the demo's case)."""
        if not self.published:
            return {}
        if init == "imagenet" or (init == self.transfer_inits[0]
                                  and "imagenet" not in self.transfer_inits
                                  and len(self.transfer_inits) == 1):
            return self.published
        return {}

    def paired_table(self, init: str) -> str:
        header = ["dataset", "net", "freeze", "seed", self.init_labels[init], "glorot",
                  "Δ AUC [95% CI]", "p"]
        body = []
        glorot = {(run.task, run.net, run.seed): run for run in self.runs
                  if run.init == GLOROT and run.freeze == 0.0 and run.complete}
        for run in sorted((run for run in self.runs if run.init == init and run.complete),
                          key=lambda run: (self.rows.index((run.task, run.net)),
                                           run.freeze, run.seed)):
            partner = glorot.get((run.task, run.net, run.seed))
            if partner is None:
                continue
            comparison, p = _difference_text(self.bootstrap.difference([(run, partner)]))
            body.append([run.task, run.net, freeze_label(run.freeze), str(run.seed),
                         f"{run.auc:.4f}", f"{partner.auc:.4f}", comparison, p])
        return markdown_table(body, header) if body else ""

    # -- expect: checked -------------------------------------------------------------

    def expectation(self) -> list[str]:
        """The sweep file's ``expect``: its text, and each check's verdict."""
        expect = self.sweep.get("expect")
        if isinstance(expect, str):
            return ["", f"Expected (not checked): {expect.strip()}"] if expect.strip() else []
        if not isinstance(expect, dict):
            return []
        try:
            check_expect(expect, "sweep.yaml")
        except MedtransferError as error:
            return ["", f"Expected: not checked: {error}"]
        out = []
        if str(expect.get("text") or "").strip():
            out += ["", f"Expected (sweep.yaml): {str(expect['text']).strip()}"]
        checks = expect.get("checks") or []
        if checks:
            out += ["", "Checks of sweep.yaml's expect:", "",
                    *(f"- {self._verdict(check)}" for check in checks)]
        return out

    def _verdict(self, check: dict[str, Any]) -> str:
        freeze = float(check.get("freeze", 0.0))
        filters = check.get("where") or {}
        if "improvement" in check:
            init_a, init_b = self.resolve_init(check["improvement"]), self.resolve_init(
                check["over"])
            what = (f"{self._label(init_a)} (freeze {freeze_label(freeze)}) over "
                    f"{self._label(init_b)} (freeze 0){_where_text(filters)}: "
                    f"{check['sign']} difference"
                    + (", interval excludes 0" if check.get("excludes_zero") else ""))
            runs_a = self._selected(init_a, freeze, filters)
            runs_b = {(run.task, run.net, run.seed): run
                      for run in self._selected(init_b, 0.0, filters)}
            groups = defaultdict(list)
            for run in runs_a:
                partner = runs_b.get((run.task, run.net, run.seed))
                if partner is not None:
                    groups[(run.task, run.net)].append((run, partner))
            if not groups:
                missing = (f"{self._label(init_a)} at freeze {freeze_label(freeze)}"
                           if not runs_a else f"{self._label(init_b)} at freeze 0"
                           if not runs_b else f"{self._label(init_b)} at freeze 0 with the "
                           f"seed of a run of {self._label(init_a)}")
                return f"{what}: not checked: no run matches {missing}{_where_text(filters)}"
            results = [self._improvement_verdict(check, task, net, pairs)
                       for (task, net), pairs in groups.items()]
        else:
            init = self.resolve_init(check["init"])
            low, high = (float(bound) for bound in check["range"])
            metric = check["metric"]
            what = (f"{metric} of {self._label(init)} (freeze {freeze_label(freeze)})"
                    f"{_where_text(filters)} in [{low:g}, {high:g}]")
            groups = defaultdict(list)
            for run in self._selected(init, freeze, filters):
                value = run.record.metrics.get(metric)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    groups[(run.task, run.net)].append(float(value))
            if not groups:
                return (f"{what}: not checked: no run matches {self._label(init)} at freeze "
                        f"{freeze_label(freeze)}{_where_text(filters)} with {metric} in its "
                        "metrics.json")
            results = []
            for (task, net), values in groups.items():
                mean = float(np.mean(values))
                results.append((low <= mean <= high,
                                f"{task} · {net}: mean {mean:.4f} over {_seeds(len(values))}"))
        if any(ok is None for ok, _ in results):
            why = next(text for ok, text in results if ok is None)
            return f"{what}: not checked: {why}"
        measured = "; ".join(text for _, text in results)
        if all(ok for ok, _ in results):
            return f"{what}: as expected ({measured})"
        return f"{what}: NOT as expected: {measured}"

    def _improvement_verdict(self, check: dict[str, Any], task: str, net: str,
                             pairs: list[tuple[StudyRun, StudyRun]]) -> tuple[bool | None, str]:
        found = self.bootstrap.difference(pairs)
        if isinstance(found, str):
            estimate = float(np.mean([a.auc - b.auc for a, b in pairs]))
            text = f"{task} · {net}: Δ AUC {estimate:+.4f} over {_seeds(len(pairs))}"
            if check.get("excludes_zero"):
                return None, f"no interval for {task} · {net} ({found})"
        else:
            estimate = found.estimate
            text = (f"{task} · {net}: Δ AUC {estimate:+.4f} [{found.low:+.4f}, "
                    f"{found.high:+.4f}] over {_seeds(len(pairs))}")
        ok = estimate > 0 if check["sign"] == "positive" else estimate < 0
        if check.get("excludes_zero") and not isinstance(found, str):
            ok = ok and (found.low > 0 or found.high < 0)
        return ok, text

    def resolve_init(self, name: str) -> str:
        """An init as the grid writes it (``glorot``, ``run:NAME``, a path) as runs record it."""
        if name in NAMED_INITS:
            return name
        if name.startswith(RUN_REFERENCE):
            return reference_init(name, self.sources, self.records)
        return absolute_path(name)

    def _label(self, init: str) -> str:
        return self.init_labels.get(init) or (
            f"transfer from {init.removeprefix(RUN_REFERENCE)}"
            if init.startswith(RUN_REFERENCE) else init)

    def _selected(self, init: str, freeze: float, filters: dict[str, Any]) -> list[StudyRun]:
        return [run for run in self.runs if run.complete and run.init == init
                and run.freeze == freeze and meets(run.record.config, filters)]

    # -- summary.md ---------------------------------------------------------------

    def summary(self) -> tuple[str, str]:
        """summary.md's text, and the part the CLI prints."""
        counts = defaultdict(int)
        for record in self.records:
            counts[status_text(record, detail=False)] += 1
        expectation = self.expectation()
        main = [self.main_table(), "", self.legend(), *expectation]
        for init in self.transfer_inits:
            table, _ = self.dataset_summary(init)
            main += ["", f"{self.init_labels[init]} over glorot (freeze 0):", "", table,
                     "", self.per_net_table(init)]
        if self.transfer_inits:
            main += ["", DIFFERENCE_LEGEND]
        out = [
            f"# Report: {self.experiment_dir.name}",
            "",
            f"{len(self.records)} run director{'y' if len(self.records) == 1 else 'ies'} in "
            f"`{self.experiment_dir}`: "
            + ", ".join(f"{count} {word}" for word, count in sorted(counts.items())) + ".",
        ]
        if self.sweep_note:
            out += ["", f"Note: {self.sweep_note}; tables use the runs alone."]
        out += ["", "## Test AUC at freeze 0", "", *main[:3], *expectation]
        for init in self.freeze_inits:
            label = self.init_labels[init]
            out += ["", f"## {label}: test AUC per freeze level", "", self.freeze_table(init)]
            if init == GLOROT:
                continue
            out += [
                "", f"## {label} over glorot", "",
                "Both at freeze 0 (every layer fine-tuned), same dataset and net. "
                "Improvement: (AUC_A − AUC_glorot) / AUC_glorot of the mean test micro AUCs; "
                "per dataset, the mean over nets; overall, the mean over datasets. Speed-up: "
                "e_glorot / e_A, e_glorot the first epoch of glorot's best validation AUC and "
                "e_A the first epoch at which A's validation AUC reaches it, per seed run by "
                "both (epochs count warm-up and fine-tuning). " + DIFFERENCE_LEGEND,
                "", self.dataset_summary(init)[0], "", self.per_net_table(init),
            ]
            paired = self.paired_table(init)
            if paired:
                out += [
                    "", f"### Paired bootstrap: {label} against glorot (freeze 0, same seed)",
                    "",
                    f"Δ AUC = AUC_A − AUC_glorot on the same test images; {LEVEL:.0%} "
                    "percentile interval and p-value from the same resampled image indices "
                    "for both runs (p: share of resamples on the other side of zero, "
                    "doubled, capped at 1).",
                    "", paired,
                ]
        findings = self.published.get("findings") if self.published else None
        if self.published:
            source = self.published.get("source", "the published study")
            out += ["", "## Published", "", f"Published values are from {source}."]
            if isinstance(findings, list):
                out += ["", "Its findings:", "", *(f"- {item}" for item in findings)]
        unfinished = [record for record in self.records
                      if record.status not in ("complete", "broken")]
        if unfinished:
            out += ["", "## Not complete", "",
                    *(f"- `{record.path.name}`: {status_text(record)}"
                      for record in unfinished)]
        if self.skipped:
            out += ["", "## Skipped (broken or inconsistent run directories)", "",
                    *(f"- `{path.name}`: {problem}" for path, problem in self.skipped)]
        figure_names = [name for name, *_ in self.figure_specs()]
        if figure_names:
            out += ["", "## Figures", "", *(f"- [{name}]({name})" for name in figure_names),
                    "", "Error bars of the freeze and training-set size figures: the "
                    "bootstrap interval for one seed, ± the sample standard deviation over "
                    "seeds for several."]
        return "\n".join(out) + "\n", "\n".join(main) + "\n"

    # -- results.csv ----------------------------------------------------------------

    def results_csv(self) -> str:
        rows = []
        for record in self.records:
            row: dict[str, Any] = {"run_dir": str(record.path),
                                   "status": status_text(record, detail=False)}
            if record.config is not None:
                row.update({key: getattr(record.config, key)
                            for key in ("dataset", "net", "init", "freeze", "seed")})
            row.update({key: value for key, value in record.metrics.items() if key != "status"})
            row["epochs_done"] = record.epochs_done
            run = next((run for run in self.runs if run.record is record), None)
            interval = self.bootstrap.interval(run) if run and run.complete else None
            row["test_auc_micro_ci_low"] = interval.low if interval else ""
            row["test_auc_micro_ci_high"] = interval.high if interval else ""
            row["problem"] = record.problem or self.problems.get(record.path, "")
            rows.append(row)
        last = ["epochs_done", "test_auc_micro_ci_low", "test_auc_micro_ci_high", "problem"]
        columns = [key for key in dict.fromkeys(key for row in rows for key in row)
                   if key not in last] + last
        stream = io.StringIO()
        writer = csv.DictWriter(stream, columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return stream.getvalue()

    # -- figures --------------------------------------------------------------------

    def figures(self) -> list[tuple[str, Any]]:
        return [(name, draw(*arguments)) for name, draw, arguments in self.figure_specs()]

    def figure_specs(self) -> list[tuple[str, Callable, tuple]]:
        """(file name, drawing function, its arguments) of every figure this experiment
        has data for."""
        specs: list[tuple[str, Callable, tuple]] = []
        for init in self.freeze_inits:
            slug, label = _slug(self.init_labels[init]), self.init_labels[init]
            panels = self._freeze_panels(init)
            if panels:
                specs.append((f"val_auc_by_freeze_{slug}.png", figures.validation_by_freeze,
                              (panels, label)))
            if init != GLOROT:
                versus, targets = self._versus_panels(init)
                if versus:
                    specs.append((f"glorot_vs_{slug}.png", figures.glorot_against_transfer,
                                  (versus, label, targets)))
        panels = self._auc_freeze_panels()
        if panels:
            specs.append(("test_auc_vs_freeze.png", figures.test_auc_against_freeze, (panels,)))
        panels = self._auc_size_panels()
        if panels:
            specs.append(("test_auc_vs_train_size.png", figures.test_auc_against_train_size,
                          (panels,)))
        return specs

    def _mean_curve(self, runs: list[StudyRun]) -> tuple[list[float], list[float]]:
        """Validation AUC per epoch, averaged over the runs (epochs all of them logged)."""
        by_epoch = defaultdict(list)
        for run in runs:
            for epoch, value in validation_curve(run.record.history):
                by_epoch[epoch].append(value)
        epochs = sorted(epoch for epoch, values in by_epoch.items() if len(values) == len(runs))
        return epochs, [float(np.mean(by_epoch[epoch])) for epoch in epochs]

    def _series(self, label: str, runs: list[StudyRun], style: dict) -> figures.Series | None:
        x, y = self._mean_curve(runs)
        if not x:
            return None
        suffix = f" (n={len(runs)})" if len(runs) > 1 else ""
        # Markers keep a run with a single epoch so far visible.
        return figures.Series(label + suffix, x, y, style={"marker": "o", "markersize": 3,
                                                           **style})

    def _freeze_panels(self, init: str) -> dict[str, list[figures.Series]]:
        panels = {}
        freezes = self.freezes_of[init]
        colours = _colours(len(freezes))
        for task, net in self.rows:
            series = []
            if init != GLOROT:
                series.append(self._series("glorot, freeze 0",
                                           self.cells.get((task, net, GLOROT, 0.0), []),
                                           {"color": "black", "linestyle": "--"}))
            ours = [self._series(f"freeze {freeze_label(freeze)}",
                                 self.cells.get((task, net, init, freeze), []),
                                 {"color": colour})
                    for freeze, colour in zip(freezes, colours, strict=True)]
            if any(item is not None for item in ours):
                panels[f"{task} · {net}"] = [item for item in series + ours
                                             if item is not None]
        return panels

    def _versus_panels(self, init: str) -> tuple[dict, dict]:
        panels, targets = {}, {}
        for task, net in self.rows:
            glorot = self._series("glorot", self.cells.get((task, net, GLOROT, 0.0), []),
                                  {"color": "black"})
            ours = self._series(self.init_labels[init], self.cells.get((task, net, init, 0.0), []),
                                {"color": "tab:red"})
            if glorot is None or ours is None:
                continue
            name = f"{task} · {net}"
            panels[name] = [glorot, ours]
            best = max(glorot.y)
            of_mean = " of the mean curve" if "(n=" in glorot.label else ""
            targets[name] = [(best, f"glorot's best{of_mean} {best:.4f} (epoch "
                                    f"{glorot.x[glorot.y.index(best)]})")]
        return panels, targets

    def _auc_freeze_panels(self) -> dict[str, list[figures.Series]]:
        """Test AUC against the freeze level, a panel per task, a line per net and init
        with runs at any freeze (glorot at freeze 0 alone is a dashed reference)."""
        panels: dict[str, list[figures.Series]] = {}
        lines = [(net, init) for net in ordered({net for _, net in self.rows},
                                               [net for _, net in self.rows])
                 for init in self.freeze_inits]
        colours = dict(zip(lines, _colours(len(lines)), strict=True))
        for task in dict.fromkeys(task for task, _ in self.rows):
            series = []
            for net, init in lines:
                points = []
                for freeze in self.freezes_of[init]:
                    done = self.complete(task, net, init, freeze)
                    if done:
                        points.append((freeze, *self._auc_with_error(done)))
                if points:
                    label = (net if len(self.freeze_inits) == 1
                             else f"{net}, {self.init_labels[init]}")
                    x, y, low, high = (list(column) for column in zip(*points, strict=True))
                    series.append(figures.Series(label, x, y, low, high,
                                                 {"color": colours[(net, init)], "marker": "o"}))
                    glorot = self.mean_auc(task, net, GLOROT)
                    if (glorot is not None and GLOROT not in self.freeze_inits
                            and init == self.freeze_inits[0]):
                        series.append(figures.Series(
                            f"{net}, glorot", [0.0, 1.0], [glorot, glorot],
                            style={"color": colours[(net, init)], "linestyle": "--"}))
            if series:
                panels[task] = series
        return panels

    def _auc_size_panels(self) -> dict[str, list[figures.Series]]:
        """Test AUC against training images, a panel per task (at any size) and net, a
        line per init (and freeze, when an init has several); only when the experiment
        has more than one ``train_size``."""
        if len(self.train_sizes) < 2:
            return {}
        groups: dict[tuple, dict[tuple, list[StudyRun]]] = defaultdict(lambda: defaultdict(list))
        for run in self.runs:
            if run.complete:
                groups[(run.task_any_size, run.net)][(run.init, run.freeze)].append(run)
        panels = {}
        for (task, net), lines in groups.items():
            freezes = defaultdict(set)
            for init, freeze in lines:
                freezes[init].add(freeze)
            keys = sorted(lines, key=lambda key: (self.inits.index(key[0]), key[1]))
            others = iter(_colours(sum(init != GLOROT for init, _ in keys)))
            series = []
            for init, freeze in keys:
                # glorot in black, as in the other figures.
                colour = "black" if init == GLOROT else next(others)
                by_size = defaultdict(list)
                for run in lines[(init, freeze)]:
                    # A run of the whole split from before metrics.json had train_images
                    # has no place on the axis.
                    if _train_images(run) is not None:
                        by_size[_train_images(run)].append(run)
                if not by_size:
                    continue
                points = sorted((size, *self._auc_with_error(done))
                                for size, done in by_size.items())
                label = self.init_labels[init]
                if len(freezes[init]) > 1:
                    label += f", freeze {freeze_label(freeze)}"
                x, y, low, high = (list(column) for column in zip(*points, strict=True))
                series.append(figures.Series(label, x, y, low, high,
                                             {"color": colour, "marker": "o"}))
            if any(len(item.x) > 1 for item in series):
                panels[f"{task} · {net}"] = series
        return panels

    def _auc_with_error(self, done: list[StudyRun]) -> tuple[float, float, float]:
        if len(done) == 1:
            interval = self.bootstrap.interval(done[0])
            if interval is None:
                return done[0].auc, done[0].auc, done[0].auc
            # Within the rounding _disagreement allows, the point may sit just outside.
            return done[0].auc, min(interval.low, done[0].auc), max(interval.high,
                                                                    done[0].auc)
        mean, std = mean_std([run.auc for run in done])
        return mean, mean - std, mean + std


def _colours(count: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(index / max(1, count - 1) * 0.9) for index in range(count)]


def _is_binary(run: StudyRun) -> bool:
    classes = run.record.config.num_classes or run.record.metrics.get("num_classes")
    return classes == 2


def _train_images(run: StudyRun) -> int | None:
    """How many images the run trained on: metrics.json's count (the whole split when
    train_size is unset), else its train_size; None when neither says."""
    count = run.record.metrics.get("train_images", run.record.config.train_size)
    return None if count is None else int(count)


def _difference_text(found: Difference | str | None) -> tuple[str, str]:
    """A difference and its p-value as table cells."""
    if found is None:
        return MISSING, MISSING
    if isinstance(found, str):
        return f"not computed ({found})", MISSING
    p = f"< {1 / found.resamples:.3g}" if found.p_value == 0 else f"{found.p_value:.3f}"
    return f"{found.estimate:+.4f} [{found.low:+.4f}, {found.high:+.4f}]", p


def _datasets(count: int) -> str:
    return f"{count} dataset{'s' if count != 1 else ''}"


def _mean_text_percent(values: list[float], nets: int) -> str:
    if not values:
        return MISSING
    return f"{percent_text(float(np.mean(values)))} ({len(values)} of {nets} nets)"


def _mean_ratio_text(ratios: list[float], never: int) -> str:
    if not ratios:
        return "never reached" if never else MISSING
    text = f"{np.mean(ratios):.2f}×"
    return text + (f" ({never} never reached)" if never else "")


def _published_percent(values: Any, key: str) -> str:
    value = values.get(key) if isinstance(values, dict) else None
    return percent_text(float(value)) if isinstance(value, int | float) else MISSING


def _published_overall(values: Any, text) -> str:
    """The published overall value; when it is not the mean of the published per-dataset
    values (more than one of them), the cell says so and gives that mean."""
    overall = values.get("overall") if isinstance(values, dict) else values
    if not isinstance(overall, int | float):
        return MISSING
    cell = text(float(overall))
    per_dataset = [float(value) for key, value in values.items()
                   if key != "overall" and isinstance(value, int | float)] \
        if isinstance(values, dict) else []
    if len(per_dataset) > 1:
        mean = float(np.mean(per_dataset))
        if text(mean) != cell:
            cell += (f" (not the mean of the published per-dataset values, "
                     f"{text(mean)})")
    return cell


def _published_ratio(value: Any, key: str) -> str:
    if isinstance(value, dict):
        value = value.get(key)
    elif key != "overall":
        value = None
    return f"{float(value):g}×" if isinstance(value, int | float) else MISSING
