"""``python -m benchmarks --quick`` produces every figure (never a speed threshold).

The cost figure (real sweeps, about two minutes) runs in tests/test_benchmarks_cost.py,
a module of its own, so that the suite's two workers run it beside the other figures.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import FIGURES

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {
    "startup_help", "startup_list", "startup_subcommand_help",
    "pipeline_first_epoch", "pipeline_later_epochs", "pipeline_first_epoch_with_prepare",
    "pipeline_later_epochs_vs_keras_cache",
    "pipeline_first_epoch_no_augmentation", "pipeline_later_epochs_no_augmentation",
    "pipeline_first_epoch_affine", "pipeline_later_epochs_affine",
    "pipeline_first_epoch_multi_label", "pipeline_later_epochs_multi_label",
    "training_small_cnn", "pipeline_per_core_small_cnn",
    "training_mobilenet", "pipeline_per_core_mobilenet",
    "freeze_1_inception_v3", "phase_1_inception_v3", "frozen_step_vs_forward_inception_v3",
    "freeze_1_densenet121", "phase_1_densenet121", "frozen_step_vs_forward_densenet121",
    "first_step_small_cnn",
    "prepare_cores", "prepare_memory", "run_memory_cache", "stream_memory_cache",
    "report_first", "report_repeated", "report_first_cpu", "report_bootstrap_auc",
    "prepare_chexpert_rate", "scan_chexpert_memory", "prepare_chestxray14_rate",
    "scan_chestxray14_memory",
}
COST = "cost"
# --quick trains both nets at freeze 0.5 only (benchmarks/sweep_cost.py).
EXPECTED_COST = {"estimate_small_cnn_f0.5", "estimate_cbr_tiny_f0.5", "parallel_2"}


def check_quick_benchmark(tmp_path: Path, figures: list[str], expected: set[str]) -> None:
    """Runs ``python -m benchmarks --quick --only FIGURES``; each expected row is there,
    once, finite, and says whether it met its target."""
    out = tmp_path / "results.md"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(out),
                    "--only", *figures],
                   cwd=tmp_path, env=env, check=True, capture_output=True, timeout=3600)
    figures = json.loads(out.with_suffix(".json").read_text())["figures"]
    assert {figure["key"] for figure in figures} == expected
    assert len(figures) == len(expected)
    table = [line for line in out.read_text().splitlines() if line.startswith("| ")]
    for figure in figures:
        assert math.isfinite(figure["value"]) and math.isfinite(figure["baseline"]), figure
        assert figure["baseline"] > 0 and math.isfinite(figure["ratio"]), figure
        rows = [line for line in table if line.startswith(f"| {figure['name']} |")]
        assert len(rows) == 1, figure["name"]
        if figure["target"] is not None:
            assert rows[0].endswith(("| met |", "% |")), rows[0]


@pytest.mark.slow
def test_quick_benchmark_writes_a_finite_row_per_figure(tmp_path):
    assert COST in FIGURES
    check_quick_benchmark(tmp_path, [figure for figure in FIGURES if figure != COST],
                          EXPECTED)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux CPU affinity")
def test_single_core_pins_every_thread_and_restores_them():
    import threading

    from benchmarks.timing import single_core

    def affinities():
        return {int(t): os.sched_getaffinity(int(t)) for t in os.listdir("/proc/self/task")}

    release = threading.Event()
    helper = threading.Thread(target=release.wait)  # a thread started before the pin
    helper.start()
    try:
        before = affinities()
        with single_core():
            inside = affinities()
            assert all(len(cores) == 1 for cores in inside.values()), inside
            assert set(inside) >= set(before)
        assert {task: affinities().get(task) for task in before} == before
    finally:
        release.set()
        helper.join()
