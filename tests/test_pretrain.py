"""Autoencoder pretraining: the mirrored decoder, the scores, the directory run --init
takes, and the sweep step that trains it before the runs that use it.

One pretraining (digits at 16 px, 200 training images, 2 epochs) is trained once for the
module through the command line, and serves every test that needs a finished one.
"""

import csv
import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import yaml

from medtransfer.cli import main
from medtransfer.config import RunConfig, absolute_path
from medtransfer.data.pipeline import make_dataset
from medtransfer.data.prepared import load_prepared
from medtransfer.errors import MedtransferError
from medtransfer.models.classifier import get_backbone
from medtransfer.models.init import build_model
from medtransfer.models.registry import get_net
from medtransfer.pretraining.autoencoder import build_autoencoder, reconstruction_scores
from medtransfer.pretraining.plan import pretrain_config, pretrain_dir, pretrain_id
from medtransfer.study.grid import expand, load_sweep
from medtransfer.training.run import run_experiment

PRETRAIN = {"dataset": "digits", "image_size": 16, "train_size": 200}


def test_the_decoder_mirrors_small_cnns_blocks_back_to_the_image():
    # small_cnn at 16 px: blocks 8x8x32, 4x4x64, 2x2x128, 1x1x256 (the top).
    model = build_autoencoder(get_net("small_cnn").build_backbone((16, 16, 3), None),
                              "small_cnn")
    convs = [layer for layer in model.layers if layer.name.startswith("decoder")
             and isinstance(layer, keras.layers.Conv2D)]
    assert [tuple(layer.output.shape[1:]) for layer in convs] == [
        (2, 2, 128), (4, 4, 64), (8, 8, 32), (16, 16, 3)]
    assert model.output_shape == (None, 16, 16, 3)
    assert get_backbone(model).name == "backbone"


def test_a_top_block_without_pooling_is_not_repeated():
    # cbr_large_t has no pool after its last block: its top is block5_relu itself.
    backbone = get_net("cbr_large_t").build_backbone((32, 32, 3), None)
    model = build_autoencoder(backbone, "cbr_large_t")
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)
             and layer.name.startswith("decoder")]
    top = tuple(backbone.output.shape[1:])
    assert all(tuple(layer.output.shape[1:]) != top for layer in convs)
    assert len(convs) == 5 and model.output_shape == (None, 32, 32, 3)


def test_reconstruction_scores_by_hand():
    images = np.full((2, 16, 16, 3), 0.5, np.float32)
    off = images + np.float32(0.1)
    scores = reconstruction_scores(images, off)
    # MSE 0.1^2 = 0.01; PSNR = 10 log10(1 / 0.01) = 20 dB.
    np.testing.assert_allclose(scores["mse"], [0.01, 0.01], rtol=1e-5)
    np.testing.assert_allclose(scores["psnr"], [20.0, 20.0], rtol=1e-4)
    assert scores["ssim"].shape == (2,)
    exact = reconstruction_scores(images[:1], images[:1])
    assert exact["mse"][0] == 0.0 and exact["ssim"][0] == pytest.approx(1.0)


def test_the_pretraining_config_keeps_what_pretraining_uses_and_names_itself():
    config = pretrain_config(RunConfig(dataset="digits", image_size=16, freeze=0.5,
                                       epochs="3+50", init="imagenet", patience=3), 7)
    assert (config.init, config.freeze, config.epochs, config.patience) == (
        "glorot", 0.0, "0+7", None)
    assert config.lr == 1e-3 and config.image_size == 16
    assert pretrain_id(config) == "digits-small_cnn-autoencoder-s0-e7-px16"
    assert pretrain_dir(config).parts[-2:] == ("autoencoder", pretrain_id(config))
    with pytest.raises(MedtransferError, match="at least 1"):
        pretrain_config(RunConfig(), 0)


def test_an_unknown_method_is_refused_before_anything_loads(capsys):
    assert main(["pretrain", "autoencodr", "--dataset", "digits"]) == 2
    assert "Did you mean 'autoencoder'?" in capsys.readouterr().err


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, digits_data_dir):
    """A finished pretraining, made by the command line; its directory and output."""
    root = tmp_path_factory.mktemp("pretrain")
    argv = ["pretrain", "autoencoder", "--epochs", "2", "--logdir", str(root),
            "--experiment", "ae", "--data-dir", str(digits_data_dir),
            *[f"--{key.replace('_', '-')}={value}" for key, value in PRETRAIN.items()]]
    assert main(argv) == 0
    path = root / "ae" / "autoencoder" / "digits-small_cnn-autoencoder-s0-e2-px16-ts200"
    return {"root": root, "path": path, "argv": argv, "data_dir": digits_data_dir}


