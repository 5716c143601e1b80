"""Issue #12 points 3-4: --class-weight balanced and --patience (early stopping)."""

import csv
import json

import keras
import numpy as np
import pytest
from layouts import class_image

from medtransfer.config import RunConfig, config_from_mapping
from medtransfer.data.pipeline import make_dataset, select_train_subset
from medtransfer.data.prepare import prepare_dataset
from medtransfer.errors import MedtransferError
from medtransfer.training import run as run_module
from medtransfer.training.callbacks import StopOnPlateau
from medtransfer.training.class_weights import balanced_class_weights
from medtransfer.training.run import run_experiment
from medtransfer.training.rundir import open_run


def _history(run_dir):
    with (run_dir / "history.csv").open() as stream:
        return list(csv.DictReader(stream))


@pytest.fixture(scope="module")
def skewed_data_dir(tmp_path_factory):
    """A folder layout with 30, 10 and 10 images: split 8:1:1, train holds 24, 8 and 8."""
    import cv2

    root = tmp_path_factory.mktemp("skewed")
    for class_index, (label, count) in enumerate((("common", 30), ("rare", 10),
                                                   ("scarce", 10))):
        (root / "source" / label).mkdir(parents=True)
        for i in range(count):
            image = class_image(class_index, 12, 12, seed=100 * class_index + i)
            cv2.imwrite(str(root / "source" / label / f"{i:02d}.png"), image)
    prepare_dataset("folder", root / "source", root / "datasets" / "skewed", workers=1,
                    progress=False)
    return root / "datasets"


def test_balanced_weights_by_hand():
    weights = balanced_class_weights(["a"] * 6 + ["b"] * 3 + ["c"], ["a", "b", "c"])
    assert weights == pytest.approx({"a": 10 / 18, "b": 10 / 9, "c": 10 / 3})
    with pytest.raises(MedtransferError, match="class 'c' has no training image"):
        balanced_class_weights(["a", "b"], ["a", "b", "c"])


def test_options_are_validated():
    assert config_from_mapping({"class_weight": "balanced", "patience": 3}).patience == 3
    with pytest.raises(MedtransferError, match="Did you mean 'balanced'"):
        config_from_mapping({"class_weight": "balance"})
    with pytest.raises(MedtransferError, match="--patience 0 must be a whole number ≥ 1"):
        config_from_mapping({"patience": 0})


@pytest.mark.slow
def test_balanced_class_weights_weight_the_loss_under_mirrored(skewed_data_dir, tmp_path):
    split = csv.DictReader((skewed_data_dir / "skewed" / "split.csv").open())
    train = [row["label"] for row in split if row["split"] == "train"]
    assert [train.count(c) for c in ("common", "rare", "scarce")] == [24, 8, 8]
    # Frozen backbone, no dropout, a learning rate below float32 resolution: the model
    # does not change during the epoch, so its training loss is computable afterwards.
    config = RunConfig(dataset="skewed", data_dir=str(skewed_data_dir), net="small_cnn",
                       image_size=16, epochs="0+1", freeze=1.0, lr=1e-30, dropout=0.0,
                       batch_size=4, train_size=20, strategy="mirrored", augment=False,
                       class_weight="balanced", logdir=str(tmp_path))
    result = run_experiment(config)
    metrics = result.metrics
    assert metrics["replicas"] == 2 and metrics["train_images"] == 20
    # --train-size 20 keeps 12, 4 and 4 of them: 20 / (3 * 12) and 20 / (3 * 4).
    assert metrics["class_weight"] == "balanced"
    assert metrics["class_weights"] == pytest.approx(
        {"common": 20 / 36, "rare": 20 / 12, "scarce": 20 / 12})
    assert "class_weight: balanced" in (result.run_dir / "config.yaml").read_text()

    run = open_run(result.run_dir, "test")
    dataset = run.dataset()
    subset = select_train_subset(dataset.split_frame("train"), 20, config.seed)
    images = make_dataset(dataset.shard_paths("train"), 3, image_size=16, batch_size=20,
                          training=False, keep_ids=set(subset["id"]), cache_limit_bytes=0)
    pixels, one_hot = next(iter(images))
    losses = keras.losses.categorical_crossentropy(one_hot, run.model()(pixels)).numpy()
    weights = np.array(list(metrics["class_weights"].values()))[np.argmax(one_hot, axis=1)]
    logged = float(_history(result.run_dir)[0]["loss"])
    assert logged == pytest.approx(float(np.sum(weights * losses)) / 20, rel=1e-4)
    # The untrained model's losses are all near ln 3, yet the unweighted mean is out of
    # that tolerance by a factor of ten: the check tells weighted from unweighted.
    assert logged != pytest.approx(float(np.mean(losses)), rel=1e-3)


class Killed(Exception):
    """Stands in for a kill right after an epoch's resume state is saved."""


@pytest.mark.slow
def test_patience_stops_phase_two_and_counts_on_after_a_resume(
    skewed_data_dir, tmp_path, monkeypatch
):
    # A learning rate far below float32 resolution and a frozen backbone: no weight and
    # no BatchNorm statistic changes, so validation AUC never improves after epoch 1.
    # Phase 2 is epochs 1-8: epochs 2, 3 and 4 without improvement end it after epoch 4.
    config = RunConfig(dataset="skewed", data_dir=str(skewed_data_dir), net="small_cnn",
                       image_size=16, epochs="0+8", freeze=1.0, lr=1e-30, patience=3,
                       batch_size=20, augment=False, logdir=str(tmp_path))
    original = StopOnPlateau.on_epoch_end

    def killed_after_epoch_3(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch + 1 == 3:
            raise Killed

    monkeypatch.setattr(run_module.StopOnPlateau, "on_epoch_end", killed_after_epoch_3)
    with pytest.raises(Killed):
        run_experiment(config)
    assert len(_history(config.run_dir)) == 3
    monkeypatch.setattr(run_module.StopOnPlateau, "on_epoch_end", original)

    # Resumed in a new "process": 2 phase-2 epochs without improvement are on record, so
    # the third, epoch 4, ends the run (a count restarted at the resume would go to 6).
    result = run_experiment(config)
    rows = _history(result.run_dir)
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3, 4]
    assert len({row["val_auc_micro"] for row in rows}) == 1
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["status"] == "complete"
    assert (metrics["best_epoch"], metrics["stopped_epoch"], metrics["patience"]) == (1, 4, 3)
