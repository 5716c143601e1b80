"""Faults caused for real: a killed run, a second process, divergence, bad paths.

No test here depends on the machine's speed: a process is killed at a point it reports
itself (it pauses there until killed), and a "second process" meets a lock the test holds.
"""

import csv
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from tensorboard_events import scalar_steps

# The command line below runs `medtransfer run` with its own arguments after pausing
# EpochRecorder for good once epoch {epoch}'s resume state is saved: SIGKILL then lands
# exactly there, between the state and the publication of that epoch's best weights.
PAUSE_AFTER_EPOCH = """
import sys, threading
from medtransfer.cli import main
from medtransfer.training import callbacks

save = callbacks.EpochRecorder._save_resume_state

def save_then_pause(self, epoch):
    save(self, epoch)
    if epoch == {epoch}:
        print("paused after epoch", epoch, flush=True)
        threading.Event().wait()

callbacks.EpochRecorder._save_resume_state = save_then_pause
sys.exit(main(sys.argv[1:]))
"""


# 200 of digits' 1,437 training images: what is tested (where a run stops, resumes and
# refuses) is the same on any number, and each epoch on all of them cost about 1.6
# CPU-seconds more (the killed and the resumed process: 5 epochs, 21 against 13).
def cli_args(root, data_dir, epochs="1+4", *extra):
    return ["run", "--dataset", "digits", "--net", "small_cnn", "--image-size", "16",
            "--batch-size", "64", "--train-size", "200", "--lr", "1e-3", "--freeze", "0.5",
            "--epochs", epochs, "--experiment", "faults", "--logdir", str(root / "logs"),
            "--data-dir", str(data_dir), *extra]


def run_args(root, data_dir, epochs="1+4", *extra):
    return [sys.executable, "-m", "medtransfer", *cli_args(root, data_dir, epochs, *extra)]


def run_dir_of(root, data_dir, epochs):
    """The run directory `run_args(root, data_dir, epochs)` trains into."""
    from medtransfer.config import RunConfig
    from medtransfer.training.resolve import resolve_config

    config = RunConfig(dataset="digits", net="small_cnn", image_size=16, batch_size=64,
                       train_size=200, lr=1e-3, freeze=0.5, epochs=epochs,
                       experiment="faults", logdir=str(root / "logs"), data_dir=str(data_dir))
    return resolve_config(config)[0].run_dir


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


