"""The real CLI in a subprocess, on digits, end to end (flax-style: one test, most wiring)."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard_events import scalar_steps, tags

from medtransfer.training.metrics import auc_micro

METRICS_KEYS = {
    "dataset", "net", "init", "freeze", "seed", "epochs_warmup", "epochs_finetune",
    "best_epoch", "val_auc_micro_best", "test_auc_micro", "test_auc_macro", "test_accuracy",
    "frozen_layers", "total_layers", "frozen_params", "trainable_params", "train_seconds",
    "images_per_second", "status",
}
HISTORY_COLUMNS = [
    "epoch", "phase", "loss", "accuracy", "val_loss", "val_auc_micro", "val_auc_macro",
    "val_accuracy", "lr", "seconds",
]


def medtransfer(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "medtransfer", *args], cwd=cwd, capture_output=True, text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def e2e_run(tmp_path_factory, digits_data_dir):
    root = tmp_path_factory.mktemp("e2e")
    args = ["run", "--dataset", "digits", "--net", "small_cnn", "--epochs", "1+1",
            "--image-size", "16", "--batch-size", "64", "--lr", "1e-3", "--freeze", "0.5",
            "--deterministic", "--experiment", "e2e", "--logdir", str(root / "logs"),
            "--data-dir", str(digits_data_dir)]
    result = medtransfer(*args, cwd=root)
    assert result.returncode == 0, result.stderr
    run_dir = root / "logs" / "e2e" / "digits-small_cnn-glorot-f0.50-s0-e1+1-bs64-px16"
    return root, run_dir, result


@pytest.mark.slow
def test_every_artifact_of_a_run(e2e_run):
    root, run_dir, result = e2e_run
    # Printed relative to the working directory, where the run directory is.
    assert "test AUC (micro)" in result.stdout
    assert str(run_dir.relative_to(root) / "metrics.json") in result.stdout

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert METRICS_KEYS <= set(metrics)
    assert metrics["status"] == "complete"
    assert (metrics["epochs_warmup"], metrics["epochs_finetune"]) == (1, 1)
    # small_cnn's backbone: 12 layers (conv, bn, pool) x 4; floor(0.5 * 12) = 6 frozen.
    assert (metrics["frozen_layers"], metrics["total_layers"]) == (6, 12)
    assert 0.5 < metrics["test_auc_micro"] <= 1.0
    assert metrics["best_epoch"] in (1, 2)
    assert metrics["images_per_second"] > 0

    with (run_dir / "history.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert HISTORY_COLUMNS == list(rows[0])[: len(HISTORY_COLUMNS)]
    assert [(row["epoch"], row["phase"]) for row in rows] == [("1", "warmup"), ("2", "finetune")]
    best = max(rows, key=lambda row: float(row["val_auc_micro"]))
    assert float(best["val_auc_micro"]) == pytest.approx(metrics["val_auc_micro_best"])

    # test_auc_micro is exactly the AUC of the written predictions.
    with (run_dir / "predictions_test.csv").open() as stream:
        predictions = list(csv.DictReader(stream))
    class_names = [name.removeprefix("prob_") for name in list(predictions[0])[2:]]
    assert len(class_names) == 10 and len(predictions) == metrics["test_images"]
    labels = np.array([class_names.index(row["label"]) for row in predictions])
    probs = np.array([[float(row[f"prob_{c}"]) for c in class_names] for row in predictions])
    assert auc_micro(labels, probs) == pytest.approx(metrics["test_auc_micro"], abs=1e-6)

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["net"] == "small_cnn" and config["num_classes"] == 10
    assert config["lr"] == 1e-3 and config["image_size"] == 16
    assert (run_dir / "best.weights.h5").stat().st_size > 0
    assert not (run_dir / "resume").exists()


@pytest.mark.slow
def test_tensorboard_scalars_and_hparams(e2e_run):
    _, run_dir, _ = e2e_run
    with (run_dir / "history.csv").open() as stream:
        history = list(csv.DictReader(stream))
    # The curves are the history: same epochs, same values.
    assert scalar_steps(run_dir / "validation", "val_auc_micro") == [
        (int(row["epoch"]), pytest.approx(float(row["val_auc_micro"]))) for row in history]
    assert {"val_loss", "val_accuracy", "val_auc_macro"} <= tags(run_dir / "validation")
    assert [step for step, _ in scalar_steps(run_dir / "train", "loss")] == [1, 2]
    root = EventAccumulator(str(run_dir)).Reload()
    hparams = root.PluginTagToContent("hparams")
    session = next(v for k, v in hparams.items() if k.endswith("session_start_info"))
    for name in (b"dataset", b"net", b"init", b"freeze", b"epochs", b"lr", b"seed"):
        assert name in session


@pytest.mark.slow
def test_config_yaml_reproduces_the_run(e2e_run):
    root, run_dir, _ = e2e_run
    again = medtransfer("run", "--config", str(run_dir / "config.yaml"), "--experiment",
                        "again", cwd=root)
    assert again.returncode == 0, again.stderr
    first = json.loads((run_dir / "metrics.json").read_text())
    second = json.loads((root / "logs" / "again" / run_dir.name / "metrics.json").read_text())
    for key in ("best_epoch", "val_auc_micro_best", "test_auc_micro", "test_accuracy",
                "frozen_params", "trainable_params"):
        assert first[key] == second[key], key
    # --deterministic on the CPU: every number of every epoch is the same, to the last bit.
    assert history_numbers(run_dir) == history_numbers(root / "logs" / "again" / run_dir.name)


@pytest.mark.slow
def test_another_seed_trains_differently_on_the_same_split(e2e_run, digits_data_dir):
    root, run_dir, _ = e2e_run
    split = (digits_data_dir / "digits" / "split.csv").read_bytes()
    other = medtransfer("run", "--config", str(run_dir / "config.yaml"), "--seed", "1",
                        cwd=root)
    assert other.returncode == 0, other.stderr
    seed_1 = run_dir.with_name(run_dir.name.replace("-s0-", "-s1-"))
    assert history_numbers(seed_1) != history_numbers(run_dir)
    assert (digits_data_dir / "digits" / "split.csv").read_bytes() == split


def history_numbers(run_dir):
    """history.csv without the wall-clock columns."""
    with (run_dir / "history.csv").open() as stream:
        return [{k: v for k, v in row.items() if "seconds" not in k}
                for row in csv.DictReader(stream)]


@pytest.mark.slow
def test_a_complete_run_is_not_trained_again_and_answers_without_tensorflow(e2e_run):
    root, run_dir, _ = e2e_run
    before = (run_dir / "metrics.json").read_text()
    # The command line's own main, then whether it loaded TensorFlow or Keras.
    code = ("import sys; from medtransfer.cli import main; "
            f"code = main(['run', '--config', {str(run_dir / 'config.yaml')!r}]); "
            "print(sorted({'tensorflow', 'keras'} & set(sys.modules))); raise SystemExit(code)")
    again = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "already holds a complete run" in again.stdout
    assert "test AUC (micro)" in again.stdout  # its metrics, read from metrics.json
    assert again.stdout.splitlines()[-1] == "[]"
    assert (run_dir / "metrics.json").read_text() == before
