"""The report accounts for every run: each (init, freeze), task and planned row is shown."""

import json
import os

import pytest
from fabricated_runs import make_run

from medtransfer.study.report import build_report, load_study


def table_rows(text, first_cell):
    return [line for line in text.splitlines() if line.startswith(f"| {first_cell} |")]


@pytest.fixture(scope="module")
def glorot_freezes(tmp_path_factory):
    """glorot alone at freezes 0 and 1, two nets: 4 complete runs."""
    experiment = tmp_path_factory.mktemp("logs") / "glorot_only"
    experiment.mkdir()
    for net, aucs in (("small_cnn", (0.90, 0.70)), ("cbr_tiny", (0.80, 0.60))):
        for freeze, auc in zip((0.0, 1.0), aucs, strict=True):
            make_run(experiment, dataset="digits", net=net, freeze=freeze, val_aucs=[auc],
                     test_auc=auc)
    (experiment / "sweep.yaml").write_text(
        "experiment: glorot_only\nbase: {dataset: digits}\n"
        "grid: {net: [small_cnn, cbr_tiny], init: [glorot], freeze: [0, 1]}\n")
    return experiment


def test_glorot_at_two_freezes_gets_its_table_and_lines(glorot_freezes, tmp_path):
    study = load_study(glorot_freezes)
    assert study.freeze_inits == ["glorot"]
    table = study.freeze_table("glorot")
    assert table.splitlines()[0] == "| dataset | net | freeze 0 | freeze 1 |"
    assert table_rows(table, "digits") == ["| digits | small_cnn | 0.9000 | 0.7000 |",
                                           "| digits | cbr_tiny | 0.8000 | 0.6000 |"]
    assert "test_auc_vs_freeze.png" in [name for name, *_ in study.figure_specs()]
    panel = study._auc_freeze_panels()["digits"]
    assert {series.label: (series.x, series.y) for series in panel} == {
        "small_cnn": ([0.0, 1.0], [0.9, 0.7]), "cbr_tiny": ([0.0, 1.0], [0.8, 0.6])}
    summary = build_report(glorot_freezes, tmp_path).summary.read_text()
    assert "## glorot: test AUC per freeze level" in summary
    assert "| digits | cbr_tiny | 0.8000 | 0.6000 |" in summary


@pytest.fixture(scope="module")
def speed_ups(tmp_path_factory):
    """digits: small_cnn with seeds 0 and 1, cbr_tiny and cbr_small one seed each; a
    second task (train_size 10) on small_cnn alone; cbr_large_t planned, never run.

    Speed-ups (e_glorot / e_transfer), by hand:
    - small_cnn seed 0: glorot best 0.9 first at epoch 3, imagenet-like transfer reaches
      0.9 at epoch 1: 3.0. Seed 1: glorot best 0.8 at epoch 1, transfer reaches it at
      epoch 2: 0.5. small_cnn's mean: 1.75.
    - cbr_tiny: glorot best 0.95 at epoch 5, transfer reaches it at 1: 5.0.
    - cbr_small: glorot best 0.99 at 2, transfer never reaches it.
    Mean over nets: (1.75 + 5.0) / 2 = 3.375 (the mean over the three ratios would be
    2.83), with 1 never reached. Improvements: small_cnn (0.85 - 0.80) / 0.80 = +6.25%,
    cbr_tiny (0.88 - 0.80) / 0.80 = +10%, cbr_small (0.76 - 0.80) / 0.80 = -5%.
    """
    experiment = tmp_path_factory.mktemp("logs") / "speed"
    experiment.mkdir()
    source = make_run(tmp_path_factory.mktemp("other"), dataset="digits", net="small_cnn",
                      val_aucs=[0.5], test_auc=0.5)
    init = str(source.path)
    runs = [
        ("small_cnn", 0, [0.5, 0.8, 0.9], 0.80, [0.9, 0.9, 0.9], 0.85),
        ("small_cnn", 1, [0.8, 0.8, 0.8], 0.80, [0.7, 0.8, 0.8], 0.85),
        ("cbr_tiny", 0, [0.5, 0.6, 0.7, 0.8, 0.95], 0.80, [0.95], 0.88),
        ("cbr_small", 0, [0.5, 0.99], 0.80, [0.5, 0.6], 0.76),
    ]
    sizes = {"small_cnn": 128, "cbr_tiny": 224, "cbr_small": 224}
    for net, seed, glorot_curve, glorot_auc, transfer_curve, transfer_auc in runs:
        # Resolved configs hold each net's own default input size: not a task apart.
        common = dict(dataset="digits", net=net, seed=seed, image_size=sizes[net])
        make_run(experiment, val_aucs=glorot_curve, test_auc=glorot_auc, **common)
        make_run(experiment, init=init, val_aucs=transfer_curve, test_auc=transfer_auc,
                 **common)
    make_run(experiment, dataset="digits", net="small_cnn", image_size=128, train_size=10,
             val_aucs=[0.6], test_auc=0.6)
    (experiment / "sweep.yaml").write_text(
        "experiment: speed\nbase: {dataset: digits}\n"
        "grid:\n  - {net: [small_cnn, cbr_tiny, cbr_small, cbr_large_t], init: [glorot]}\n"
        "  - {net: [small_cnn], train_size: [10], init: [glorot]}\n"
        "published:\n  improvement: {overall: 0.03, digits: 0.02, other: 0.04}\n")
    return experiment


