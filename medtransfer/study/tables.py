"""The study's tables: test AUC per cell, per freeze level, improvement and speed-up over
glorot, and the paired bootstrap of each difference."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from medtransfer.study.labels import (
    GLOROT,
    MISSING,
    NAMED_INITS,
    freeze_label,
    init_label_texts,
    markdown_table,
    mean_std,
    natural_key,
    ordered,
    percent_text,
    published_overall,
    published_percent,
    published_ratio,
    status_text,
    task_labels,
    whole_split_sizes,
)
from medtransfer.study.resampling import Bootstrap
from medtransfer.study.runs import (
    StudyRun,
    planned_init,
    planned_tasks,
    read_planned,
    source_names,
    study_init,
)
from medtransfer.study.speed import SpeedUp, speed_up
from medtransfer.study.stats import (
    LEVEL,
    Difference,
)
from medtransfer.training.rundir import MULTI_LABEL_PRIMARY, RunRecord, primary_metric

# How far (in AUC) metrics.json may lie outside the interval from the predictions.
_AGREEMENT = 1e-4
DIFFERENCE_LEGEND = (
    "Δ AUC: the mean over seeds of AUC_A − AUC_glorot, runs paired by seed, on the same "
    f"test images; {LEVEL:.0%} percentile interval and p-value (the share of resamples on "
    "the other side of zero, doubled, capped at 1) from a two-level paired bootstrap: each "
    "resample draws the seeds with replacement and the test images (stratified; the same "
    "image indices for every run), so the interval covers both the variation between "
    "training runs and that of the test sample (with one seed, the test sample only)."
)


def _is_binary(run: StudyRun) -> bool:
    classes = run.record.config.num_classes or run.record.metrics.get("num_classes")
    return classes == 2


def _is_multi_label(run: StudyRun) -> bool:
    return primary_metric(run.record.metrics) == MULTI_LABEL_PRIMARY


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


class StudyTables:
    """The runs of one experiment placed on the study's axes (dataset/task, net, init,
    freeze, seed), and the tables built from them."""

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
        labels = task_labels(configs, whole_split=whole_split_sizes(placed))
        any_size = task_labels(configs, ignore=("train_size",))
        runs = [
            StudyRun(record, labels[record.path], record.config.dataset, record.config.net,
                 study_init(record.config), float(record.config.freeze),
                 int(record.config.seed),
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
        # Datasets in the grid's order; a dataset's tasks by their numbers (sizes).
        planned_tasks_in_order = list(dict.fromkeys(task for task, _, _, _ in planned_cells))
        datasets = list(dict.fromkeys(self.task_dataset[task] for task in planned_tasks_in_order))
        task_order = ordered({task for task, _ in rows}, sorted(
            planned_tasks_in_order,
            key=lambda task: (datasets.index(self.task_dataset[task]), natural_key(task))))
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
        key = f"test_{primary_metric(run.record.metrics)}"
        auc = run.record.metrics.get(key)
        if interval is None or not isinstance(auc, int | float):
            return ""
        # metrics.json keeps float32 AUCs and the CSV rounded probabilities: allow for it.
        if interval.low - _AGREEMENT <= auc <= interval.high + _AGREEMENT:
            return ""
        found = self.bootstrap.resamples_of(run)
        return (f"metrics.json's {key} {auc:.4f} lies outside the {LEVEL:.0%} "
                f"interval [{interval.low:.4f}, {interval.high:.4f}] computed from its own "
                f"predictions_test.csv (AUC {found[1]:.4f}): the two files disagree, so the "
                "run is left out of the tables. Train it again with --overwrite (or put "
                "back the predictions file it wrote).")

    def complete(self, task: str, net: str, init: str, freeze: float) -> list[StudyRun]:
        """The complete runs of a cell, by seed."""
        return [run for run in self.cells.get((task, net, init, freeze), []) if run.complete]

    def cell_text(self, task: str, net: str, init: str, freeze: float) -> str:
        """A cell: the AUC with its interval, or mean ± sd over seeds, and unfinished runs."""
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
        """The mean test AUC over the cell's complete runs; None without one."""
        done = self.complete(task, net, init, freeze)
        return mean_std([run.auc for run in done])[0] if done else None

    def main_table(self) -> str:
        """Test AUC at freeze 0: a row per (task, net), a column per init."""
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

    def finding_table(self) -> str:
        """Every complete multi-label run's per-finding test AUCs with their percentile
        intervals over the test images, and accuracy at 0.5; "" without such a run."""
        rows = []
        for run in self.runs:
            if not (run.complete and _is_multi_label(run)):
                continue
            intervals = self.bootstrap.finding_intervals(run) or {}
            accuracies = run.record.metrics.get("test_accuracy_per_finding") or {}
            for finding, interval in intervals.items():
                accuracy = accuracies.get(finding)
                rows.append([run.task, run.net, self.init_labels.get(run.init, run.init),
                             f"{run.freeze:g}", str(run.seed), finding,
                             f"{interval.estimate:.4f} [{interval.low:.4f}, {interval.high:.4f}]",
                             f"{accuracy:.4f}" if isinstance(accuracy, int | float) else MISSING])
        if not rows:
            return ""
        return markdown_table(rows, ["dataset", "net", "init", "freeze", "seed", "finding",
                                     f"test AUC [{LEVEL:.0%} interval]", "accuracy at 0.5"])

    def legend(self) -> str:
        """What the main table's cells are."""
        boot = self.bootstrap
        return (
            "Test micro AUC of the best checkpoint (best validation micro AUC) at freeze 0, "
            f"[{LEVEL:.0%} percentile bootstrap interval over the test images, "
            f"{boot.resamples} stratified resamples, seed {boot.seed}]; with several seeds, "
            "mean ± sample standard deviation (ddof=1) over n seeds. "
            f"{MISSING}: no run."
            + (" Multi-label tasks: the mean over findings of each finding's test ROC AUC "
               "(best validation mean AUC), resampled stratified by each image's set of "
               "findings; the per-finding table follows."
               if any(_is_multi_label(run) for run in self.runs if run.complete) else "")
            + (" Binary tasks: \"positive class\" is the positive class's test AUC (our "
               "macro AUC), the metric MedMNIST, CheXpert and most benchmarks report; the "
               "micro AUC over both one-hot columns (the study's metric) comes first."
               if any(_is_binary(run) and "test_auc_macro" in run.record.metrics
                      for run in self.runs if run.complete) else "")
        )

    def freeze_table(self, init: str) -> str:
        """Test AUC of ``init`` per freeze level (glorot at freeze 0 first for other inits)."""
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
        """``(AUC_init - AUC_glorot) / AUC_glorot`` of the mean AUCs at freeze 0."""
        ours, glorot = self.mean_auc(task, net, init), self.mean_auc(task, net, GLOROT)
        return None if ours is None or glorot is None else (ours - glorot) / glorot

    def speed_ups(self, task: str, net: str, init: str) -> list[SpeedUp]:
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
        """Per (task, net): both AUCs, improvement, mean paired difference, speed-up."""
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
    def _speed_up_text(found: list[SpeedUp]) -> str:
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
                row.insert(2, published_percent(published.get("improvement"), dataset))
                row.append(published_ratio(published.get("speedup"), dataset))
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
            overall.insert(2, published_overall(published.get("improvement"), percent_text))
            overall.append(published_overall(published.get("speedup"),
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
        """Every run of ``init`` against glorot at freeze 0 of its seed: paired bootstrap."""
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
