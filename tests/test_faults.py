"""Faults caused for real: a killed run, a second process, divergence, bad paths."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from tensorboard_events import scalar_steps

RUN_ID = "digits-small_cnn-glorot-f0.50-s0-e{epochs}-bs64-px16"


def run_args(root, data_dir, epochs="1+4", *extra):
    return [sys.executable, "-m", "medtransfer", "run", "--dataset", "digits", "--net",
            "small_cnn", "--image-size", "16", "--batch-size", "64", "--lr", "1e-3",
            "--freeze", "0.5", "--epochs", epochs, "--experiment", "faults",
            "--logdir", str(root / "logs"), "--data-dir", str(data_dir), *extra]


def history_epochs(run_dir):
    if not (run_dir / "history.csv").exists():
        return []
    with (run_dir / "history.csv").open() as stream:
        return [(int(row["epoch"]), row["phase"]) for row in csv.DictReader(stream)]


def resumable_epoch(run_dir):
    try:
        return json.loads((run_dir / "resume" / "state.json").read_text())["epoch"]
    except FileNotFoundError:
        return 0


def wait_for(condition, process, timeout=300):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_in_phase_two_resumes_from_the_last_epoch(tmp_path, digits_data_dir):
    run_dir = tmp_path / "logs" / "faults" / RUN_ID.format(epochs="1+4")
    process = subprocess.Popen(run_args(tmp_path, digits_data_dir), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    # Epoch 2 is the first fine-tuning epoch: kill once it is saved, while epoch 3 trains.
    wait_for(lambda: resumable_epoch(run_dir) >= 2, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_after = resumable_epoch(run_dir)
    assert 2 <= killed_after < 5 and not (run_dir / "metrics.json").exists()

    again = subprocess.run(run_args(tmp_path, digits_data_dir), capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"Resuming {run_dir} after epoch {killed_after}" in again.stdout
    assert history_epochs(run_dir) == [
        (1, "warmup"), (2, "finetune"), (3, "finetune"), (4, "finetune"), (5, "finetune")]
    for folder, tag in (("validation", "val_auc_micro"), ("train", "loss")):
        assert [step for step, _ in scalar_steps(run_dir / folder, tag)] == [1, 2, 3, 4, 5]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["frozen_layers"] == 6
    assert not (run_dir / "resume").exists()


@pytest.mark.slow
def test_a_second_process_on_the_same_run_refuses(tmp_path, digits_data_dir):
    run_dir = tmp_path / "logs" / "faults" / RUN_ID.format(epochs="0+3")
    first = subprocess.Popen(run_args(tmp_path, digits_data_dir, "0+3"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(history_epochs(run_dir)) >= 1, first)
    second = subprocess.run(run_args(tmp_path, digits_data_dir, "0+3"), capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 2
    assert "Another process is already training" in second.stderr
    assert "Traceback" not in second.stderr
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert [epoch for epoch, _ in history_epochs(run_dir)] == [1, 2, 3]
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "complete"


def test_a_diverging_run_stops_and_says_so(tmp_path, digits_data_dir):
    from medtransfer.cli import main

    code = main(["run", "--dataset", "digits", "--net", "small_cnn", "--image-size", "16",
                 "--epochs", "0+3", "--lr", "1e9", "--train-size", "200", "--experiment", "nan",
                 "--logdir", str(tmp_path), "--data-dir", str(digits_data_dir),
                 "--strategy", "default"])
    assert code == 3
    metrics = json.loads((tmp_path / "nan" / "digits-small_cnn-glorot-f0.00-s0-e0+3-lr1e+09-"
                          "px16-ts200" / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["diverged_epoch"] == 1


def test_overwrite_trains_a_complete_run_again(tmp_path, digits_data_dir):
    from medtransfer.config import RunConfig
    from medtransfer.training.run import run_experiment

    config = RunConfig(dataset="digits", net="small_cnn", image_size=16, epochs="0+1",
                       train_size=100, logdir=str(tmp_path), data_dir=str(digits_data_dir),
                       strategy="default")
    first = run_experiment(config)
    stamp = os.stat(first.run_dir / "metrics.json").st_mtime_ns
    assert run_experiment(config).skipped
    assert os.stat(first.run_dir / "metrics.json").st_mtime_ns == stamp
    again = run_experiment(config, overwrite=True)
    assert not again.skipped and again.metrics["status"] == "complete"
    assert os.stat(first.run_dir / "metrics.json").st_mtime_ns != stamp


def test_resume_publishes_the_best_weights_of_the_state_not_of_a_dropped_epoch(tmp_path):
    """A kill after epoch 3 saved new best weights but before its state was written."""
    from medtransfer.training.run import _restore_progress
    from medtransfer.training.rundir import RunDirectory, TensorBoardLog

    run_dir = RunDirectory(tmp_path / "run")
    run_dir.create()
    run_dir.resume.mkdir()
    for epoch in (1, 2, 3):
        run_dir.append_history({"epoch": epoch, "phase": "finetune", "val_auc_micro": epoch})
    run_dir.best_candidate(2).write_bytes(b"weights of epoch 2")
    run_dir.best_candidate(3).write_bytes(b"weights of epoch 3")
    run_dir.best_weights.write_bytes(b"weights of epoch 1")  # published before the kill
    (run_dir.resume / "state.json").write_text(json.dumps(
        {"epoch": 2, "phase": "finetune", "best_epoch": 2, "val_auc_micro_best": 2.0}))

    state, done = _restore_progress(run_dir, TensorBoardLog(run_dir.path))
    assert done == 2 and state.best_epoch == 2
    assert run_dir.best_weights.read_bytes() == b"weights of epoch 2"
    assert not run_dir.best_candidate(3).exists()
    assert [row["epoch"] for row in run_dir.read_history()] == [1, 2]
