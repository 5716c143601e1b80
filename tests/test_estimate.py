"""``sweep --estimate``: per-run and total expected wall time, from a cached calibration."""

import json
import math
from pathlib import Path

import pytest
import yaml

from medtransfer.data.prepared import load_prepared
from medtransfer.errors import MedtransferError
from medtransfer.study.estimate import (
    CACHE,
    CALIBRATION_FORMAT,
    calibration_key,
    estimate_sweep,
    machine_key,
    missing_inputs,
    recorded_estimates,
    split_sizes,
)
from medtransfer.study.grid import load_sweep
from medtransfer.training.rundir import RunDirectory

# Seconds: start-up 10, build 1, a weight save 0.5, a prediction step 0.2 (+1 to trace);
# phase 1 steps 0.1 (+2 to trace), phase 2 steps 0.3 (+3) and 0.01 per precise-BN image;
# the set-up outside the steps on digits 5 once and 0.5 an epoch.
CALIBRATION = {
    "startup": 10.0, "build": 1.0, "save": 0.5, "predict_step": 0.2, "predict_trace": 1.0,
    "replicas": 1, "setup": {"digits": {"once": 5.0, "epoch": 0.5}},
    "phases": {"warmup": {"step": 0.1, "trace": 2.0, "batchnorm_image": 0.0},
               "f0.00": {"step": 0.3, "trace": 3.0, "batchnorm_image": 0.01}},
}


def write_sweep(tmp_path, grid, **top):
    path = tmp_path / "cost.yaml"
    path.write_text(yaml.safe_dump({
        "experiment": "cost",
        "base": {"dataset": "digits", "image_size": 16, "batch_size": 64, "epochs": "1+2",
                 "data_dir": str(tmp_path / "no_datasets"), "logdir": str(tmp_path / "logs")},
        "grid": grid, **top}))
    return path


def test_the_estimate_adds_up_each_runs_epochs_less_what_an_interrupted_run_did(tmp_path):
    sizes = {"digits": {"train": 640, "validation": 128, "test": 64}}
    path = write_sweep(tmp_path, {"seed": [0, 1, 2]}, split_sizes=sizes)
    sweep = load_sweep(path)
    logs = tmp_path / "logs"
    logs.mkdir()
    key = calibration_key(sweep.runs[0].config)
    cache = logs / CACHE
    cache.write_text(json.dumps({"calibrations": {machine_key(): {key: CALIBRATION}}}))
    # seed 1 was stopped after epoch 2 (7 s and 9 s); seed 2 is complete.
    stopped = RunDirectory(sweep.runs[1].run_dir)
    stopped.create()
    stopped.write_history([{"epoch": 1, "phase": "warmup", "seconds": 7.0},
                           {"epoch": 2, "phase": "finetune", "seconds": 9.0},
                           {"epoch": 3, "phase": "finetune", "seconds": 8.0}])
    stopped.save_resume_state(2, "finetune", 2, 0.9, lambda weights: weights.write_text(""))
    done = RunDirectory(sweep.runs[2].run_dir)
    done.create()
    done.write_metrics({"status": "complete"})
    before = sorted(path.relative_to(logs) for path in logs.rglob("*"))

    estimate = estimate_sweep(path, machines=2)

    # 10 train, 2 validation, 1 test steps of 64; precise BN over the 640 train images.
    # phase 1: trace 2 + predict trace 1 + 1 x (10 x 0.1 + 2 x 0.2 + 2 x 0.5 + 0.5) = 5.9
    # phase 2: trace 3 + predict trace 1 + 2 x (10 x 0.3 + 2 x 0.2 + 640 x 0.01 + 1
    #          + 0.5) = 26.6
    # once: start-up 10 + build 1 + set-up 5 + predict trace 1 + test 0.2 = 17.2
    fresh, resumed, complete = estimate.rows
    assert fresh["seconds"] == pytest.approx(49.7)
    assert (fresh["setup_seconds"], fresh["setup_epoch_seconds"]) == (16.0, 0.5)
    assert fresh["setup_measured"] is True
    assert (fresh["state"], fresh["epochs_left"], fresh["spent"]) == ("to do", 3, 0.0)
    assert fresh["images_per_second_warmup"] == pytest.approx(640)
    assert fresh["images_per_second_finetune"] == pytest.approx(64 / 0.3)
    # one phase-2 epoch left: 3 + 1 + 11.3, plus the 17.2 once (a new process sets up again)
    assert resumed["seconds"] == pytest.approx(32.5)
    assert (resumed["state"], resumed["epochs_left"], resumed["spent"]) == ("resume", 1, 16.0)
    assert (complete["state"], complete["seconds"]) == ("complete", 0.0)
    assert estimate.total_seconds == pytest.approx(82.2)
    assert estimate.end_seconds == pytest.approx(49.7)  # one run on each machine
    assert estimate_sweep(path).end_seconds == pytest.approx(82.2)
    assert estimate.calibrated == []  # all from the cache
    text = estimate.text()
    assert "2 machines" in text and "cold disk" in text and "set-up 16 s + 0.5 s an epoch)" in text
    # Nothing written or tidied up: not the stopped run, no new run directory; the
    # whole runs' estimates are kept for the report (the stopped one from scratch).
    assert sorted(path.relative_to(logs) for path in logs.rglob("*")) == before
    assert recorded_estimates(logs / "cost") == {
        row["run_id"]: pytest.approx(49.7) for row in estimate.rows}

    # A dataset not prepared here (its sizes from the sweep file) has no set-up to
    # measure: its runs go without one, and the output says so.
    path = write_sweep(tmp_path, {"dataset": ["cancer"]},
                       split_sizes={"cancer": sizes["digits"]})
    without = estimate_sweep(path)
    assert without.rows[0]["seconds"] == pytest.approx(43.2)
    assert without.rows[0]["setup_measured"] is False
    assert "set-up 11 s + 0.0 s an epoch*)" in without.text()
    assert "cancer not prepared here" in without.text()