def test_the_pretraining_directory_records_its_scores(pretrained, digits_data_dir):
    path = pretrained["path"]
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["pretraining"] == "autoencoder"
    assert (metrics["train_images"], metrics["epochs"]) == (200, 2)
    with (path / "history.csv").open() as stream:
        history = list(csv.DictReader(stream))
    losses = [float(row["val_mse"]) for row in history]
    assert len(losses) == 2 and metrics["best_epoch"] == 1 + int(np.argmin(losses))
    assert metrics["val_mse_best"] == pytest.approx(min(losses))
    assert (path / "reconstructions.png").stat().st_size > 5_000

    # The test MSE is that of the saved best weights on the test split.
    model = build_autoencoder(get_net("small_cnn").build_backbone((16, 16, 3), None),
                              "small_cnn")
    model.load_weights(path / "best.weights.h5")
    dataset = load_prepared("digits", digits_data_dir)
    images = np.concatenate([batch for batch, _ in make_dataset(
        dataset.shard_paths("test"), 10, image_size=16, batch_size=64,
        training=False).as_numpy_iterator()])
    assert len(images) == metrics["test_images"] == len(dataset.split_frame("test"))
    reconstructions = model.predict(images, verbose=0)
    assert metrics["test_mse"] == pytest.approx(np.mean((images - reconstructions) ** 2),
                                                rel=1e-4)
    assert 0.0 < metrics["test_ssim"] < 1.0 and metrics["test_psnr"] > 10.0


def test_the_same_command_again_trains_nothing(pretrained, capsys):
    before = (pretrained["path"] / "best.weights.h5").stat().st_mtime_ns
    assert main(pretrained["argv"]) == 0
    assert "already holds a complete pretraining" in capsys.readouterr().out
    assert (pretrained["path"] / "best.weights.h5").stat().st_mtime_ns == before


def test_a_run_from_the_pretraining_loads_its_encoder_under_a_new_head(pretrained):
    model = build_model("small_cnn", 10, 16, str(pretrained["path"]))
    autoencoder = build_autoencoder(get_net("small_cnn").build_backbone((16, 16, 3), None),
                                    "small_cnn")
    autoencoder.load_weights(pretrained["path"] / "best.weights.h5")
    for loaded, saved in zip(get_backbone(model).weights, get_backbone(autoencoder).weights,
                             strict=True):
        np.testing.assert_array_equal(np.asarray(loaded), np.asarray(saved))

    result = run_experiment(RunConfig(
        dataset="digits", image_size=16, epochs="0+1", train_size=10, init=str(pretrained["path"]),
        data_dir=str(pretrained["data_dir"]), logdir=str(pretrained["root"]),
        experiment="direct"))
    assert result.metrics["head"] == "new" and result.metrics["status"] == "complete"