def test_task_labels_are_per_dataset_and_never_none(speed_ups):
    study = load_study(speed_ups)
    # One task is one row for every net; the other task names its size; "all" stands for
    # the whole split, never "None", and comes after the numbered sizes.
    assert [row for row in study.rows] == [
        ("digits (train_size=10)", "small_cnn"),
        ("digits (train_size=all)", "small_cnn"), ("digits (train_size=all)", "cbr_tiny"),
        ("digits (train_size=all)", "cbr_small"), ("digits (train_size=all)", "cbr_large_t")]
    assert "None" not in study.main_table()


def test_every_planned_row_shows_with_missing_cells(speed_ups):
    table = load_study(speed_ups).main_table()
    assert table_rows(table, "digits (train_size=all)")[-1] == (
        "| digits (train_size=all) | cbr_large_t | — | — |")
    assert table_rows(table, "digits (train_size=10)") == [
        "| digits (train_size=10) | small_cnn | 0.6000 | — |"]


def test_speed_up_is_the_mean_over_nets_of_each_nets_mean(speed_ups):
    study = load_study(speed_ups)
    init = study.transfer_inits[0]
    _, body = study.dataset_summary(init)
    rows = {row[0]: row for row in body}
    assert rows["digits (train_size=all)"][1] == "+3.75% (3 of 3 nets)"  # (6.25+10-5)/3
    assert rows["digits (train_size=all)"][3] == "3.38× (1 never reached)"
    # The overall row keeps the count; the published overall is the mean of its values.
    assert rows["overall"][3] == "3.38× (mean of 1 dataset; 1 never reached)"
    assert rows["overall"][2] == "+3.00%"
    per_net = study.per_net_table(init)
    assert table_rows(per_net, "digits (train_size=all)")[0].endswith(
        "| 1.75 ± 1.77× (n=2) |")


def test_binary_task_shows_the_positive_class_auc(tmp_path):
    experiment = tmp_path / "chest"
    experiment.mkdir()
    make_run(experiment, dataset="cats_vs_dogs", net="small_cnn", val_aucs=[0.9],
             test_auc=0.913, metrics={"test_auc_macro": 0.938})
    for seed, auc, macro in ((0, 0.80, 0.90), (1, 0.90, 0.94)):
        make_run(experiment, dataset="cats_vs_dogs", net="small_cnn", init="imagenet",
                 seed=seed, val_aucs=[0.9], test_auc=auc, metrics={"test_auc_macro": macro})
    study = load_study(experiment)
    # Positive class: 0.938; 0.90 and 0.94: mean 0.92, sample std 0.0283.
    assert table_rows(study.main_table(), "cats_vs_dogs") == [
        "| cats_vs_dogs | small_cnn | 0.9130; positive class 0.9380 | "
        "0.8500 ± 0.0707 (n=2); positive class 0.9200 ± 0.0283 |"]
    assert "positive class's test AUC (our macro AUC)" in study.legend()