def test_a_calibration_of_an_older_format_is_measured_again(tmp_path, monkeypatch):
    from medtransfer.study import estimate as estimate_module

    sizes = {"digits": {"train": 640, "validation": 128, "test": 64}}
    path = write_sweep(tmp_path, {"seed": [0]}, split_sizes=sizes)
    key = calibration_key(load_sweep(path).runs[0].config)
    older = machine_key().replace(f"|calibration {CALIBRATION_FORMAT}|",
                                  f"|calibration {CALIBRATION_FORMAT - 1}|")
    assert older != machine_key()
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / CACHE).write_text(
        json.dumps({"calibrations": {older: {key: CALIBRATION}}}))
    measured = []

    def calibrate(config, phases, known, startup):
        measured.append((phases, known))
        return {**CALIBRATION, "startup": 20.0}

    monkeypatch.setattr(estimate_module, "_startup_seconds", lambda: 20.0)
    monkeypatch.setattr(estimate_module, "_calibrate", calibrate)

    estimate = estimate_sweep(path)

    assert measured == [(["warmup", "f0.00"], None)] and estimate.calibrated == [key]
    assert estimate.rows[0]["seconds"] == pytest.approx(49.7 + 10.0)  # start-up 20, not 10
    cache = json.loads((tmp_path / "logs" / CACHE).read_text())["calibrations"]
    assert cache[older] == {key: CALIBRATION} and machine_key() in cache


def test_the_estimate_names_the_split_sizes_it_needs(tmp_path):
    path = write_sweep(tmp_path, {"dataset": ["cancer", "retina"], "net": ["small_cnn"]})
    message = missing_inputs(load_sweep(path))
    assert "cancer, retina" in message and "split_sizes: {cancer: {train: N" in message
    with pytest.raises(MedtransferError, match="split_sizes"):
        estimate_sweep(path)
    bad = write_sweep(tmp_path, {"seed": [0]}, split_sizes={"digits": {"train": 10}})
    with pytest.raises(MedtransferError, match="validation: N, test: N"):
        load_sweep(bad)
    with pytest.raises(MedtransferError, match="--machines 0"):
        estimate_sweep(path, machines=0)