@pytest.mark.slow  # a child process: TensorFlow's start and one run
def test_a_sweep_step_pretrains_before_the_runs_that_use_it(pretrained, tmp_path):
    # The step inherits the run's dataset, image size and seed, and sets its own epochs
    # and training images: the module's pretraining is that one, so only the run trains.
    path = tmp_path / "ae.yaml"
    path.write_text(yaml.safe_dump({
        "experiment": "ae",
        "base": {"dataset": "digits", "image_size": 16, "epochs": "0+1", "train_size": 10,
                 "data_dir": str(pretrained["data_dir"]), "logdir": str(pretrained["root"])},
        "pretrain": {"small": {"method": "autoencoder", "epochs": 2, "train_size": 200}},
        "grid": {"init": ["pretrain:small"]},
    }))
    step, transfer = load_sweep(path).runs
    assert step.pretrain == "autoencoder" and step.run_dir == pretrained["path"]
    assert step.run_id == "autoencoder/" + pretrained["path"].name
    assert transfer.source is step and transfer.config.init == str(pretrained["path"])

    done = subprocess.run([sys.executable, "-m", "medtransfer", "sweep", str(path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    plan = done.stdout.split("\n\n")[0]
    assert "2 runs (1 of them pretraining): 1 complete, 1 to do" in plan
    assert f"complete  {step.run_id}\n" in plan
    assert f"(transfers from {step.run_id})" in plan
    assert json.loads((transfer.run_dir / "metrics.json").read_text())["head"] == "new"


def test_each_seed_gets_its_own_pretraining_listed_before_its_run():
    runs = expand({"base": {"dataset": "digits", "image_size": 16},
                   "pretrain": {"ae": {"method": "autoencoder"}},
                   "grid": {"seed": [0, 1], "init": ["glorot", "pretrain:ae"]}},
                  source="s.yaml")
    assert [(run.pretrain, run.config.seed) for run in runs] == [
        (None, 0), ("autoencoder", 0), (None, 0), (None, 1), ("autoencoder", 1), (None, 1)]
    assert runs[0].config.init == "glorot" and runs[0].source is None
    assert runs[2].source is runs[1] and runs[5].source is runs[4]
    assert runs[2].config.init == absolute_path(runs[1].run_dir) != runs[5].config.init
    assert runs[1].config.epochs == "0+10" and runs[1].config.train_size is None


@pytest.mark.parametrize("pretrain, init, words", [
    ({"ae": {"method": "autoencoder"}}, "pretrain:a", "Unknown pretraining step 'a'"),
    ({"ae": {"method": "autoencodr"}}, "pretrain:ae", "Did you mean 'autoencoder'?"),
    ({"ae": {"method": "autoencoder", "freeze": 1}}, "pretrain:ae",
     "Unknown pretraining option 'freeze'"),
    ({"ae": {"method": "autoencoder", "epochs": 0}}, "pretrain:ae", "at least 1"),
    ({"ae": {"epochs": 3}}, "pretrain:ae", "has no method"),
])
def test_a_bad_pretraining_step_names_the_problem(pretrain, init, words):
    with pytest.raises(MedtransferError, match=words):
        expand({"pretrain": pretrain, "grid": {"init": [init]}}, source="s.yaml")


def test_the_report_takes_every_seeds_and_nets_autoencoder_as_one_init(tmp_path):
    from fabricated_runs import make_run

    import medtransfer as mt
    from medtransfer.study.runs import study_init

    experiment = tmp_path / "ae"
    folder = experiment / "autoencoder"
    for net in ("small_cnn", "cbr_tiny"):
        for seed, (glorot, transfer) in enumerate(((0.80, 0.84), (0.78, 0.86))):
            source = folder / f"cancer-{net}-autoencoder-s{seed}-e10-ts100"
            make_run(experiment, net=net, seed=seed, val_aucs=[glorot], test_auc=glorot)
            make_run(experiment, net=net, seed=seed, init=str(source), val_aucs=[transfer],
                     test_auc=transfer)
            assert study_init(RunConfig(net=net, seed=seed, init=str(source))) == str(
                folder / "cancer-autoencoder-e10-ts100")
    (experiment / "sweep.yaml").write_text(yaml.safe_dump({
        "experiment": "ae", "base": {"dataset": "cancer"},
        "pretrain": {"ae": {"method": "autoencoder"}},
        "grid": {"net": ["small_cnn", "cbr_tiny"], "seed": [0, 1],
                 "init": ["glorot", "pretrain:ae"]},
        "expect": {"checks": [{"improvement": "pretrain:ae", "over": "glorot",
                               "sign": "positive"}]}}))
    report = mt.report(experiment)
    assert list(report.main.columns) == ["dataset", "net", "glorot",
                                         "transfer from autoencoder"]
    # The check finds the pretraining runs by the step's name: +0.06 for both nets.
    verdicts = [line for line in report.summary_markdown.splitlines()
                if line.startswith("- transfer from autoencoder")]
    assert len(verdicts) == 1 and "as expected" in verdicts[0], verdicts
    # Two seeds per cell: (0.84 + 0.86) / 2 = 0.85 against (0.80 + 0.78) / 2 = 0.79.
    assert [cell.split(" ")[0] for cell in report.main.iloc[0, 2:]] == ["0.7900", "0.8500"]
    assert study_init(RunConfig(init="glorot")) == "glorot"


def test_mt_pretrain_stays_the_function_once_the_package_is_imported():
    # A subpackage named like the API function would replace it as an attribute of
    # medtransfer on its first import.
    import medtransfer as mt
    import medtransfer.pretraining.autoencoder  # noqa: F401
    from medtransfer import api

    assert mt.pretrain is api.pretrain


def test_the_autoencoder_digits_config_is_five_pretrainings_and_twenty_runs():
    from pathlib import Path

    sweep = load_sweep(Path(__file__).parents[1] / "configs" / "autoencoder_digits.yaml",
                       logdir="/tmp/logs")
    pretrainings = [run for run in sweep.runs if run.pretrain]
    assert (len(pretrainings), len(sweep.runs) - len(pretrainings)) == (5, 20)
    assert {run.config.train_size for run in pretrainings} == {None}
    assert all(run.source.pretrain == "autoencoder" for run in sweep.runs
               if run.config.init_is_path)
