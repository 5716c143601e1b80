"""``build_report(experiment_dir) -> Report``: an experiment's runs as the study's tables.

Reads every run directory through ``training.rundir.scan_experiment`` (never the files
themselves) and writes ``results.csv``, ``summary.md`` and figures (PNG, PDF or SVG).

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
import io
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medtransfer.config import NOT_IDENTITY, RUN_ID_BASE, init_source_name
from medtransfer.errors import MedtransferError
from medtransfer.fileio import write_text_atomic
from medtransfer.plotting import check_format, save_figure
from medtransfer.study import figures
from medtransfer.study.stats import (
    LEVEL,
    Difference,
    Interval,
    paired_difference,
    percentile_interval,
    resample_counts,
    resampled_auc_micro,
)
from medtransfer.training.metrics import auc_micro
from medtransfer.training.rundir import RunRecord, scan_experiment

MIN_RESAMPLES = 1000
GLOROT = "glorot"
NAMED_INITS = ("glorot", "imagenet", "mean_var")
MISSING = "—"
# Config fields that cannot change a run's numbers, and a cell's own axes: runs that
# differ only in these are the same task.
_NOT_TASK = frozenset(NOT_IDENTITY) | frozenset(RUN_ID_BASE)


@dataclass
class Report:
    """What ``build_report`` wrote.

    Attributes:
        out_dir: the report folder.
        results: results.csv.
        summary: summary.md.
        figures: the figure files (PNG, PDF or SVG).
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
class _Run:
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
    return Study(experiment_dir, records, sweep, _Bootstrap(resamples, seed), sweep_note)


def build_report(experiment_dir: str | Path, out: str | Path | None = None, *,
                 resamples: int = MIN_RESAMPLES, seed: int = 0,
                 figure_format: str = "png") -> Report:
    """Reads every run of an experiment and writes its tables, statistics and figures.

    Args:
        experiment_dir: ``<logdir>/<experiment>``.
        out: the report folder (default ``<experiment_dir>/report``).
        resamples: bootstrap resamples, at least 1000.
        seed: seeds the bootstrap; the same seed gives the same numbers.
        figure_format: ``png`` (200 dpi), ``pdf`` or ``svg``.

    Returns:
        Where the files went and the main table.

    Raises:
        MedtransferError: not an experiment folder, no run in it, too few resamples, or
            an output folder that cannot be written.
    """
    figure_format = check_format(figure_format)
    study = load_study(experiment_dir, resamples=resamples, seed=seed)
    out_dir = Path(out).expanduser() if out else study.experiment_dir / "report"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise MedtransferError(
            f"Cannot create the report folder '{out_dir}' ({error.strerror}). Choose "
            "another with --out."
        ) from None
    summary_text, main_text = study.summary(figure_format)
    results = out_dir / "results.csv"
    summary = out_dir / "summary.md"
    write_text_atomic(results, study.results_csv())
    write_text_atomic(summary, summary_text)
    written = [save_figure(figure, out_dir / Path(name).with_suffix(f".{figure_format}"))
               for name, figure in study.figures()]
    return Report(out_dir, results, summary, written, main_text, study.skipped)


def _no_runs_message(experiment_dir: Path) -> str:
    """Why an experiment folder gives no report: a run directory passed instead, only
    failed runs (each with its error.txt's first line), or no run at all."""
    from medtransfer.training.rundir import RunDirectory

    if (experiment_dir / "config.yaml").exists():
        return (f"'{experiment_dir}' is a run directory, not an experiment. Pass the folder "
                f"that holds it: {experiment_dir.parent}.")
    failed = [RunDirectory(child) for child in sorted(experiment_dir.iterdir())
              if RunDirectory(child).error.is_file()]
    if failed:
        listing = "".join(
            f"- {run.path.name}: {run.error.read_text(errors='replace').partition(chr(10))[0]}\n"
            for run in failed)
        return (f"'{experiment_dir}' holds no run to report: its {len(failed)} run"
                f"{'s' if len(failed) != 1 else ''} failed before training:\n{listing}Each "
                "error.txt holds the exit code, the options and the last lines of the run's "
                "output. Fix the cause and run the sweep again.")
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


