"""The data-size figure of ``report``: test AUC against the training-set size, one line per
init, from fabricated run directories whose numbers are set by hand."""

import json
from pathlib import Path

import numpy as np
import pytest
from fabricated_runs import make_run

from medtransfer.study.grid import load_sweep
from medtransfer.study.report import build_report, load_study
from medtransfer.training.metrics import auc_micro

# How well each run separates the two classes (a larger shift, a higher AUC), by
# (init, train size); None is the whole split (800 images).
SHIFTS = {("glorot", 50): 0.5, ("glorot", 200): 1.0, ("glorot", None): 2.0,
          ("imagenet", 50): 1.5, ("imagenet", 200): 2.0, ("imagenet", None): 3.0}
WHOLE_SPLIT = 800
LABELS = np.arange(40) % 2


def predictions(shift, seed):
    """Test predictions of one run and their micro AUC (what metrics.json would hold)."""
    score = shift * LABELS + np.random.default_rng(seed).normal(size=len(LABELS))
    positive = 1 / (1 + np.exp(-score))
    probabilities = np.stack([1 - positive, positive], axis=1)
    rows = [(f"i{k}", "ab"[label], list(row))
            for k, (label, row) in enumerate(zip(LABELS, probabilities, strict=True))]
    return (["a", "b"], rows), auc_micro(LABELS, probabilities)


AUCS = {key: predictions(shift, seed)[1] for seed, (key, shift) in enumerate(SHIFTS.items())}


@pytest.fixture(scope="module")
def size_study(tmp_path_factory):
    experiment = tmp_path_factory.mktemp("logs") / "data_size"
    for seed, ((init, size), shift) in enumerate(SHIFTS.items()):
        written, auc = predictions(shift, seed)
        run = make_run(experiment, init=init, train_size=size, val_aucs=[0.5, auc],
                       test_auc=auc, predictions=written)
        metrics = json.loads(run.metrics.read_text())
        run.write_metrics({**metrics, "train_images": size or WHOLE_SPLIT})
    # A run still training has no point on the curve.
    make_run(experiment, init="imagenet", train_size=100, val_aucs=[0.5], status=None)
    return experiment


def test_one_line_per_init_against_the_number_of_training_images(size_study):
    study = load_study(size_study)
    built = dict(study.figures())
    figure = built["test_auc_vs_train_size.png"]
    (axes,) = figure.axes
    assert axes.get_title() == "cancer · inception_v3"
    assert axes.get_xscale() == "log"
    # One error-bar line per init, in the legend under its name.
    lines = {container.get_label(): container for container in axes.containers}
    assert sorted(lines) == ["glorot", "imagenet"]
    assert sorted(axes.get_legend_handles_labels()[1]) == ["glorot", "imagenet"]
    for init, container in lines.items():
        line, _, (bars,) = container
        np.testing.assert_array_equal(np.asarray(line.get_xdata(), float), [50, 200, WHOLE_SPLIT])
        np.testing.assert_allclose(np.asarray(line.get_ydata(), float),
                                   [AUCS[(init, 50)], AUCS[(init, 200)], AUCS[(init, None)]])
        # A bootstrap interval around every point: below it, above it, not empty.
        for (x, y), segment in zip(line.get_xydata(), bars.get_segments(), strict=True):
            (x_low, low), (x_high, high) = segment
            assert x_low == x_high == x and low < y < high


def test_report_writes_the_figure_only_with_several_sizes(size_study, tmp_path):
    report = build_report(size_study, tmp_path / "report")
    assert (tmp_path / "report" / "test_auc_vs_train_size.png") in report.figures
    assert "test_auc_vs_train_size.png" in report.summary.read_text()

    single = tmp_path / "logs" / "one_size"
    for init in ("glorot", "imagenet"):
        make_run(single, init=init, val_aucs=[0.5, 0.9], test_auc=0.9)
    assert "test_auc_vs_train_size.png" not in dict(load_study(single).figures())


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_the_digits_data_size_sweep_pairs_glorot_and_transfer_at_each_size_and_seed():
    sweep = load_sweep(CONFIGS / "data_size_digits.yaml", logdir="/tmp/logs")
    source, *target = sweep.runs
    assert len(sweep.runs) == 1 + 4 * 2 * 2
    assert source.config.classes == ("0", "1", "2", "3", "4")
    cells = {(run.config.train_size, "glorot" if run.config.init == "glorot" else
              run.source.name, run.config.seed) for run in target}
    assert cells == {(size, init, seed) for size in (5, 10, 20, 50)
                     for init in ("glorot", "source") for seed in (0, 1)}
    assert {run.config.classes for run in target} == {("5", "6", "7", "8", "9")}


def test_the_study_data_size_sweep_is_40_runs():
    runs = [run.config for run in load_sweep(CONFIGS / "data_size_study.yaml").runs]
    assert len({(c.dataset, c.init, c.train_size) for c in runs}) == len(runs) == 4 * 2 * 5
    assert {c.net for c in runs} == {"mobilenet"} and {c.epochs for c in runs} == {"3+50"}


def test_sizes_in_numeric_order_with_the_whole_split_as_all(size_study, tmp_path):
    # 50 before 200 (as text "200" < "50"), and the whole split last as "all (800)", in
    # the tables, the panels of the curve figures and the size axis.
    study = load_study(size_study)
    tasks = list(dict.fromkeys(task for task, _ in study.rows))
    assert tasks == ["cancer (train_size=50)", "cancer (train_size=100)",
                     "cancer (train_size=200)", f"cancer (train_size=all ({WHOLE_SPLIT}))"]
    built = dict(study.figures())
    curves = built["val_auc_by_freeze_imagenet.png"]
    assert [axes.get_title() for axes in curves.axes] == [f"{task} · inception_v3"
                                                          for task in tasks]
    (axes,) = built["test_auc_vs_train_size.png"].axes
    assert [label.get_text() for label in axes.get_xticklabels()] == [
        "50", "200", f"all ({WHOLE_SPLIT})"]
    assert "None" not in study.summary()[0]


def test_report_writes_figures_in_the_format_asked(size_study, tmp_path):
    report = build_report(size_study, tmp_path / "report", figure_format="svg")
    assert sorted(path.name for path in report.figures) == sorted(
        name.replace(".png", ".svg") for name, *_ in load_study(size_study).figure_specs())
    assert all(path.read_bytes().startswith(b"<?xml") for path in report.figures)
    summary = report.summary.read_text()
    assert "(test_auc_vs_train_size.svg)" in summary and ".png" not in summary