DEMO_SWEEP = """experiment: demo
base: {dataset: digits, net: small_cnn, image_size: 16}
grid:
  - name: source
    classes: [[0, 1, 2, 3, 4]]
    epochs: ["0+4"]
  - classes: [[5, 6, 7, 8, 9]]
    train_size: [10]
    epochs: ["2+10"]
    init: [glorot, "run:source"]
    freeze: [0.0, 1.0]
"""


def test_a_transfer_reads_as_the_grid_it_comes_from(tmp_path):
    """The demo's shape: a named grid's run, and runs that start from it."""
    experiment = tmp_path / "demo"
    experiment.mkdir()
    common = dict(dataset="digits", net="small_cnn", image_size=16)
    source = make_run(experiment, classes=("0", "1", "2", "3", "4"), epochs="0+4",
                      val_aucs=[0.9], test_auc=0.9, **common)
    target = dict(classes=("5", "6", "7", "8", "9"), train_size=10, epochs="2+10", **common)
    make_run(experiment, val_aucs=[0.8], test_auc=0.8, **target)
    make_run(experiment, init=str(source.path), val_aucs=[0.85], test_auc=0.85, **target)
    (experiment / "sweep.yaml").write_text(DEMO_SWEEP)
    study = load_study(experiment)
    # The planned "run:source" cells are the runs' source path: one column, not two.
    assert study.inits == ["glorot", str(source.path)]
    assert study.init_labels[str(source.path)] == "transfer from source"
    assert study.main_table().splitlines()[0] == (
        "| dataset | net | glorot | transfer from source |")
    # freeze 1 is planned, not run yet: its column shows, empty.
    assert study.freezes_of[str(source.path)] == [0.0, 1.0]
    names = [name for name, *_ in study.figure_specs()]
    assert "glorot_vs_transfer_from_source.png" in names
    assert all(len(label) < 40 for label in study.init_labels.values())


def four_images(p_b):
    """Labels a, a, b, b with these probabilities of b."""
    return ["a", "b"], [(f"img{index}", label, [round(1 - p, 6), p])
                        for index, (label, p) in enumerate(zip("aabb", p_b, strict=True))]


def test_several_seeds_give_the_mean_paired_difference(tmp_path):
    """Transfer perfect on both seeds (AUC 1); glorot perfect on seed 0 and 0.75 on seed 1.

    Seed 1's glorot: scores of the true classes 0.9, 0.4, 0.4, 0.9 against the others'
    0.1, 0.6, 0.6, 0.1: 12 of 16 pairs in order, AUC 0.75. The mean difference over the
    seeds is (0 + 0.25) / 2 = +0.125. No resample has the transfer below glorot, and
    a quarter of them draw seed 0 twice (a difference of 0): the interval starts at 0.
    """
    experiment = tmp_path / "seeds"
    experiment.mkdir()
    perfect = four_images([0.0, 0.0, 1.0, 1.0])
    common = dict(dataset="digits", net="small_cnn", val_aucs=[0.9])
    make_run(experiment, seed=0, test_auc=1.0, predictions=perfect, **common)
    make_run(experiment, seed=1, test_auc=0.75, predictions=four_images([0.1, 0.6, 0.4, 0.9]),
             **common)
    for seed in (0, 1):
        make_run(experiment, init="imagenet", seed=seed, test_auc=1.0, predictions=perfect,
                 **common)
    study = load_study(experiment)
    found = study.mean_difference("digits", "small_cnn", "imagenet")
    assert found.estimate == pytest.approx(0.125)
    assert found.low == 0.0 and 0.25 <= found.high <= 1.0
    row = table_rows(study.per_net_table("imagenet"), "digits")[0]
    assert row.startswith("| digits | small_cnn | 0.8750 ± 0.1768 (n=2) | 1.0000 ± 0.0000 "
                          "(n=2) | +14.29% | +0.1250 [")
    summary = build_report(experiment, tmp_path / "out").main_text
    assert "draws the seeds with replacement and the test images" in summary


