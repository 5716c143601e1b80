"""Figure 7: ``medtransfer report`` on an experiment the size of the study.

The study's grid (configs/kierzynka2019.yaml: 132 runs) with 22,000 test images per run,
as cancer's test split (``--quick``: the first 12 runs, 2,000 images). The run
directories are fabricated through the writers a run uses (config.yaml, history.csv,
predictions_test.csv, metrics.json whose test AUC is the predictions' own), so only the
report is timed. Each call is ``medtransfer report`` in a fresh process (start-up
included), wall-clock time on every core the process may use:

- first call: no run has its bootstrap cache yet (the caches are removed before each
  repetition); its CPU seconds too, which a loaded machine does not inflate as much;
- repeated call: every run's resamples come from the cache beside it.

The two calls must write the same summary.md (the figure fails otherwise). A third row
compares the bootstrap AUC of one run (1,000 resamples) with the per-level ``reduceat``
computation the report used before, in CPU seconds of this process.
"""

from __future__ import annotations

import csv
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.report import Figure, Target
from medtransfer.config import save_config
from medtransfer.study.grid import load_sweep
from medtransfer.study.stats import resample_counts, resampled_auc_micro
from medtransfer.training.metrics import auc_micro, one_hot
from medtransfer.training.rundir import RunDirectory

SIZES = {False: (132, 22_000, 2), True: (12, 2_000, 1)}  # runs, test images, repetitions
STUDY = Path(__file__).resolve().parents[1] / "configs" / "kierzynka2019.yaml"


