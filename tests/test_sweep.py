"""The sweep: grid expansion, the plan, failures recorded, complete runs skipped."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sweeps import sweep_file

from medtransfer.cli import main
from medtransfer.errors import MedtransferError
from medtransfer.study.grid import expand, load_sweep

CONFIGS = Path(__file__).parent.parent / "configs"
NETS = ["inception_v3", "resnet50_v2", "densenet121", "mobilenet"]
DATASETS = ["cancer", "retina", "proteins", "cats_vs_dogs"]


def test_the_study_is_132_runs_in_one_experiment():
    sweep = load_sweep(CONFIGS / "kierzynka2019.yaml")
    runs = [run.config for run in sweep.runs]
    # 4 datasets x 4 nets x (glorot at 0 + imagenet at 7 freezes) + small_cnn x 4 datasets
    assert len(runs) == 4 * 4 * (1 + 7) + 4 == 132
    assert len({run.run_dir for run in sweep.runs}) == 132
    assert {(c.dataset, c.net, c.init, c.freeze) for c in runs if c.init == "glorot"} == {
        *((d, n, "glorot", 0.0) for d in DATASETS for n in [*NETS, "small_cnn"])}
    imagenet = [c for c in runs if c.init == "imagenet"]
    assert sorted({c.freeze for c in imagenet}) == [0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0]
    assert len(imagenet) == 112 and {c.net for c in imagenet} == set(NETS)
    assert {c.epochs for c in runs} == {"3+50"} and {c.lr for c in runs} == {None}
    assert sweep.experiment == "kierzynka2019"
    assert sweep.experiment_dir == Path("tensorboard_logs/kierzynka2019")
    published = yaml.safe_load(sweep.text)["published"]
    assert published["improvement"]["overall"] == 0.042 and published["speedup"] == 7


def test_the_demo_transfers_from_its_source_run_with_four_seeds_per_arm():
    sweep = load_sweep(CONFIGS / "demo.yaml", logdir="/tmp/logs")
    source, *target = sweep.runs
    assert source.name == "source" and source.config.classes == ("0", "1", "2", "3", "4")
    arms = {}
    for run in target:
        init = "glorot" if run.config.init == "glorot" else run.source.name
        arms.setdefault((init, run.config.freeze), []).append(run.config.seed)
        assert run.config.classes == ("5", "6", "7", "8", "9") and run.config.train_size == 10
        if init == "source":
            assert run.source is source
            assert run.config.init == "/tmp/logs/demo_transfer/" + source.run_id
    assert arms == {("glorot", 0.0): [0, 1, 2, 3], ("source", 0.0): [0, 1, 2, 3],
                    ("source", 1.0): [0, 1, 2, 3]}


def test_a_list_of_grids_joins_them_in_order_without_duplicates():
    runs = expand({
        "experiment": "x",
        "base": {"dataset": "digits", "epochs": "1+1"},
        "grid": [
            {"net": ["small_cnn", "cbr_tiny"], "freeze": [0, 1], "seed": [0, 1, 2]},
            {"net": ["small_cnn"], "freeze": [0.0], "seed": [0]},  # already in grid 1
            {"name": "one", "net": ["cbr_small"], "lr": [0.01]},
            {"init": ["run:one"], "freeze": [0.5]},
        ],
    })
    assert len(runs) == 2 * 2 * 3 + 1 + 1
    assert [(r.config.net, r.config.freeze, r.config.seed) for r in runs[:4]] == [
        ("small_cnn", 0.0, 0), ("small_cnn", 0.0, 1), ("small_cnn", 0.0, 2),
        ("small_cnn", 1.0, 0)]
    assert runs[-1].source is runs[-2] and runs[-2].config.lr == 0.01
    assert runs[-1].config.init == os.path.abspath(runs[-2].run_dir)
    assert {r.config.experiment for r in runs} == {"x"}


@pytest.mark.parametrize("sweep, words", [
    ({"experiment": "x", "grd": {"net": ["small_cnn"]}}, "Did you mean 'grid'?"),
    ({"grid": {"nte": ["small_cnn"]}}, "Did you mean 'net'?"),
    ({"base": {"frezee": 0.5}}, "Did you mean 'freeze'?"),
    ({"grid": {"net": "small_cnn"}}, "must be a non-empty list of values"),
    ({"grid": {"freeze": [0, 2]}}, "--freeze 2.0 is outside [0, 1]"),
    ({"grid": {"experiment": ["a", "b"]}}, "cannot vary within a sweep"),
    ({"base": {"experiment": "a"}}, "at the top level"),
    ({"grid": [{"name": "src"}, {"init": ["run:scr"]}]}, "Did you mean 'src'?"),
    ({"grid": [{"init": ["run:later"]}, {"name": "later"}]}, "Unknown run name 'later'"),
    ({"grid": [{"name": "two", "seed": [0, 1]}, {"init": ["run:two"]}]}, "ambiguous"),
    ({"grid": [{"cache_limit": ["1G"]}, {"cache_limit": ["2G"]}]}, "differ in cache_limit"),
    ({"grid": {"classes": [["0", "0"]]}}, "names 0 more than once"),
])
def test_a_bad_sweep_file_names_the_problem(sweep, words):
    with pytest.raises(MedtransferError) as error:
        expand(sweep, source="s.yaml")
    assert words in str(error.value) and "s.yaml" in str(error.value)


def sweep(path, *extra):
    return subprocess.run([sys.executable, "-m", "medtransfer", "sweep", str(path), *extra],
                          capture_output=True, text=True, timeout=900)


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path, digits_data_dir, capsys):
    path = sweep_file(tmp_path, digits_data_dir, {"net": ["small_cnn", "cbr_tiny"],
                                                  "seed": [0, 1]})
    complete = load_sweep(path).runs[3].run_dir
    complete.mkdir(parents=True)
    (complete / "metrics.json").write_text(json.dumps({"status": "complete"}))

    assert main(["sweep", str(path), "--dry-run"]) == 0
    stdout = capsys.readouterr().out
    ids = [run.run_id for run in load_sweep(path).runs]
    assert [run_id.split("-")[1:5] for run_id in ids] == [
        ["small_cnn", "glorot", "f0.00", "s0"], ["small_cnn", "glorot", "f0.00", "s1"],
        ["cbr_tiny", "glorot", "f0.00", "s0"], ["cbr_tiny", "glorot", "f0.00", "s1"]]
    assert stdout.splitlines()[1:] == [
        "4 runs: 1 complete, 3 to do",
        *(f"  to do     {run_id}" for run_id in ids[:3]),
        f"  complete  {ids[3]}",
    ]
    assert sorted(p.name for p in (tmp_path / "logs" / "sw").iterdir()) == [complete.name]


@pytest.mark.slow
def test_a_failed_run_is_recorded_the_others_complete_and_a_second_sweep_skips_them(
        tmp_path, digits_data_dir):
    kept = ["5", "6", "7", "8", "9"]
    path = sweep_file(tmp_path, digits_data_dir, [
        {"seed": [0], "classes": [kept]},
        {"name": "broken", "init": [str(tmp_path / "no_such_run")]},
        {"init": ["run:broken"]},
        {"seed": [1], "classes": [kept]},
    ])
    experiment = tmp_path / "logs" / "sw"
    first_good, broken, dependent, second_good = (run.run_dir for run in load_sweep(path).runs)
    good = [first_good, second_good]
    assert broken.name.startswith("digits-small_cnn-from_no_such_run_")

    first = sweep(path)
    assert first.returncode == 1, first.stderr
    assert "2 run(s) of" in first.stderr and "failed" in first.stderr
    assert "Traceback" not in first.stderr
    assert "2 of 4 runs complete, 2 failed." in first.stdout
    for run_dir in good:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["status"] == "complete" and metrics["classes"] == kept
        assert metrics["num_classes"] == 5 and metrics["train_images"] == 40
        with (run_dir / "predictions_test.csv").open() as stream:
            rows = list(csv.reader(stream))
        assert rows[0] == ["id", "label", *(f"prob_{name}" for name in kept)]
        assert {row[1] for row in rows[1:]} == set(kept)
        assert not (run_dir / "error.txt").exists()
    error = (broken / "error.txt").read_text()
    assert "exited with code 2" in error and "no_such_run does not exist" in error
    assert "was not started" in (dependent / "error.txt").read_text()
    assert (experiment / "sweep.yaml").read_text() == path.read_text()

    stamps = [(run_dir / "metrics.json").stat().st_mtime_ns for run_dir in good]
    second = sweep(path)
    assert second.returncode == 1
    assert "4 runs: 2 complete, 2 to do" in second.stdout
    assert "  retry     " + broken.name in second.stdout
    assert "Training" not in second.stdout  # the broken run fails before training
    assert [(run_dir / "metrics.json").stat().st_mtime_ns for run_dir in good] == stamps
