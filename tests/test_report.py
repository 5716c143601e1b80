"""``medtransfer report`` on fabricated run directories whose numbers are computed by hand."""

import csv
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fabricated_runs import make_run

from medtransfer.cli import main
from medtransfer.errors import MedtransferError
from medtransfer.plotting import PNG_DPI, save_figure
from medtransfer.study import figures
from medtransfer.study.report import build_report, load_study
from medtransfer.training.rundir import RunDirectory

ROOT = Path(__file__).resolve().parents[1]
SWEEP = """experiment: study
base: {epochs: "3+50"}
grid:
  - {dataset: [cancer, retina, proteins], net: [inception_v3, mobilenet], init: glorot}
  - {dataset: [cancer, retina, proteins], net: [inception_v3, mobilenet], init: imagenet,
     freeze: [0, 0.5, 1]}
published:
  source: "Kierzynka, PyData Warsaw 2019"
  improvement: {overall: 0.042, cancer: 0.055, retina: 0.049}
  speedup: 7
  findings: ["fine-tuning every layer (freeze 0) was best"]
expect: "imagenet above glorot in every row"
"""


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    """Two datasets x two nets, glorot and imagenet, with every state a run can be in.

    By hand (test micro AUC; validation AUC per epoch):
    - cancer inception_v3: glorot 0.80 (best 0.78 first at epoch 4), imagenet 0.88 (0.79 at
      epoch 1): improvement 0.08 / 0.80 = +10%, speed-up 4 / 1 = 4.
    - cancer mobilenet: glorot 0.80 (best 0.90 at epoch 3), imagenet 0.84 (never above
      0.85): +5%, never reached. cancer: (10% + 5%) / 2 = +7.5%, speed-up 4.
    - retina inception_v3, seeds 0 and 1: glorot 0.70, 0.74 (mean 0.72, sample std
      0.0283), imagenet 0.75, 0.77 (0.76, 0.0141): +5.56%; speed-ups 3 / 1 = 3 and
      3 / 2 = 1.5: 2.25 ± 1.06.
    - overall: (7.5% + 5.556%) / 2 = +6.53%, speed-up (4 + 2.25) / 2 = 3.12.
    - retina mobilenet: no glorot (missing), imagenet running at epoch 3 of 4, imagenet
      at freeze 1 diverged in epoch 2; cancer mobilenet imagenet at freeze 0.3 was
      interrupted after epoch 2; a cancer densenet121 directory is broken. Epochs are
      the study's 3+50; only the first few are logged.
    """
    experiment = tmp_path_factory.mktemp("logs") / "study"
    experiment.mkdir()
    make_run(experiment, val_aucs=[0.60, 0.70, 0.75, 0.78, 0.78], test_auc=0.80)
    make_run(experiment, init="imagenet", val_aucs=[0.79, 0.85, 0.86, 0.86, 0.87],
             test_auc=0.88)
    make_run(experiment, init="imagenet", freeze=0.5, val_aucs=[0.79, 0.80, 0.81, 0.82, 0.83],
             test_auc=0.85)
    make_run(experiment, net="mobilenet", val_aucs=[0.5, 0.6, 0.9, 0.9], test_auc=0.80)
    make_run(experiment, net="mobilenet", init="imagenet", val_aucs=[0.6, 0.7, 0.8, 0.85],
             test_auc=0.84)
    make_run(experiment, net="mobilenet", init="imagenet", freeze=0.3, val_aucs=[0.6, 0.7],
             status=None)
    for seed, glorot, glorot_curve, imagenet, imagenet_curve in (
            (0, 0.70, [0.5, 0.6, 0.7], 0.75, [0.7, 0.71, 0.72]),
            (1, 0.74, [0.6, 0.65, 0.66, 0.66], 0.77, [0.5, 0.66, 0.7])):
        make_run(experiment, dataset="retina", seed=seed, val_aucs=glorot_curve,
                 test_auc=glorot)
        make_run(experiment, dataset="retina", seed=seed, init="imagenet",
                 val_aucs=imagenet_curve, test_auc=imagenet)
    running = make_run(experiment, dataset="retina", net="mobilenet", init="imagenet",
                       val_aucs=[0.5, 0.6, 0.7], status=None)
    make_run(experiment, dataset="retina", net="mobilenet", init="imagenet", freeze=1.0,
             val_aucs=[0.5], status="diverged")
    broken = make_run(experiment, net="densenet121", init="imagenet", val_aucs=[0.5],
                      test_auc=0.5)
    broken.metrics.write_text('{"status": "compl')
    (experiment / "sweep.yaml").write_text(SWEEP)
    running.lock()  # as the process training it would
    yield experiment
    running.unlock()