@pytest.mark.slow
def test_sigkill_in_phase_two_resumes_from_the_last_epoch(tmp_path, digits_data_dir):
    run_dir = run_dir_of(tmp_path, digits_data_dir, "1+4")
    process = subprocess.Popen(
        [sys.executable, "-c", PAUSE_AFTER_EPOCH.format(epoch=2),
         *cli_args(tmp_path, digits_data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    # Epoch 2 is the first fine-tuning epoch: killed once its state is saved.
    for line in process.stdout:
        if line.startswith("paused after epoch 2"):
            break
    else:
        pytest.fail(f"the run ended (exit {process.wait()}) without reaching epoch 2")
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdout.close()
    killed_after = resumable_epoch(run_dir)
    assert killed_after == 2 and not (run_dir / "metrics.json").exists()

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


def test_a_second_process_on_the_same_run_refuses(tmp_path, digits_data_dir):
    from medtransfer.training.rundir import RunDirectory

    # The test process is the "first run": it holds the run directory's lock for as
    # long as the second process lives, however fast or slow either is.
    first = RunDirectory(run_dir_of(tmp_path, digits_data_dir, "0+3"))
    first.create()
    first.lock()
    try:
        second = subprocess.run(run_args(tmp_path, digits_data_dir, "0+3"),
                                capture_output=True, text=True, timeout=300)
    finally:
        first.unlock()
    assert second.returncode == 75, second.stderr  # RunHeld: a sweep skips such a run
    assert "Another process is already training" in second.stderr
    assert "Traceback" not in second.stderr
    # It left the first run's directory alone.
    assert [entry.name for entry in first.path.iterdir()] == [".lock"]


def diverging_run(tmp_path, digits_data_dir, capsys, *extra):
    """Runs 0+3 epochs on 200 images through the CLI; returns (exit code, metrics, stderr)."""
    from medtransfer.cli import main

    args = ["--dataset", "digits", "--net", "small_cnn", "--image-size", "16", "--epochs",
            "0+3", "--train-size", "200", "--experiment", "diverged", "--logdir",
            str(tmp_path), "--data-dir", str(digits_data_dir), "--strategy", "default",
            *extra]
    code = main(["run", *args])
    err = capsys.readouterr().err
    run_dirs = list((tmp_path / "diverged").iterdir())  # the one run directory
    assert len(run_dirs) == 1, run_dirs
    return code, json.loads((run_dirs[0] / "metrics.json").read_text()), err


def test_an_exploding_loss_is_a_divergence(tmp_path, digits_data_dir, capsys):
    # The case: --lr 1e6 gives a finite loss of ~1e21 (Keras computes the
    # cross-entropy from the logits), far above 100 x ln(10) = 230.
    code, metrics, err = diverging_run(tmp_path, digits_data_dir, capsys, "--lr", "1e6")
    assert code == 3
    assert metrics["status"] == "diverged" and metrics["diverged_epoch"] == 1
    assert "above 100 x ln(10) = 230.3" in metrics["diverged_reason"]
    assert float(metrics["loss"]) > 230.3
    assert "Lower --lr" in err and "Traceback" not in err


def test_nan_validation_predictions_are_a_divergence(tmp_path, digits_data_dir, capsys,
                                                     monkeypatch):
    # A BatchNorm variance below zero is NaN in inference mode only: training (batch
    # statistics) goes on with a finite loss, the validation predictions are all NaN.
    from medtransfer.models.classifier import get_backbone
    from medtransfer.training import run as run_module

    build = run_module.build_model

    def broken_statistics(*args, **kwargs):
        model = build(*args, **kwargs)
        layer = get_backbone(model).get_layer("block4_bn")
        layer.moving_variance.assign(np.full(layer.moving_variance.shape, -100.0))
        return model

    monkeypatch.setattr(run_module, "build_model", broken_statistics)
    code, metrics, err = diverging_run(tmp_path, digits_data_dir, capsys, "--bn-stats",
                                       "moving")
    assert code == 3
    assert metrics["status"] == "diverged" and metrics["diverged_epoch"] == 1
    assert metrics["diverged_reason"] == "180 of 180 validation predictions are NaN or inf"
    assert "Traceback" not in err


def test_overwrite_trains_a_complete_run_again(tmp_path, digits_data_dir):
    from medtransfer.config import RunConfig
    from medtransfer.training.resolve import resolve_config
    from medtransfer.training.run import run_experiment

    config = RunConfig(dataset="digits", net="small_cnn", image_size=16, epochs="0+1",
                       train_size=100, logdir=str(tmp_path), data_dir=str(digits_data_dir),
                       strategy="default")
    # An earlier attempt failed (sweep wrote its error.txt): completing removes it.
    run_dir = resolve_config(config)[0].run_dir
    run_dir.mkdir(parents=True)
    (run_dir / "error.txt").write_text("exit code 1: out of memory\n")
    first = run_experiment(config)
    assert not (run_dir / "error.txt").exists()
    # So does finding the run complete (an error.txt written after it completed).
    (run_dir / "error.txt").write_text("exit code 2: another process holds it\n")
    assert run_experiment(config).skipped and not (run_dir / "error.txt").exists()
    stamp = os.stat(first.run_dir / "metrics.json").st_mtime_ns
    assert run_experiment(config).skipped
    assert os.stat(first.run_dir / "metrics.json").st_mtime_ns == stamp
    again = run_experiment(config, overwrite=True)
    assert not again.skipped and again.metrics["status"] == "complete"
    assert os.stat(first.run_dir / "metrics.json").st_mtime_ns != stamp


def test_resume_publishes_the_best_weights_of_the_state_not_of_a_dropped_epoch(tmp_path):
    """A kill after epoch 3 saved new best weights and its own resume weights, but before
    its state.json was renamed into place (test_kill_points.py kills at every moment)."""
    from medtransfer.training.run import _restore_progress
    from medtransfer.training.rundir import RunDirectory, TensorBoardLog

    run_dir = RunDirectory(tmp_path / "run")
    run_dir.create()
    run_dir.resume.mkdir()
    run_dir.write_history([{"epoch": epoch, "phase": "finetune", "val_auc_micro": epoch}
                           for epoch in (1, 2, 3)])
    run_dir.best_candidate(2).write_bytes(b"weights of epoch 2")
    run_dir.best_candidate(3).write_bytes(b"weights of epoch 3")
    run_dir.best_weights.write_bytes(b"weights of epoch 1")  # published before the kill
    run_dir.save_resume_state(2, "finetune", 2, 2.0,
                              lambda path: path.write_bytes(b"state after epoch 2"))
    run_dir.resume_weights(3).write_bytes(b"state after epoch 3")
    (run_dir.resume / ".state.json.x1.tmp").write_text("{}")  # its state.json, unrenamed

    state, resume = _restore_progress(run_dir, TensorBoardLog(run_dir.path))
    assert resume.epoch == 2 and state.best_epoch == 2 and resume.phase == "finetune"
    assert resume.weights.read_bytes() == b"state after epoch 2"
    assert run_dir.best_weights.read_bytes() == b"weights of epoch 2"
    assert sorted(path.name for path in run_dir.resume.iterdir()) == [
        "best-e0002.weights.h5", "state-e0002.weights.h5", "state.json"]
    assert [row["epoch"] for row in run_dir.read_history()] == [1, 2]
