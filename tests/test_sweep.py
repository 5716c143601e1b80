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


@pytest.fixture
def held_by_this_test(tmp_path, digits_data_dir):
    """The sweep's two runs; ``hold(run_dir)`` locks one as another process would."""
    from medtransfer.training.rundir import RunDirectory

    path = sweep_file(tmp_path, digits_data_dir, [{"name": "source"}, {"init": ["run:source"]}])
    held = []

    def hold(run_dir):
        directory = RunDirectory(run_dir)
        directory.create()
        directory.lock()
        held.append(directory)

    yield load_sweep(path).runs, hold
    for directory in held:
        directory.unlock()


def test_a_run_or_source_held_by_another_process_is_skipped_not_failed(held_by_this_test):
    from medtransfer.study.launch import HELD, launch_run

    (source, dependent), hold = held_by_this_test
    hold(source.run_dir)
    for run, note in ((source, "held by another process"),
                      (dependent, f"its source run {source.run_id} is held by another process")):
        outcome = launch_run(run)
        assert (outcome.state, outcome.exit_code, outcome.note) == (HELD, None, note)
        assert outcome.text() == f"{note}; skipped"
    assert not (source.run_dir / "error.txt").exists() and not dependent.run_dir.exists()


def test_a_run_whose_child_finds_it_held_is_held_not_complete(held_by_this_test, monkeypatch):
    from medtransfer.study.launch import HELD, launch_run
    from medtransfer.training.rundir import RunDirectory

    (source, _), hold = held_by_this_test
    hold(source.run_dir)
    # Another process takes the run between the sweep's look and its child's start.
    monkeypatch.setattr(RunDirectory, "is_locked", lambda self: False)
    outcome = launch_run(source)
    assert (outcome.state, outcome.exit_code) == (HELD, 75)
    assert "complete" not in outcome.text()
    assert sorted(p.name for p in source.run_dir.iterdir()) == [".lock"]


def test_a_failure_is_never_written_into_a_held_or_complete_run(held_by_this_test):
    from medtransfer.study.launch import _record_failure

    (source, dependent), hold = held_by_this_test
    hold(source.run_dir)
    assert _record_failure(source, 1, ["boom"]) == (
        "not recorded in error.txt: another process holds the run now")
    dependent.run_dir.mkdir(parents=True)
    (dependent.run_dir / "metrics.json").write_text(json.dumps({"status": "complete"}))
    assert _record_failure(dependent, 1, ["boom"]) == (
        "not recorded in error.txt: another process has completed the run since")
    assert not any(run.run_dir.joinpath("error.txt").exists() for run in (source, dependent))
    # Neither held nor complete: recorded.
    (dependent.run_dir / "metrics.json").unlink()
    error = _record_failure(dependent, 1, ["boom"])
    assert error == dependent.run_dir / "error.txt" and "  boom\n" in error.read_text()


def test_datasets_not_prepared_are_listed_before_anything_starts(
        tmp_path, digits_data_dir, capsys):
    path = sweep_file(tmp_path, digits_data_dir,
                      {"dataset": ["digits", "cancer", "proteins", "retina"]})
    digits, cancer, proteins, retina = load_sweep(path).runs
    # A complete run needs no data: retina is not asked for.
    retina.run_dir.mkdir(parents=True)
    (retina.run_dir / "metrics.json").write_text(json.dumps({"status": "complete"}))

    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path} needs 2 datasets not prepared yet (cancer, proteins), so no run was " \
           "started:\n- cancer: Dataset 'cancer' is not prepared yet" in err
    for name in ("cancer", "proteins"):
        assert f"'medtransfer prepare {name} --source DIR --out {digits_data_dir / name}'" in err
    assert "retina" not in err and "digits" not in err.replace(str(digits_data_dir), "")
    assert err.rstrip().endswith("Prepare them, then run the same command again.")
    assert sorted(p.name for p in (tmp_path / "logs" / "sw").iterdir()) == [retina.run_id]

    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 runs: 1 complete, 3 to do" in out
    assert "Prepare them, then run the same command again.\n" in out
    assert "- proteins: Dataset 'proteins' is not prepared yet" in out
    # ... and what the estimate needs instead, rather than failing.
    estimate = out[out.index("sweep --estimate: "):]
    assert "needs the number of images in each split of cancer, proteins, which" in estimate
    assert "split_sizes: {cancer: {train: N, validation: N, test: N}, proteins:" in estimate


def test_report_on_only_failed_runs_lists_them(tmp_path, digits_data_dir):
    from medtransfer.study.launch import FAILED, launch_run
    from medtransfer.study.report import load_study

    path = sweep_file(tmp_path, digits_data_dir, [
        {"name": "source"}, {"init": ["run:source"], "seed": [1, 2]}])
    _, first, second = load_sweep(path).runs
    # The source never ran, so both runs that transfer from it fail without starting.
    assert [launch_run(run).state for run in (first, second)] == [FAILED, FAILED]
    with pytest.raises(MedtransferError) as error:
        load_study(tmp_path / "logs" / "sw")
    assert str(error.value).startswith(
        f"'{tmp_path / 'logs' / 'sw'}' holds no run to report: its 2 runs failed before "
        f"training:\n- {first.run_id}: Run {first.run_id} was not started (")
    assert f"\n- {second.run_id}: Run {second.run_id} was not started (" in str(error.value)


def test_the_chief_lists_a_run_a_worker_found_held_as_held_not_failed(
        tmp_path, digits_data_dir, capsys):
    from keras_tuner.src.engine.trial import TrialStatus

    from medtransfer.study.distributed import _oracle_class

    path = sweep_file(tmp_path, digits_data_dir, {"seed": [0, 1]})
    sweep = load_sweep(path)
    oracle = _oracle_class()(sweep, sweep.runs)
    oracle._set_project_dir(str(tmp_path / "oracle"), "oracle")
    held, failed = oracle.create_trial("tuner0"), oracle.create_trial("tuner1")
    held.status, failed.status = TrialStatus.INVALID, TrialStatus.FAILED  # as run_trials sets
    oracle.end_trial(held)
    oracle.end_trial(failed)
    first, second = (run.run_id for run in sweep.runs)
    assert oracle.result.held == [first]
    assert oracle.result.failed == {second: sweep.runs[1].run_dir / "error.txt"}
    out = capsys.readouterr().out
    assert f"{first}: held by another process; skipped (1/2 done (0 complete, 1 held)" in out
    assert f"{second}: FAILED, see " in out and "(0 complete, 1 failed, 1 held)" in out


def test_the_chief_hands_out_runs_in_grid_order_each_after_its_source_has_ended():
    from medtransfer.config import RunConfig
    from medtransfer.study.distributed import next_run
    from medtransfer.study.grid import PlannedRun

    source = PlannedRun(RunConfig(dataset="digits", seed=0), 0)
    transfer = PlannedRun(RunConfig(dataset="digits", seed=1), 1, source=source)
    other = PlannedRun(RunConfig(dataset="digits", seed=2), 1)
    pending, ended = [source, transfer, other], ("COMPLETED", "FAILED", "INVALID")
    assert next_run(pending, {}, ended) is source
    # The transfer waits for its source: the next one is handed out meanwhile.
    assert next_run(pending, {source.run_id: "RUNNING"}, ended) is other
    assert next_run(pending, {source.run_id: "RUNNING", other.run_id: "RUNNING"}, ended) is None
    assert next_run(pending, {source.run_id: "FAILED", other.run_id: "RUNNING"},
                    ended) is transfer
    # A source complete before the sweep started (not pending) does not hold it back.
    assert next_run([transfer], {}, ended) is transfer
