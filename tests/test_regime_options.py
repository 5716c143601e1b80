"""--optimizer, --lr-schedule and --affine (issue #23 point 2); the ResNets in a real run."""

import json

import keras
import pytest
import yaml

from medtransfer.cli import _config_from_args, build_parser
from medtransfer.config import RunConfig, config_from_mapping
from medtransfer.errors import MedtransferError
from medtransfer.training.run import run_experiment
from medtransfer.training.rundir import RunDirectory
from medtransfer.training.schedule import ScheduleLearningRate, make_optimizer, scheduled_lr


@pytest.mark.parametrize(("total", "epochs", "factors"), [
    # MedMNIST's 100 epochs: x0.1 from epoch 51, x0.01 from epoch 76.
    (100, [1, 50, 51, 75, 76, 100], [1, 1, 0.1, 0.1, 0.01, 0.01]),
    # 4 epochs: milestones 2 and 3 (epoch n drops once n - 1 reaches one).
    (4, [1, 2, 3, 4], [1, 1, 0.1, 0.01]),
    # 3 epochs: milestones 1.5 and 2.25; epoch 3 (2 epochs done) has passed only the first.
    (3, [1, 2, 3], [1, 1, 0.1]),
])
def test_multistep_divides_by_ten_at_half_and_three_quarters(total, epochs, factors):
    rates = [scheduled_lr(0.5, "multistep", epoch, total) for epoch in epochs]
    assert rates == pytest.approx([0.5 * factor for factor in factors])


def test_plateau_divides_by_ten_after_patience_epochs_without_a_lower_loss():
    losses = [1.0, 0.9, 0.95, 0.92, 0.8, 0.85, 0.8, 0.85]
    # Patience 2: 0.95 and 0.92 are not below 0.9, so epoch 5 drops; the count restarts,
    # 0.8 is a new best, then 0.85 and 0.8 (equal is no improvement) drop epoch 8.
    rates = [scheduled_lr(1.0, "plateau", epoch, 9, losses, patience=2)
             for epoch in range(1, 10)]
    assert rates == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01])
    assert [scheduled_lr(1.0, "constant", epoch, 9, losses) for epoch in (1, 9)] == [1, 1]


def test_the_callback_sets_each_epochs_rate_from_the_history_rows():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=make_optimizer("sgd", 0.2), loss="mse")
    rows = [{"loss": 1.0}, {"loss": 1.5}]  # as a resume restores them from history.csv
    callback = ScheduleLearningRate(0.2, "plateau", 10, 1, rows)
    callback.set_model(model)
    callback.on_epoch_begin(2)  # epoch 3: epoch 2 did not improve on epoch 1
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == \
        pytest.approx(0.02)
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert model.optimizer.momentum == 0.9
    assert isinstance(make_optimizer("adam", 0.1), keras.optimizers.Adam)


def test_options_are_checked_and_keep_existing_run_ids():
    base = "digits-small_cnn-glorot-f0.00-s0"
    assert RunConfig().run_id == base
    assert RunConfig(optimizer="adam", lr_schedule="constant", plateau_patience=10,
                     affine=False).run_id == base
    assert RunConfig(optimizer="sgd", lr_schedule="multistep", affine=True).run_id == (
        base + "-optimizer=sgd-lr_schedule=multistep-affine=true")
    with pytest.raises(MedtransferError, match="Did you mean 'sgd'"):
        config_from_mapping({"optimizer": "sdg"})
    with pytest.raises(MedtransferError, match="Did you mean 'plateau'"):
        config_from_mapping({"lr_schedule": "plateu"})
    with pytest.raises(MedtransferError, match="--plateau-patience 0 must be"):
        config_from_mapping({"plateau_patience": 0})


def test_the_command_line_takes_the_options():
    args = build_parser().parse_args([
        "run", "--optimizer", "sgd", "--lr-schedule", "plateau", "--plateau-patience", "3",
        "--affine"])
    config = _config_from_args(args)
    assert (config.optimizer, config.lr_schedule, config.plateau_patience, config.affine) == (
        "sgd", "plateau", 3, True)


def test_a_resnet18_28_run_with_sgd_multistep_and_affine(tmp_path, digits_data_dir):
    # MedMNIST's net at its smallest input, frozen halfway, with precise BatchNorm: 65
    # backbone layers (66 less the InputLayer), floor(0.5 x 65) = 32 frozen.
    config = RunConfig(dataset="digits", net="resnet18_28", image_size=8, epochs="0+2",
                       freeze=0.5, train_size=40, batch_size=20, lr=0.01, optimizer="sgd",
                       lr_schedule="multistep", affine=True, strategy="default",
                       logdir=str(tmp_path), data_dir=str(digits_data_dir))
    result = run_experiment(config)
    metrics = result.metrics
    assert (metrics["frozen_layers"], metrics["total_layers"]) == (32, 65)
    assert metrics["bn_stats"] == "precise"
    assert (metrics["optimizer"], metrics["lr_schedule"], metrics["affine"]) == (
        "sgd", "multistep", True)
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert (saved["optimizer"], saved["lr_schedule"], saved["affine"]) == (
        "sgd", "multistep", True)
    # 2 epochs: milestones 1 and 1.5, so epoch 2 trains at a tenth.
    rates = [row["lr"] for row in RunDirectory(result.run_dir).read_history()]
    assert rates == pytest.approx([0.01, 0.001])
    assert json.loads((result.run_dir / "metrics.json").read_text())["status"] == "complete"


def test_a_sweep_grid_takes_the_options():
    from medtransfer.study.grid import expand

    runs = expand({"experiment": "medmnist", "base": {"net": "resnet18_28", "optimizer": "sgd",
                                                      "affine": True},
                   "grid": {"lr_schedule": ["constant", "multistep", "plateau"],
                            "plateau_patience": [10]}})
    assert [(run.config.optimizer, run.config.lr_schedule, run.config.affine)
            for run in runs] == [("sgd", schedule, True)
                                 for schedule in ("constant", "multistep", "plateau")]
    assert len({run.config.run_id for run in runs}) == 3