def init_label(init: str) -> str:
    """How an init reads in a table: its name, or ``transfer from <source run id>``."""
    if init in NAMED_INITS:
        return init
    return f"transfer from {init_source_name(init) or init}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def _freeze_text(freeze: float) -> str:
    return f"{freeze:g}"


def _task_labels(records: list[RunRecord], ignore: tuple[str, ...] = ()) -> dict[Path, str]:
    """Dataset label per run: the dataset, plus what differs between tasks on it (except
    the config fields in ``ignore``)."""
    settings: dict[tuple[str, str], dict[Path, dict[str, Any]]] = defaultdict(dict)
    whole_split = _whole_split_sizes(records)
    for record in records:
        config = record.config.to_dict()
        if config["train_size"] is None:
            # The whole training split: "all (N)", not "None".
            count = whole_split.get((config["dataset"], repr(config["classes"])))
            config["train_size"] = f"all ({count})" if count else "all"
        settings[(config["dataset"], config["net"])][record.path] = {
            key: value for key, value in config.items()
            if key not in _NOT_TASK and key not in ignore}
    labels = {}
    for (dataset, _), by_run in settings.items():
        keys = sorted({key for setting in by_run.values() for key in setting})
        varying = [key for key in keys
                   if len({repr(setting.get(key)) for setting in by_run.values()}) > 1]
        for path, setting in by_run.items():
            differs = ", ".join(f"{key}={_value_text(setting.get(key))}" for key in varying)
            labels[path] = f"{dataset} ({differs})" if differs else dataset
    return labels


def _whole_split_sizes(records: list[RunRecord]) -> dict[tuple[str, str], int]:
    """(dataset, classes) -> the training images of its whole split, from metrics.json
    of a run without train_size (in-progress runs of the same task get it too)."""
    sizes = {}
    for record in records:
        count = record.metrics.get("train_images")
        if record.config.train_size is None and isinstance(count, int):
            sizes[(record.config.dataset, repr(record.config.classes))] = count
    return sizes


def _natural_key(value: Any) -> list[tuple[int, Any]]:
    """Sorts text with numbers in it by the numbers' values (``train_size=20`` before
    ``train_size=100``), and a number before a word at the same place (``100`` before
    ``all (717)``)."""
    return [(0, float(part)) if index % 2 else (1, part)
            for index, part in enumerate(re.split(r"(\d+(?:\.\d+)?)", str(value)))]


def _value_text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def _status_text(run: _Run) -> str:
    record = run.record
    if record.status == "in progress":
        word = "running" if record.running else "interrupted"
        total = record.config.total_epochs
        return f"{word} (epoch {record.epochs_done}/{total})"
    if record.status == "diverged":
        return f"diverged (epoch {record.metrics.get('diverged_epoch', '?')})"
    return record.status


def _status_word(record: RunRecord) -> str:
    if record.status == "in progress":
        return "running" if record.running else "interrupted"
    return record.status


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); std is NaN for one value."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else math.nan


def _order(values: Iterable, preferred: list) -> list:
    """``values`` in the order ``preferred`` gives them, the rest sorted after."""
    values = set(values)
    first = [value for value in dict.fromkeys(preferred) if value in values]
    return first + sorted(values - set(first), key=_natural_key)


def _percent(value: float) -> str:
    return f"{100 * value:+.2f}%"


def _cells(rows: list[list[str]], header: list[str]) -> str:
    """A markdown table."""
    def line(cells):
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"
    return "\n".join([line(header), line(["---"] * len(header)), *map(line, rows)])


