"""The reference studies' configs: each plan's size and axes, and every ``published``
value equal to a verified number of ../shared/reference/published.yaml's copy below."""

from pathlib import Path

import pytest
import yaml

from medtransfer.study.grid import load_sweep

CONFIGS = Path(__file__).parent.parent / "configs"
# MedMNIST v2's benchmark table (medmnist.com/v2), ResNet-18 (28): verified, with source.
MEDMNIST_RESNET18_28 = {
    "pneumoniamnist": (0.944, 0.854), "breastmnist": (0.901, 0.863),
    "dermamnist": (0.917, 0.735), "retinamnist": (0.717, 0.524), "chestmnist": (0.768, 0.947),
}


def plan(name):
    sweep = load_sweep(CONFIGS / f"{name}.yaml", logdir="/tmp/logs")
    return sweep, [run for run in sweep.runs if not run.pretrain]


def cells(runs, *fields):
    return sorted({tuple(getattr(run.config, field) for field in fields) for run in runs})


def test_medmnist_v2_is_resnet18_28_from_scratch_with_the_benchmarks_protocol():
    sweep, runs = plan("medmnist_v2")
    assert len(sweep.runs) == len(runs) == 5 * 3
    assert cells(runs, "net", "init", "image_size", "epochs", "optimizer", "lr",
                 "batch_size", "lr_schedule", "augment") == [
        ("resnet18_28", "glorot", 28, "0+100", "adam", 0.001, 128, "multistep", False)]
    assert {run.config.dataset for run in runs} == set(MEDMNIST_RESNET18_28)
    values = yaml.safe_load(sweep.text)["published"]["values"]
    found = {(v["dataset"], v["label"]): (v["metric"], v["value"]) for v in values}
    for dataset, (auc, acc) in MEDMNIST_RESNET18_28.items():
        # Like with like: MedMNIST's AUC is our macro AUC (the positive class's for binary
        # tasks), the mean per-finding AUC for multi-label ChestMNIST.
        metric = "test_auc_mean" if dataset == "chestmnist" else "test_auc_macro"
        assert found[(dataset, "AUC")] == (metric, auc)
        assert found[(dataset, "ACC")] == ("test_accuracy", acc)
    assert sweep.split_sizes["chestmnist"] == {"train": 78468, "validation": 11219,
                                               "test": 22433}


def test_chestmnist_exercise_pretrains_then_transfers_to_pneumonia():
    sweep, runs = plan("chestmnist_exercise")
    pretrainings = [run for run in sweep.runs if run.pretrain]
    assert len(runs) == 16 and len(pretrainings) == 3  # one autoencoder per seed
    assert {run.pretrain for run in pretrainings} == {"autoencoder"}
    # Every pretraining comes before the first run that uses it.
    order = [run.run_dir for run in sweep.runs]
    for run in runs:
        if run.source is not None:
            assert order.index(run.source.run_dir) < order.index(run.run_dir)
    low_data = [run for run in runs if run.config.train_size == 300]
    assert len(low_data) == 6 and all(run.config.any_finding for run in low_data)
    assert sum(run.source is not None for run in low_data) == 3
    pneumonia = [run for run in runs if run.config.dataset == "pneumoniamnist"]
    assert cells(pneumonia, "freeze") == [(0.0,), (1.0,)] and len(pneumonia) == 9
    transfers = [run for run in pneumonia if run.source is not None]
    assert {run.source.config.dataset for run in transfers} == {"chestmnist"}
    assert all(run.source.config.any_finding for run in transfers)
    assert "published" not in yaml.safe_load(sweep.text)  # the exercise is not verified


def test_chexpert_edema_is_one_finding_with_the_blogs_regime():
    sweep, runs = plan("chexpert_edema")
    assert len(runs) == 28
    assert cells(runs, "dataset", "epochs", "lr_schedule", "plateau_patience", "affine") == [
        ("chexpert", "0+100", "plateau", 10, True)]
    assert {run.config.findings for run in runs} == {("Edema",), ("Consolidation",)}
    nets = {run.config.net for run in runs if run.config.train_size is None
            and run.config.init == "glorot" and run.config.findings == ("Edema",)}
    assert nets == {"resnet18", "resnet34", "resnet50", "cbr_large_w", "cbr_large_t",
                    "cbr_small", "cbr_tiny"}
    transfers = [run for run in runs if run.source is not None]
    assert len(transfers) == 10 and cells(transfers, "freeze") == [(0.0,), (1.0,)]
    assert {run.source.config.findings for run in transfers} == {("Consolidation",)}
    assert "published" not in yaml.safe_load(sweep.text)


def test_transfusion_runs_imagenet_nets_with_three_inits_and_cbr_from_scratch():
    sweep, runs = plan("transfusion2019")
    assert len(runs) == 28
    inits = {(run.config.net, run.config.init) for run in runs}
    for net in ("resnet50", "inception_v3"):
        assert {init for n, init in inits if n == net} == {"glorot", "imagenet", "mean_var"}
    for net in ("cbr_large_t", "cbr_large_w", "cbr_small", "cbr_tiny"):
        assert {init for n, init in inits if n == net} == {"glorot"}
    # Two glorot seeds and one imagenet run per ImageNet net: what similarity --experiment
    # needs for Transfusion's figure 2.
    for dataset in ("retina", "chexpert"):
        for net in ("resnet50", "inception_v3"):
            seeds = [run.config.seed for run in runs if (run.config.dataset, run.config.net,
                     run.config.init, run.config.train_size) == (dataset, net, "glorot", None)]
            assert sorted(seeds) == [0, 1]
    # Transfusion's tables could not be read from a primary source: no published values.
    assert "published" not in yaml.safe_load(sweep.text)


@pytest.mark.parametrize("name", ["transfusion2019", "chexpert_edema", "chestmnist_exercise",
                                  "medmnist_v2"])
def test_each_reference_config_says_its_command_and_cost(name):
    header = (CONFIGS / f"{name}.yaml").read_text().split("\nexperiment:")[0]
    assert f"medtransfer sweep configs/{name}.yaml --dry-run" in header
    assert "# Cost:" in header