@pytest.fixture(scope="module")
def study(study_dir):
    return load_study(study_dir)


@pytest.fixture(scope="module")
def written(study_dir, tmp_path_factory):
    return build_report(study_dir, tmp_path_factory.mktemp("out"))


def table_rows(text, first_cell):
    return [line for line in text.splitlines() if line.startswith(f"| {first_cell} |")]


def test_main_table_cells_by_hand(study):
    table = study.main_table()
    assert table.splitlines()[0] == "| dataset | net | glorot | imagenet |"
    assert table_rows(table, "cancer") == [
        "| cancer | inception_v3 | 0.8000 | 0.8800 |",
        "| cancer | mobilenet | 0.8000 | 0.8400 |",
    ]
    assert table_rows(table, "retina") == [
        "| retina | inception_v3 | 0.7200 ± 0.0283 (n=2) | 0.7600 ± 0.0141 (n=2) |",
        "| retina | mobilenet | — | running (epoch 3/53) |",
    ]
    # Asked for by sweep.yaml's grid, not started: missing cells, in the grid's order.
    assert table.splitlines()[-2:] == ["| proteins | inception_v3 | — | — |",
                                       "| proteins | mobilenet | — | — |"]
    assert "sample standard deviation (ddof=1)" in study.legend()


def test_freeze_table_shows_every_state(study):
    rows = table_rows(study.freeze_table("imagenet"), "cancer") + table_rows(
        study.freeze_table("imagenet"), "retina")
    assert study.freeze_table("imagenet").splitlines()[0] == (
        "| dataset | net | glorot (freeze 0) | freeze 0 | freeze 0.3 | freeze 0.5 | freeze 1 |")
    assert rows == [
        "| cancer | inception_v3 | 0.8000 | 0.8800 | — | 0.8500 | — |",
        "| cancer | mobilenet | 0.8000 | 0.8400 | interrupted (epoch 2/53) | — | — |",
        "| retina | inception_v3 | 0.7200 ± 0.0283 (n=2) | 0.7600 ± 0.0141 (n=2) | — | — | — |",
        "| retina | mobilenet | — | running (epoch 3/53) | — | — | diverged (epoch 2) |",
    ]


def test_improvement_and_speed_up_by_hand(study):
    per_net = study.per_net_table("imagenet")
    # No predictions_test.csv here: no paired bootstrap, and the table says why.
    none = "not computed (no readable predictions_test.csv) | — |"
    assert table_rows(per_net, "cancer") == [
        f"| cancer | inception_v3 | 0.8000 | 0.8800 | +10.00% | {none} 4.00× (epoch 4 vs 1) |",
        f"| cancer | mobilenet | 0.8000 | 0.8400 | +5.00% | {none} never reached (glorot's "
        "best 0.9000 at epoch 3) |",
    ]
    assert table_rows(per_net, "retina") == [
        "| retina | inception_v3 | 0.7200 ± 0.0283 (n=2) | 0.7600 ± 0.0141 (n=2) | +5.56% | "
        f"{none} 2.25 ± 1.06× (n=2) |",
        "| retina | mobilenet | — | running (epoch 3/53) | — | — | — | — |",
    ]
    table, _ = study.dataset_summary("imagenet")
    assert table.splitlines()[0] == ("| dataset | improvement (mean over nets) | published | "
                                     "speed-up (mean over nets) | published |")
    assert table.splitlines()[2:] == [
        "| cancer | +7.50% (2 of 2 nets) | +5.50% | 4.00× (1 never reached) | — |",
        "| retina | +5.56% (1 of 2 nets) | +4.90% | 2.25× | — |",
        # The published overall (4.2%) is not the mean of its per-dataset values (5.5%, 4.9%).
        "| overall | +6.53% (mean of 2 datasets) | +4.20% (not the mean of the published "
        "per-dataset values, +5.20%) | 3.12× (mean of 2 datasets; 1 never reached) | 7× |",
    ]