class _Bootstrap:
    """Resampled AUCs per run, computed once; runs on the same test split share resamples."""

    def __init__(self, resamples: int, seed: int):
        self.resamples, self.seed = resamples, seed
        self._counts: dict[tuple, np.ndarray] = {}
        self._runs: dict[Path, tuple | str] = {}

    def _of(self, run: _Run) -> tuple | str:
        if run.record.path not in self._runs:
            self._runs[run.record.path] = self._compute(run)
        return self._runs[run.record.path]

    def _compute(self, run: _Run) -> tuple | str:
        try:
            predictions = run.record.predictions
        except MedtransferError:
            return "no readable predictions_test.csv"
        if predictions.probabilities.shape[1] < 2 or not predictions.ids:
            return "predictions_test.csv has fewer than two classes or no image"
        # One canonical image order, so that two runs on the same split line up.
        order = np.argsort(np.asarray(predictions.ids, dtype=object), kind="stable")
        ids = tuple(predictions.ids[i] for i in order)
        labels = predictions.labels[order]
        probabilities = predictions.probabilities[order]
        key = (ids, labels.tobytes())
        if key not in self._counts:
            self._counts[key] = resample_counts(labels, self.resamples, self.seed)
        samples = resampled_auc_micro(labels, probabilities, self._counts[key])
        return key, auc_micro(labels, probabilities), samples

    def interval(self, run: _Run) -> Interval | None:
        found = self._of(run)
        if isinstance(found, str):
            return None
        return percentile_interval(run.auc, found[2])

    def difference(self, run_a: _Run, run_b: _Run) -> Difference | str:
        """Paired bootstrap of ``AUC_A - AUC_B``, or why it cannot be computed."""
        found_a, found_b = self._of(run_a), self._of(run_b)
        for found in (found_a, found_b):
            if isinstance(found, str):
                return found
        if found_a[0] != found_b[0]:
            return "different test splits"
        return paired_difference(found_a[1] - found_b[1], found_a[2], found_b[2])


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
    curve = _curve(glorot_history)
    if not curve:
        return None
    target = max(value for _, value in curve)
    glorot_epoch = next(epoch for epoch, value in curve if value == target)
    reached = next((epoch for epoch, value in _curve(transfer_history) if value >= target), None)
    return _SpeedUp(glorot_epoch, target, reached)