def test_a_run_whose_files_disagree_is_named_and_skipped(tmp_path):
    """metrics.json says 0.60 where its perfect predictions give AUC 1 [1, 1]."""
    experiment = tmp_path / "disagree"
    experiment.mkdir()
    perfect = four_images([0.0, 0.0, 1.0, 1.0])
    common = dict(dataset="digits", net="small_cnn", predictions=perfect)
    make_run(experiment, val_aucs=[0.9], test_auc=1.0, **common)
    make_run(experiment, init="imagenet", val_aucs=[0.9], test_auc=0.6, **common)
    make_run(experiment, init="imagenet", freeze=1.0, val_aucs=[0.9], test_auc=1.0, **common)
    report = build_report(experiment, tmp_path / "out")  # draws every figure
    name = "digits-small_cnn-imagenet-f0.00-s0"
    assert [path.name for path, _ in report.skipped] == [name]
    assert report.skipped[0][1].startswith(
        "metrics.json's test_auc_micro 0.6000 lies outside the 95% interval")
    assert "[1.0000, 1.0000] computed from its own predictions_test.csv (AUC 1.0000)" in (
        report.skipped[0][1])
    assert f"- `{name}`: metrics.json's test_auc_micro 0.6000" in report.summary.read_text()
    assert table_rows(report.main_text, "digits")[0] == (
        "| digits | small_cnn | 1.0000 [1.0000, 1.0000] | — |")


def test_resamples_are_cached_beside_each_run_and_renewed_with_its_predictions(tmp_path):
    experiment = tmp_path / "cached"
    experiment.mkdir()
    run = make_run(experiment, dataset="digits", net="small_cnn", val_aucs=[0.9],
                   test_auc=0.75, predictions=four_images([0.1, 0.6, 0.4, 0.9]))
    first = load_study(experiment).cell_text("digits", "small_cnn", "glorot", 0.0)
    cache = run.path / "bootstrap_1000x_seed0.json"
    assert cache.exists() and not (run.path / "bootstrap_1000x_seed1.json").exists()
    # A second report reads the cache: numbers identical.
    assert load_study(experiment).cell_text("digits", "small_cnn", "glorot", 0.0) == first
    # The cache is what the report uses while the predictions file is unchanged...
    data = json.loads(cache.read_text())
    cache.write_text(json.dumps({**data, "samples": [0.7] * 500 + [0.8] * 500}))
    assert load_study(experiment).cell_text(
        "digits", "small_cnn", "glorot", 0.0) == "0.7500 [0.7000, 0.8000]"
    # ...and a rewritten predictions file (another modification time) is resampled again.
    run.predictions.write_text(run.predictions.read_text())
    os.utime(run.predictions, ns=(1, 1))
    assert load_study(experiment).cell_text("digits", "small_cnn", "glorot", 0.0) == first


def test_a_repeated_report_redraws_only_the_figures_whose_data_changed(tmp_path):
    experiment = tmp_path / "redraw"
    experiment.mkdir()
    common = dict(dataset="digits", net="small_cnn", predictions=four_images([0, 0, 1, 1]))
    make_run(experiment, val_aucs=[0.9], test_auc=1.0, **common)
    make_run(experiment, init="imagenet", val_aucs=[0.8, 0.9], test_auc=1.0, **common)
    out = tmp_path / "out"
    paths = {path.name: path for path in build_report(experiment, out).figures}
    assert sorted(paths) == ["glorot_vs_imagenet.png", "test_auc_vs_freeze.png",
                             "val_auc_by_freeze_imagenet.png"]
    for path in paths.values():
        os.utime(path, ns=(1, 1))  # a mark: a redrawn file gets the time of now
    build_report(experiment, out)
    assert {name: path.stat().st_mtime_ns for name, path in paths.items()} == dict.fromkeys(
        paths, 1)
    # A new freeze level changes the freeze figures, not glorot against imagenet.
    make_run(experiment, init="imagenet", freeze=1.0, val_aucs=[0.7], test_auc=1.0, **common)
    build_report(experiment, out)
    assert {name for name, path in paths.items() if path.stat().st_mtime_ns != 1} == {
        "test_auc_vs_freeze.png", "val_auc_by_freeze_imagenet.png"}
