"""Figure 8: ``sweep --estimate`` against the runs' real wall time, and ``--parallel 2``
against one run at a time.

A digits sweep of 4 configurations with different nets and freezes (small_cnn and
cbr_tiny, each at freeze 0 and 0.5; 32 px, 400 training images, 1+3 epochs; ``--quick``:
both nets at freeze 0.5 only, 16 px, 40 images, 1+1, so the same steps on 2 runs, each a
process of about 7 CPU-seconds) is estimated first (``estimate_sweep``: the calibration
is measured, not taken from a cache, and so is each net's set-up outside the steps, on one
tiny real run of it), then each run is trained as the sweep trains it
(``launch_run``: its own ``medtransfer run`` process), one at a time, and its wall time
(process start to exit) is compared with its estimate: the row's ratio is the relative
error, |estimate - measured| / measured, which must stay within 25%. Then the same
runs (a second experiment) are trained by ``medtransfer sweep --parallel 2`` in a fresh
process, and its wall time is compared with the one-at-a-time total.

Both are wall-clock times: on a machine other jobs load, the runs and the calibration
slow down at different moments, so the estimate is only as good as the machine is
quiet (the estimate leaves other jobs out). On 2 cores, two runs at once each get one
core: the gain is what one run leaves idle (start-up, evaluation, single-threaded
parts), not a doubling.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmarks.report import Figure, Target
from medtransfer.study.estimate import estimate_sweep
from medtransfer.study.grid import load_sweep
from medtransfer.study.launch import launch_run

# image size, training images, epochs
SIZES = {False: (32, 400, "1+3"), True: (16, 40, "1+1")}
NETS = ["small_cnn", "cbr_tiny"]
FREEZES = {False: [0.0, 0.5], True: [0.5]}
ROOT = Path(__file__).resolve().parents[1]


def write_sweep(root: Path, experiment: str, quick: bool) -> Path:
    size, train, epochs = SIZES[quick]
    path = root / f"{experiment}.yaml"
    path.write_text(yaml.safe_dump({
        "experiment": experiment,
        "base": {"dataset": "digits", "image_size": size, "batch_size": 32, "epochs": epochs,
                 "train_size": train, "data_dir": str(root / "datasets"),
                 "logdir": str(root / "cost_logs")},
        "grid": {"net": NETS, "freeze": FREEZES[quick]}}))
    return path


def measure(root: Path, quick: bool) -> tuple[list[Figure], list[str]]:
    from medtransfer.data.prepared import load_prepared

    load_prepared("digits", root / "datasets")  # prepared before anything is timed
    one_at_a_time = write_sweep(root, "cost_serial", quick)
    started = time.perf_counter()
    estimate = estimate_sweep(one_at_a_time)
    estimating = time.perf_counter() - started
    figures, measured, pairs = [], [], []
    for run, row in zip(load_sweep(one_at_a_time).runs, estimate.rows, strict=True):
        outcome = launch_run(run)
        if not outcome.ok:
            raise RuntimeError(f"{run.run_id} did not complete: {outcome.text()}")
        measured.append(outcome.seconds)
        name = f"{run.config.net} f{run.config.freeze:g}"
        pairs.append(f"{name} {row['seconds']:.1f} (set-up {row['setup_seconds']:.1f} + "
                     f"{run.config.total_epochs} x {row['setup_epoch_seconds']:.1f}) / "
                     f"{outcome.seconds:.1f}")
        figures.append(Figure(
            f"estimate_{run.config.net}_f{run.config.freeze:g}",
            f"sweep --estimate error vs measured wall time ({name}, "
            f"{run.config.image_size}px, {run.config.epochs})",
            abs(row["seconds"] - outcome.seconds), outcome.seconds, "s",
            Target(at_most=0.25)))
    parallel = write_sweep(root, "cost_parallel", quick)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "medtransfer", "sweep", str(parallel),
                    "--parallel", "2"], check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    both = time.perf_counter() - started
    runs = len(measured)
    nets = " and ".join(NETS)
    freezes = " and ".join(f"{freeze:g}" for freeze in FREEZES[quick])
    figures.append(Figure("parallel_2", f"sweep of {runs} runs: one at a time vs --parallel 2",
                          sum(measured), both, "s"))
    notes = [
        f"Estimate: `sweep --estimate` on {runs} digits runs ({nets} at freeze {freezes}), "
        "calibrated in this process, against each run's wall time as the sweep "
        "launches it (its own process, start to exit), one at a time; the ratio is the "
        "relative error. The estimate's set-up (start-up, build and what a tiny real run "
        "of the net measured outside its steps, once + each epoch) is part of it. Per run, "
        f"estimated (of which set-up) / measured seconds: {', '.join(pairs)}. The "
        f"estimate itself took {estimating:.0f} s (2 calibrations and their tiny runs).",
        f"--parallel 2: the same {runs} runs by `medtransfer sweep --parallel 2` in a fresh "
        "process (each run pinned to its share of the cores), wall time against the sum of "
        "the one-at-a-time runs; both measured while the machine's load is what it is, so "
        "read them together with the load average above.",
    ]
    return figures, notes