def _curve(history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    return [(int(row["epoch"]), float(row["val_auc_micro"])) for row in history
            if isinstance(row.get("val_auc_micro"), int | float)]


class Study:
    """The runs of one experiment on the study's axes, and every table and figure built
    from them (see :func:`load_study`)."""

    def __init__(self, experiment_dir: Path, records: list[RunRecord],
                 sweep: dict[str, Any], bootstrap: _Bootstrap, sweep_note: str = ""):
        self.experiment_dir = experiment_dir
        self.sweep_note = sweep_note
        self.records = records
        self.bootstrap = bootstrap
        self.skipped = [(record.path, record.problem) for record in records
                        if record.status == "broken"]
        placed = [record for record in records if record.config is not None]
        labels = _task_labels(placed)
        any_size = _task_labels(placed, ignore=("train_size",))
        self.runs = [
            _Run(record, labels[record.path], record.config.dataset, record.config.net,
                 record.config.init, float(record.config.freeze), int(record.config.seed),
                 any_size[record.path])
            for record in placed
        ]
        # None (the whole training split) is a size too.
        self.train_sizes = {record.config.train_size for record in placed}
        self.cells: dict[tuple, list[_Run]] = defaultdict(list)
        for run in sorted(self.runs, key=lambda run: run.seed):
            self.cells[(run.task, run.net, run.init, run.freeze)].append(run)
        self.sweep = sweep
        self.published = sweep.get("published") if isinstance(sweep.get("published"),
                                                              dict) else {}
        grids = _grids(sweep)
        grid_values = {key: [value for grid in grids for value in grid.get(key, [])]
                       for key in ("dataset", "net", "init", "freeze")}
        self.tasks_of_dataset = defaultdict(set)
        for run in self.runs:
            self.tasks_of_dataset[run.dataset].add(run.task)
        rows = {(run.task, run.net) for run in self.runs}
        # Rows the sweep asks for but no run has started yet show as missing cells.
        for grid in grids:
            for dataset in grid.get("dataset", []):
                for net in grid.get("net", []):
                    if not self.tasks_of_dataset.get(dataset):
                        rows.add((str(dataset), str(net)))
        task_order = _order({task for task, _ in rows},
                            [task for dataset in grid_values["dataset"]
                             for task in sorted(self.tasks_of_dataset.get(dataset, {dataset}),
                                                key=_natural_key)])
        net_order = _order({net for _, net in rows}, grid_values["net"])
        self.rows = sorted(rows, key=lambda row: (task_order.index(row[0]),
                                                  net_order.index(row[1])))
        named = [init for init in grid_values["init"] if init in NAMED_INITS]
        self.inits = _order({run.init for run in self.runs} | set(named),
                            [*NAMED_INITS, *named])
        self.transfer_inits = [init for init in self.inits if init != GLOROT]
        self.freezes = sorted({run.freeze for run in self.runs if run.init != GLOROT}
                              | {float(f) for f in grid_values["freeze"]
                                 if isinstance(f, int | float)})
        self.task_dataset = {run.task: run.dataset for run in self.runs}

    # -- cells ------------------------------------------------------------------

    def complete(self, task: str, net: str, init: str, freeze: float) -> list[_Run]:
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
            mean, std = _mean_std([run.auc for run in done])
            parts.append(f"{mean:.4f} ± {std:.4f} (n={len(done)})")
        parts += [_status_text(run) for run in runs if not run.complete]
        return "; ".join(parts) or MISSING

    def mean_auc(self, task: str, net: str, init: str, freeze: float = 0.0) -> float | None:
        done = self.complete(task, net, init, freeze)
        return _mean_std([run.auc for run in done])[0] if done else None

    # -- tables -----------------------------------------------------------------

    def main_table(self) -> str:
        header = ["dataset", "net", *(init_label(init) for init in self.inits)]
        rows = [[task, net, *(self.cell_text(task, net, init, 0.0) for init in self.inits)]
                for task, net in self.rows]
        return _cells(rows, header)

    def legend(self) -> str:
        boot = self.bootstrap
        return (
            "Test micro AUC of the best checkpoint (best validation micro AUC) at freeze 0, "
            f"[{LEVEL:.0%} percentile bootstrap interval over the test images, "
            f"{boot.resamples} stratified resamples, seed {boot.seed}]; with several seeds, "
            "mean ± sample standard deviation (ddof=1) over n seeds. "
            f"{MISSING}: no run."
        )

    def freeze_table(self, init: str) -> str:
        rows = [(task, net) for task, net in self.rows
                if any(run.init == init for run in self.runs
                       if (run.task, run.net) == (task, net))]
        header = ["dataset", "net", "glorot (freeze 0)",
                  *(f"freeze {_freeze_text(freeze)}" for freeze in self.freezes)]
        body = [[task, net, self.cell_text(task, net, GLOROT, 0.0),
                 *(self.cell_text(task, net, init, freeze) for freeze in self.freezes)]
                for task, net in rows]
        return _cells(body, header)

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
        label = init_label(init)
        header = ["dataset", "net", "glorot", label, "improvement", "speed-up"]
        body = []
        for task, net in self.pair_rows(init):
            improvement = self.improvement(task, net, init)
            body.append([
                task, net, self._mean_text(task, net, GLOROT), self._mean_text(task, net, init),
                _percent(improvement) if improvement is not None else MISSING,
                self._speed_up_text(self.speed_ups(task, net, init)),
            ])
        return _cells(body, header)

    def _mean_text(self, task: str, net: str, init: str) -> str:
        done = self.complete(task, net, init, 0.0)
        if not done:
            return self.cell_text(task, net, init, 0.0)
        mean, std = _mean_std([run.auc for run in done])
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
        mean, std = _mean_std(reached)
        text = f"{mean:.2f}×" if len(reached) == 1 else f"{mean:.2f} ± {std:.2f}×"
        text += f" (n={len(reached)})"
        return text + (f"; never reached in {never}/{len(found)} seeds" if never else "")

    def dataset_summary(self, init: str) -> tuple[str, list]:
        """Improvement and speed-up per dataset (mean over nets) and overall."""
        published = self._published_for(init)
        improvements, speeds = {}, {}
        for task in _order({task for task, _ in self.pair_rows(init)},
                           [task for task, _ in self.rows]):
            nets = [net for row_task, net in self.pair_rows(init) if row_task == task]
            values = [v for v in (self.improvement(task, net, init) for net in nets)
                      if v is not None]
            ratios = [item.value for net in nets for item in self.speed_ups(task, net, init)
                      if item.value is not None]
            never = sum(item.value is None for net in nets
                        for item in self.speed_ups(task, net, init))
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
        overall = [
            "overall",
            f"{_percent(float(np.mean(per_task)))} (mean of {_datasets(len(per_task))})"
            if per_task else MISSING,
            f"{np.mean(per_task_speed):.2f}× (mean of {_datasets(len(per_task_speed))})"
            if per_task_speed else ("never reached" if never else MISSING),
        ]
        if published:
            overall.insert(2, _published_percent(published.get("improvement"), "overall"))
            overall.append(_published_ratio(published.get("speedup"), "overall"))
        body.append(overall)
        return _cells(body, header), body

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
        header = ["dataset", "net", "freeze", "seed", init_label(init), "glorot",
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
            found = self.bootstrap.difference(run, partner)
            if isinstance(found, str):
                comparison, p = f"not computed ({found})", MISSING
            else:
                comparison = f"{found.estimate:+.4f} [{found.low:+.4f}, {found.high:+.4f}]"
                p = (f"< {1 / found.resamples:.3g}" if found.p_value == 0
                     else f"{found.p_value:.3f}")
            body.append([run.task, run.net, _freeze_text(run.freeze), str(run.seed),
                         f"{run.auc:.4f}", f"{partner.auc:.4f}", comparison, p])
        return _cells(body, header) if body else ""

    # -- summary.md ---------------------------------------------------------------

    def summary(self, figure_format: str = "png") -> tuple[str, str]:
        """summary.md's text (linking the figures in ``figure_format``), and the part the
        CLI prints."""
        counts = defaultdict(int)
        for record in self.records:
            counts[_status_word(record)] += 1
        expect = self.sweep.get("expect")
        main = [self.main_table(), "", self.legend()]
        if isinstance(expect, str) and expect.strip():
            main += ["", f"Expected (sweep.yaml): {expect.strip()}"]
        for init in self.transfer_inits:
            table, _ = self.dataset_summary(init)
            main += ["", f"{init_label(init)} over glorot (freeze 0):", "", table]
        out = [
            f"# Report: {self.experiment_dir.name}",
            "",
            f"{len(self.records)} run director{'y' if len(self.records) == 1 else 'ies'} in "
            f"`{self.experiment_dir}`: "
            + ", ".join(f"{count} {word}" for word, count in sorted(counts.items())) + ".",
        ]
        if self.sweep_note:
            out += ["", f"Note: {self.sweep_note}; tables use the runs alone."]
        out += ["", "## Test AUC at freeze 0", "", *main[:3]]
        if isinstance(expect, str) and expect.strip():
            out += ["", f"Expected (sweep.yaml): {expect.strip()}"]
        for init in self.transfer_inits:
            label = init_label(init)
            out += [
                "", f"## {label}: test AUC per freeze level", "", self.freeze_table(init),
                "", f"## {label} over glorot", "",
                "Both at freeze 0 (every layer fine-tuned), same dataset and net. "
                "Improvement: (AUC_A − AUC_glorot) / AUC_glorot of the mean test micro AUCs; "
                "per dataset, the mean over nets; overall, the mean over datasets. Speed-up: "
                "e_glorot / e_A, e_glorot the first epoch of glorot's best validation AUC and "
                "e_A the first epoch at which A's validation AUC reaches it, per seed run by "
                "both (epochs count warm-up and fine-tuning).",
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
                    *(f"- `{record.path.name}`: {_status_text(self._run_of(record))}"
                      for record in unfinished)]
        if self.skipped:
            out += ["", "## Skipped (broken run directories)", "",
                    *(f"- `{path.name}`: {problem}" for path, problem in self.skipped)]
        figure_names = [Path(name).with_suffix(f".{figure_format}").name
                        for name, _ in self.figure_specs()]
        if figure_names:
            out += ["", "## Figures", "", *(f"- [{name}]({name})" for name in figure_names),
                    "", "Error bars of the freeze and training-set size figures: the "
                    "bootstrap interval for one seed, ± the sample standard deviation over "
                    "seeds for several."]
        return "\n".join(out) + "\n", "\n".join(main) + "\n"

    def _run_of(self, record: RunRecord) -> _Run:
        return next(run for run in self.runs if run.record is record)

    # -- results.csv ----------------------------------------------------------------

    def results_csv(self) -> str:
        rows = []
        for record in self.records:
            row: dict[str, Any] = {"run_dir": str(record.path), "status": _status_word(record)}
            if record.config is not None:
                row.update({key: getattr(record.config, key)
                            for key in ("dataset", "net", "init", "freeze", "seed")})
            row.update({key: value for key, value in record.metrics.items() if key != "status"})
            row["epochs_done"] = record.epochs_done
            run = next((run for run in self.runs if run.record is record), None)
            interval = self.bootstrap.interval(run) if run and run.complete else None
            row["test_auc_micro_ci_low"] = interval.low if interval else ""
            row["test_auc_micro_ci_high"] = interval.high if interval else ""
            row["problem"] = record.problem
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
        return [(name, build()) for name, build in self.figure_specs()]

    def figure_specs(self) -> list[tuple[str, Any]]:
        """(file name, builder) of every figure this experiment has data for."""
        specs = []
        for init in self.transfer_inits:
            slug, label = _slug(init_label(init)), init_label(init)
            if self._freeze_panels(init):
                specs.append((f"val_auc_by_freeze_{slug}.png",
                              lambda init=init, label=label: figures.validation_by_freeze(
                                  self._freeze_panels(init), label)))
            if self._versus_panels(init)[0]:
                specs.append((f"glorot_vs_{slug}.png",
                              lambda init=init, label=label: figures.glorot_against_transfer(
                                  self._versus_panels(init)[0], label,
                                  self._versus_panels(init)[1])))
        if self._auc_freeze_panels():
            specs.append(("test_auc_vs_freeze.png",
                          lambda: figures.test_auc_against_freeze(self._auc_freeze_panels())))
        if self._auc_size_panels():
            specs.append(("test_auc_vs_train_size.png",
                          lambda: figures.test_auc_against_train_size(self._auc_size_panels())))
        return specs

    def _mean_curve(self, runs: list[_Run]) -> tuple[list[float], list[float]]:
        """Validation AUC per epoch, averaged over the runs (epochs all of them logged)."""
        by_epoch = defaultdict(list)
        for run in runs:
            for epoch, value in _curve(run.record.history):
                by_epoch[epoch].append(value)
        epochs = sorted(epoch for epoch, values in by_epoch.items() if len(values) == len(runs))
        return epochs, [float(np.mean(by_epoch[epoch])) for epoch in epochs]

    def _series(self, label: str, runs: list[_Run], style: dict) -> figures.Series | None:
        x, y = self._mean_curve(runs)
        if not x:
            return None
        suffix = f" (n={len(runs)})" if len(runs) > 1 else ""
        # Markers keep a run with a single epoch so far visible.
        return figures.Series(label + suffix, x, y, style={"marker": "o", "markersize": 3,
                                                           **style})

    def _freeze_panels(self, init: str) -> dict[str, list[figures.Series]]:
        panels = {}
        colours = _colours(len(self.freezes))
        for task, net in self.rows:
            series = [self._series("glorot, freeze 0", self.cells.get((task, net, GLOROT, 0.0),
                                                                     []),
                                   {"color": "black", "linestyle": "--"})]
            for freeze, colour in zip(self.freezes, colours, strict=True):
                series.append(self._series(f"freeze {_freeze_text(freeze)}",
                                           self.cells.get((task, net, init, freeze), []),
                                           {"color": colour}))
            if any(item is not None for item in series[1:]):
                panels[f"{task} · {net}"] = [item for item in series if item is not None]
        return panels

    def _versus_panels(self, init: str) -> tuple[dict, dict]:
        panels, targets = {}, {}
        for task, net in self.rows:
            glorot = self._series("glorot", self.cells.get((task, net, GLOROT, 0.0), []),
                                  {"color": "black"})
            ours = self._series(init_label(init), self.cells.get((task, net, init, 0.0), []),
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
        panels: dict[str, list[figures.Series]] = {}
        lines = [(net, init) for net in _order({net for _, net in self.rows},
                                               [net for _, net in self.rows])
                 for init in self.transfer_inits]
        colours = dict(zip(lines, _colours(len(lines)), strict=True))
        for task in dict.fromkeys(task for task, _ in self.rows):
            series = []
            for net, init in lines:
                points = []
                for freeze in self.freezes:
                    done = self.complete(task, net, init, freeze)
                    if done:
                        points.append((freeze, *self._auc_with_error(done)))
                if points:
                    label = net if len(self.transfer_inits) == 1 else f"{net}, {init_label(init)}"
                    x, y, low, high = (list(column) for column in zip(*points, strict=True))
                    series.append(figures.Series(label, x, y, low, high,
                                                 {"color": colours[(net, init)], "marker": "o"}))
                    glorot = self.mean_auc(task, net, GLOROT)
                    if glorot is not None and init == self.transfer_inits[0]:
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
        groups: dict[tuple, dict[tuple, list[_Run]]] = defaultdict(lambda: defaultdict(list))
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
                label = init_label(init)
                if len(freezes[init]) > 1:
                    label += f", freeze {_freeze_text(freeze)}"
                x, y, low, high = (list(column) for column in zip(*points, strict=True))
                ticks = [f"all ({size})" if any(run.record.config.train_size is None
                                                for run in by_size[size]) else f"{size:g}"
                         for size in x]
                series.append(figures.Series(label, x, y, low, high,
                                             {"color": colour, "marker": "o"}, ticks))
            if any(len(item.x) > 1 for item in series):
                panels[f"{task} · {net}"] = series
        return panels

    def _auc_with_error(self, done: list[_Run]) -> tuple[float, float, float]:
        if len(done) == 1:
            interval = self.bootstrap.interval(done[0])
            if interval is None:
                return done[0].auc, done[0].auc, done[0].auc
            return done[0].auc, interval.low, interval.high
        mean, std = _mean_std([run.auc for run in done])
        return mean, mean - std, mean + std


def _colours(count: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(index / max(1, count - 1) * 0.9) for index in range(count)]


def _train_images(run: _Run) -> int | None:
    """How many images the run trained on: metrics.json's count (the whole split when
    train_size is unset), else its train_size; None when neither says."""
    count = run.record.metrics.get("train_images", run.record.config.train_size)
    return None if count is None else int(count)


def _datasets(count: int) -> str:
    return f"{count} dataset{'s' if count != 1 else ''}"


def _mean_text_percent(values: list[float], nets: int) -> str:
    if not values:
        return MISSING
    return f"{_percent(float(np.mean(values)))} ({len(values)} of {nets} nets)"


def _mean_ratio_text(ratios: list[float], never: int) -> str:
    if not ratios:
        return "never reached" if never else MISSING
    text = f"{np.mean(ratios):.2f}×"
    return text + (f" ({never} never reached)" if never else "")


def _published_percent(values: Any, key: str) -> str:
    value = values.get(key) if isinstance(values, dict) else None
    return _percent(float(value)) if isinstance(value, int | float) else MISSING


def _published_ratio(value: Any, key: str) -> str:
    if isinstance(value, dict):
        value = value.get(key)
    elif key != "overall":
        value = None
    return f"{float(value):g}×" if isinstance(value, int | float) else MISSING
