"""``sweep --estimate``: per-run and total expected wall time, from a cached calibration."""

import json

import pytest
import yaml

from medtransfer.errors import MedtransferError
from medtransfer.study.estimate import (
    CACHE,
    calibration_key,
    estimate_sweep,
    machine_key,
    missing_inputs,
    recorded_estimates,
)
from medtransfer.study.grid import load_sweep
from medtransfer.training.rundir import RunDirectory

# Seconds: start-up 10, build 1, a weight save 0.5, a prediction step 0.2 (+1 to trace);
# phase 1 steps 0.1 (+2 to trace), phase 2 steps 0.3 (+3) and 0.01 per precise-BN image.
CALIBRATION = {
    "startup": 10.0, "build": 1.0, "save": 0.5, "predict_step": 0.2, "predict_trace": 1.0,
    "replicas": 1,
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
    (logs / CACHE).write_text(json.dumps({"calibrations": {machine_key(): {key: CALIBRATION}}}))
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
    # phase 1: trace 2 + predict trace 1 + 1 x (10 x 0.1 + 2 x 0.2 + 2 x 0.5) = 5.4
    # phase 2: trace 3 + predict trace 1 + 2 x (10 x 0.3 + 2 x 0.2 + 640 x 0.01 + 1) = 25.6
    # once: start-up 10 + build 1 + predict trace 1 + test 0.2 = 12.2
    fresh, resumed, complete = estimate.rows
    assert fresh["seconds"] == pytest.approx(43.2)
    assert (fresh["state"], fresh["epochs_left"], fresh["spent"]) == ("to do", 3, 0.0)
    assert fresh["images_per_second_warmup"] == pytest.approx(640)
    assert fresh["images_per_second_finetune"] == pytest.approx(64 / 0.3)
    # one phase-2 epoch left: 3 + 1 + 10.8, plus the 12.2 once
    assert resumed["seconds"] == pytest.approx(27.0)
    assert (resumed["state"], resumed["epochs_left"], resumed["spent"]) == ("resume", 1, 16.0)
    assert (complete["state"], complete["seconds"]) == ("complete", 0.0)
    assert estimate.total_seconds == pytest.approx(70.2)
    assert estimate.end_seconds == pytest.approx(43.2)  # one run on each machine
    assert estimate_sweep(path).end_seconds == pytest.approx(70.2)
    assert estimate.calibrated == []  # all from the cache
    assert "2 machines" in estimate.text() and "cold disk" in estimate.text()
    # Nothing written or tidied up: not the stopped run, no new run directory; the
    # whole runs' estimates are kept for the report (the stopped one from scratch).
    assert sorted(path.relative_to(logs) for path in logs.rglob("*")) == before
    assert recorded_estimates(logs / "cost") == {
        row["run_id"]: pytest.approx(43.2) for row in estimate.rows}


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

    # Starting a process to time TensorFlow's import costs seconds and shows nothing here.
    monkeypatch.setattr(estimate_module, "_startup_seconds", lambda: 4.0)
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


def test_machines_without_estimate_is_a_clear_error(tmp_path, capsys):
    from medtransfer.cli import main

    path = write_sweep(tmp_path, {"seed": [0]})
    assert main(["sweep", str(path), "--machines", "4"]) == 2
    assert "--machines 4 only says where an estimate ends: add --estimate" in \
        capsys.readouterr().err
    assert not (tmp_path / "logs").exists()