def test_summary_names_broken_and_unfinished_runs(written):
    summary = written.summary.read_text()
    assert [path.name for path, _ in written.skipped] == ["cancer-densenet121-imagenet-f0.00-s0"]
    assert "- `cancer-densenet121-imagenet-f0.00-s0`: unreadable metrics.json" in summary
    assert "- `retina-mobilenet-imagenet-f0.00-s0`: running (epoch 3/53)" in summary
    assert "- `retina-mobilenet-imagenet-f1.00-s0`: diverged (epoch 2)" in summary
    assert "Expected (not checked): imagenet above glorot in every row" in summary
    assert "- fine-tuning every layer (freeze 0) was best" in summary
    assert written.main_text.startswith("| dataset | net | glorot | imagenet |")
    assert "Expected (not checked)" in written.main_text
    # Never a zero standing in for a missing value.
    assert "0.0000" not in summary


def test_results_csv_has_one_row_per_run_directory(written, study_dir):
    with written.results.open() as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 13
    by_name = {Path(row["run_dir"]).name: row for row in rows}
    assert set(by_name) == {path.name for path in study_dir.iterdir() if path.is_dir()}
    row = by_name["cancer-inception_v3-imagenet-f0.00-s0"]
    assert (row["status"], row["test_auc_micro"], row["best_epoch"]) == ("complete", "0.88", "5")
    assert by_name["retina-mobilenet-imagenet-f1.00-s0"]["diverged_epoch"] == "2"
    assert by_name["retina-mobilenet-imagenet-f0.00-s0"]["status"] == "running"
    assert by_name["cancer-mobilenet-imagenet-f0.30-s0"]["status"] == "interrupted"
    assert by_name["cancer-densenet121-imagenet-f0.00-s0"]["status"] == "broken"
    assert {"run_dir", "status", "val_auc_micro_best", "test_accuracy", "diverged_epoch",
            "test_auc_micro_ci_low", "problem"} <= set(rows[0])


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24]), len(data)


def test_figures_have_a_panel_per_dataset_and_net(study, written):
    built = dict(study.figures())
    panels = {name: len(figure.axes) for name, figure in built.items()}
    assert panels == {"val_auc_by_freeze_imagenet.png": 4,  # every dataset x net with imagenet
                      "glorot_vs_imagenet.png": 3,           # those with both curves at freeze 0
                      "test_auc_vs_freeze.png": 2}           # one per dataset
    titles = [axes.get_title() for axes in built["glorot_vs_imagenet.png"].axes]
    assert titles == ["cancer · inception_v3", "cancer · mobilenet", "retina · inception_v3"]
    assert [path.name for path in written.figures] == list(built)
    for path in written.figures:
        figure = built[path.name]
        (width, height), size = png_size(path)
        expected = figure.get_size_inches() * PNG_DPI
        assert (width, height) == (round(expected[0]), round(expected[1])) and size > 10_000


def test_panel_figure_draws_error_bars_and_reference_lines(tmp_path):
    series = figures.Series("a", [0.0, 0.5], [0.8, 0.9], [0.7, 0.85], [0.85, 0.95])
    figure = figures.panel_figure({"one": [series], "two": [], "three": [series], "four": []},
                                  title="t", xlabel="x", ylabel="y",
                                  hlines={"one": [(0.75, "ref")]})
    assert len(figure.axes) == 4
    assert [line.get_ydata()[0] for line in figure.axes[0].get_lines()][-1] == 0.75
    # The reference line's label is written on the panel; "a" looks the same in every
    # panel, so one legend of one row below them serves all.
    assert [text.get_text() for text in figure.axes[0].texts] == ["ref"]
    assert [axes.get_legend() for axes in figure.axes] == [None] * 4
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == ["a"]
    (width, height), _ = png_size(save_figure(figure, tmp_path / "f.png"))
    assert (width, height) == (round(3 * 4.2 * PNG_DPI), round((2 * 3.2 + 0.6 + 0.2) * PNG_DPI))