def test_a_real_calibration_is_cached_and_the_second_estimate_measures_nothing(
        tmp_path, digits_data_dir, monkeypatch):
    from medtransfer.study import estimate as estimate_module

    # Starting a process to time TensorFlow's import costs seconds and shows nothing here;
    # so does the tiny real run that times the set-up: here it says what it would train.
    monkeypatch.setattr(estimate_module, "_startup_seconds", lambda: 4.0)
    tiny_runs = []

    def tiny_run(config):
        tiny_runs.append(config)
        return 100.0, [{"epoch": 1, "seconds": 30.0, "train_seconds": 9.0},
                       {"epoch": 2, "seconds": 24.0, "train_seconds": 4.0}]

    monkeypatch.setattr(estimate_module, "_run_seconds", tiny_run)
    path = write_sweep(tmp_path, {"freeze": [0.5], "seed": [0, 1]})
    text = path.read_text().replace(str(tmp_path / "no_datasets"), str(digits_data_dir))
    path.write_text(text.replace("1+2", "0+1"))

    first = estimate_sweep(path)
    second = estimate_sweep(path)

    key = calibration_key(load_sweep(path).runs[0].config)
    assert first.calibrated == [key] and second.calibrated == []  # one for both seeds
    cache = json.loads((tmp_path / "logs" / CACHE).read_text())
    calibration = cache["calibrations"][machine_key()][key]
    assert set(calibration["phases"]) == {"f0.50"} and calibration["startup"] == 4.0
    phase = calibration["phases"]["f0.50"]
    assert phase["step"] > 0 and phase["batchnorm_image"] > 0  # the top half's BN trains
    assert [row["seconds"] for row in second.rows] == [row["seconds"] for row in first.rows]
    assert all(row["seconds"] > 4.0 for row in first.rows)
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == [CACHE]  # no run dir

    # One tiny run for digits: 0+2 epochs on one batch of 64 training images, in a
    # temporary folder gone since. Its second epoch's 24 s less its 4 s of steps and the
    # 3 validation steps, 64 BatchNorm images and 2 saves the calibration expects are
    # digits' set-up each epoch; its 100 s less start-up, build, 2 prediction traces, the
    # test steps, the phase's trace, its 2 training steps and 2 x (those 3 validation
    # steps, 64 images and 2 saves, and the set-up each epoch: 20 s together) the set-up
    # once.
    (tiny,) = tiny_runs
    assert (tiny.epochs, tiny.train_size, tiny.freeze, tiny.net) == ("0+2", 64, 0.5, "small_cnn")
    folder = Path(tiny.logdir).parent
    assert folder.name.startswith("medtransfer-estimate-") and not folder.exists()
    digits = load_prepared("digits", digits_data_dir)
    validation, test = (math.ceil(len(digits.split_frame(split)) / 64)
                        for split in ("validation", "test"))
    epoch = 20.0 - (validation * calibration["predict_step"] + 64 * phase["batchnorm_image"]
                    + 2 * calibration["save"])
    once = 100.0 - (4.0 + calibration["build"] + 2 * calibration["predict_trace"]
                    + test * calibration["predict_step"] + phase["trace"] + 2 * phase["step"]
                    + 2 * 20.0)
    assert calibration["setup"] == {"digits": {"once": pytest.approx(once),
                                               "epoch": pytest.approx(epoch)}}
    assert first.rows[0]["setup_seconds"] == pytest.approx(4.0 + calibration["build"] + once)


def test_machines_without_estimate_is_a_clear_error(tmp_path, capsys):
    from medtransfer.cli import main

    path = write_sweep(tmp_path, {"seed": [0]})
    assert main(["sweep", str(path), "--machines", "4"]) == 2
    assert "--machines 4 only says where an estimate ends: add --estimate" in \
        capsys.readouterr().err
    assert not (tmp_path / "logs").exists()


def test_a_prepared_datasets_own_counts_win_over_the_config_header(tmp_path, digits_data_dir):
    # A config's split_sizes stand in until the dataset is prepared here; then the
    # prepared folder's counts (1,438 / 180 / 179 digits) are what the runs will see.
    path = write_sweep(tmp_path, {"seed": [0]},
                       split_sizes={"digits": {"train": 9, "validation": 9, "test": 9}})
    sweep = load_sweep(path)
    config = sweep.runs[0].config.replace(data_dir=str(digits_data_dir))
    expected = {split: len(load_prepared("digits", digits_data_dir).split_frame(split))
                for split in ("train", "validation", "test")}
    assert split_sizes(config, sweep) == expected and expected["train"] > 9
    assert split_sizes(sweep.runs[0].config, sweep) == {"train": 9, "validation": 9, "test": 9}