def write_experiment(root: Path, runs: int, images: int) -> Path:
    """The study's first ``runs`` runs with ``images`` binary test predictions each."""
    sweep = load_sweep(STUDY, logdir=root)
    rng = np.random.default_rng(0)
    labels = {}
    for planned in sweep.runs[:runs]:
        config = planned.config.replace(num_classes=2)
        directory = RunDirectory(config.run_dir)
        directory.create()
        save_config(config, directory.config)
        curve = np.sort(rng.uniform(0.6, 0.95, size=8))
        directory.write_history([{"epoch": epoch, "phase": "finetune", "loss": 1.0,
                                  "val_auc_micro": float(value)}
                                 for epoch, value in enumerate(curve, start=1)])
        # The runs of one dataset share its test split: the same ids and labels.
        truth = labels.setdefault(config.dataset, rng.integers(0, 2, size=images))
        signal = rng.uniform(0.3, 0.9)
        p = np.clip(rng.random(images) * (1 - signal) + signal * truth, 0, 1).round(6)
        probabilities = np.stack([1 - p, p], axis=1)
        with directory.predictions.open("w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["id", "label", "prob_0", "prob_1"])
            writer.writerows([f"{config.dataset}_{index:06d}", int(label), f"{a:.6f}",
                              f"{b:.6f}"]
                             for index, (label, (a, b)) in enumerate(
                                 zip(truth, probabilities, strict=True)))
        directory.write_metrics({
            "run_id": config.run_id, "dataset": config.dataset, "net": config.net,
            "init": config.init, "freeze": config.freeze, "seed": config.seed,
            "best_epoch": int(np.argmax(curve)) + 1, "val_auc_micro_best": float(curve.max()),
            "test_auc_micro": auc_micro(truth, probabilities), "status": "complete"})
    (sweep.experiment_dir / "sweep.yaml").write_text(STUDY.read_text())
    return sweep.experiment_dir


def _report_seconds(experiment: Path, out: Path) -> tuple[float, float]:
    """Wall-clock and CPU (user+sys) seconds of one ``medtransfer report``."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "medtransfer", "report", str(experiment),
                    "--out", str(out)], check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _previous_resampled_auc(labels, probabilities, counts) -> np.ndarray:
    """The report's bootstrap AUC before this figure: one reduceat over the score levels
    per resample chunk, in float64."""
    classes = probabilities.shape[1]
    scores = probabilities.ravel()
    order = np.argsort(scores, kind="stable")
    positive = one_hot(labels, classes).ravel()[order].astype(bool)
    image = order // classes
    ranked = scores[order]
    level_starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    result = np.empty(len(counts))
    rows = max(1, (1 << 22) // len(scores))
    for first in range(0, len(counts), rows):
        weights = counts[first:first + rows][:, image].astype(np.float64)
        positives = np.add.reduceat(np.where(positive, weights, 0.0), level_starts, axis=1)
        negatives = np.add.reduceat(np.where(positive, 0.0, weights), level_starts, axis=1)
        below = np.cumsum(negatives, axis=1) - negatives
        wins = (positives * (below + 0.5 * negatives)).sum(axis=1)
        result[first:first + rows] = wins / (positives.sum(axis=1) * negatives.sum(axis=1))
    return result


def _cpu_seconds(function) -> tuple[float, np.ndarray]:
    before = os.times()
    result = function()
    after = os.times()
    return (after.user - before.user) + (after.system - before.system), result


def measure(root: Path, quick: bool) -> tuple[list[Figure], list[str]]:
    runs, images, repeats = SIZES[quick]
    experiment = write_experiment(root / "report_logs", runs, images)
    first, repeated = [], []
    summaries = set()
    for repeat in range(repeats):
        for cache in experiment.glob("*/bootstrap_*.json"):
            cache.unlink()
        out = root / f"report_out_{repeat}"
        first.append(_report_seconds(experiment, out))
        summaries.add((out / "summary.md").read_text())
        repeated.append(_report_seconds(experiment, out))
        summaries.add((out / "summary.md").read_text())
    if len(summaries) != 1:
        raise RuntimeError("the first and the repeated report wrote different summaries")

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=images)
    p = np.clip(rng.random(images) * 0.5 + 0.5 * labels, 0, 1).round(6)
    probabilities = np.stack([1 - p, p], axis=1)
    counts = resample_counts(labels, 1000, seed=0)
    # Loads (or compiles) the numba loop outside the timing: a report pays it once.
    resampled_auc_micro(labels[:10], probabilities[:10], counts[:2, :10])
    old_seconds, old = _cpu_seconds(lambda: _previous_resampled_auc(labels, probabilities,
                                                                     counts))
    new_seconds, new = _cpu_seconds(lambda: resampled_auc_micro(labels, probabilities, counts))
    if not np.array_equal(old, new):
        raise RuntimeError("the vectorised bootstrap AUC differs from the previous one")
    name = f"{runs} runs x {images:,} test images"
    first_wall, first_cpu = min(first)
    repeated_wall, _ = min(repeated)
    figures = [
        Figure("report_first", f"report, first call ({name}) vs a repeated call",
               first_wall, repeated_wall, "s", Target(at_most=30.0, on_value=True)),
        Figure("report_repeated", f"report, repeated call ({name}, resamples cached) vs the "
               "first", repeated_wall, first_wall, "s", Target(at_most=5.0, on_value=True)),
        Figure("report_first_cpu", f"report, first call ({name}): CPU seconds (user+sys) vs "
               "wall-clock seconds", first_cpu, first_wall, "s"),
        Figure("report_bootstrap_auc", f"bootstrap AUC of one run ({images:,} images, 1,000 "
               "resamples): rank-based vs the previous reduceat, CPU s", new_seconds,
               old_seconds, "s"),
    ]
    notes = [
        f"Report: {name}, fabricated from configs/kierzynka2019.yaml's grid (binary "
        f"predictions, one test split per dataset); 'medtransfer report' in a fresh process, "
        f"wall-clock seconds on {os.cpu_count()} CPUs, best of {repeats}; the first call "
        "after removing every run's bootstrap cache, then the same call again. Both wrote "
        "the same summary.md. On a loaded machine the wall-clock time of the first call "
        "says little: its CPU seconds (user+sys, all threads) divided by the cores give "
        "what it takes on an idle machine. The bootstrap AUC row: CPU seconds (user+sys) "
        "of this process, the same counts, identical results (the compiled loop loaded "
        "beforehand).",
    ]
    return figures, notes