def two_class_predictions(seed=None, size=40):
    """Half "a", half "b"; perfect probabilities, or seeded noisy ones."""
    labels = ["a"] * (size // 2) + ["b"] * (size // 2)
    rng = np.random.default_rng(seed)
    rows = []
    for index, label in enumerate(labels):
        p_b = float(label == "b") if seed is None else float(rng.random() * 0.7
                                                             + 0.3 * (label == "b"))
        rows.append((f"img{index:03d}", label, [round(1 - p_b, 6), round(p_b, 6)]))
    return ["a", "b"], rows


@pytest.fixture(scope="module")
def transfer_dir(tmp_path_factory):
    """digits-like transfer: glorot and a path init, with test predictions."""
    logs = tmp_path_factory.mktemp("transfer_logs")
    (logs / "source").mkdir()
    source = make_run(logs / "source", dataset="digits", net="small_cnn", val_aucs=[0.9],
                      test_auc=0.9)
    experiment = logs / "target"
    experiment.mkdir()
    perfect = two_class_predictions()
    common = dict(dataset="digits", net="small_cnn", test_auc=1.0, predictions=perfect)
    make_run(experiment, val_aucs=[0.7, 0.9], **common)
    make_run(experiment, init=str(source.path), val_aucs=[0.95, 0.97], **common)
    noisy = two_class_predictions(seed=3)
    make_run(experiment, init=str(source.path), freeze=0.5, val_aucs=[0.8, 0.85],
             dataset="digits", net="small_cnn", test_auc=0.8, predictions=noisy)
    # Another task on the same dataset and net: its label says what differs.
    make_run(experiment, seed=1, train_size=100, dataset="digits", net="small_cnn",
             val_aucs=[0.6], test_auc=0.6)
    return experiment


def test_statistics_of_perfect_and_identical_predictions(transfer_dir):
    study = load_study(transfer_dir)
    # The source run's experiment names it, not its run id.
    label = "transfer from source"
    assert study.main_table().splitlines()[0] == f"| dataset | net | glorot | {label} |"
    assert table_rows(study.main_table(), "digits (train_size=all)") == [
        "| digits (train_size=all) | small_cnn | 1.0000 [1.0000, 1.0000] | "
        "1.0000 [1.0000, 1.0000] |"]
    assert table_rows(study.main_table(), "digits (train_size=100)") == [
        "| digits (train_size=100) | small_cnn | 0.6000 | — |"]
    paired = table_rows(study.paired_table(study.transfer_inits[0]), "digits (train_size=all)")
    assert paired[0] == ("| digits (train_size=all) | small_cnn | 0 | 0 | 1.0000 | 1.0000 | "
                         "+0.0000 [+0.0000, +0.0000] | 1.000 |")
    # The noisy run's interval: the same seed gives the same numbers, another seed others.
    noisy = table_rows(study.freeze_table(study.transfer_inits[0]), "digits (train_size=all)")
    assert noisy == table_rows(load_study(transfer_dir).freeze_table(study.transfer_inits[0]),
                               "digits (train_size=all)")
    assert noisy != table_rows(load_study(transfer_dir, seed=1).freeze_table(
        study.transfer_inits[0]), "digits (train_size=all)")
    assert "not computed" not in study.paired_table(study.transfer_inits[0])


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "medtransfer", "report", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120)


def test_report_through_the_cli(transfer_dir, tmp_path, capsys):
    result = run_cli(transfer_dir, "--out", tmp_path / "paper")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "| dataset | net | glorot | transfer from source |"
    assert f"summary: {tmp_path / 'paper' / 'summary.md'}" in lines
    assert sorted(path.name for path in (tmp_path / "paper").iterdir()
                  if not path.name.startswith(".")) == [
        "glorot_vs_transfer_from_source.png", "results.csv", "summary.md",
        "test_auc_vs_freeze.png", "val_auc_by_freeze_transfer_from_source.png"]
    # The log root instead of an experiment: a clear error naming the experiments.
    assert main(["report", str(transfer_dir.parent)]) == 2
    assert "It holds experiments (source, target)" in capsys.readouterr().err


def test_bad_input_fails_clearly(tmp_path, transfer_dir):
    with pytest.raises(MedtransferError, match="is not a folder"):
        load_study(tmp_path / "nothing")
    with pytest.raises(MedtransferError, match="No run directories"):
        load_study(tmp_path)
    with pytest.raises(MedtransferError, match="at least 1000"):
        load_study(transfer_dir, resamples=100)
    with pytest.raises(MedtransferError, match="is a run directory, not an experiment"):
        load_study(next(transfer_dir.iterdir()))
    assert RunDirectory(tmp_path).is_locked() is False
