"""``similarity --experiment``: Transfusion's figure 2 from an experiment's runs.

Three tiny mobilenet runs on two digit classes, trained once for the module: glorot at
seeds 0 and 1, and an "imagenet" run whose weights file is the backbone glorot seed 0
starts from (ImageNet weights are never downloaded in tests). Trained with deterministic
ops, the imagenet run and glorot seed 0 start and train identically, so their SVCCA is
exactly 1: a number the test knows without computing it.
"""

import csv
import shutil

import keras
import numpy as np
import pytest

from medtransfer.cli import main
from medtransfer.config import RunConfig
from medtransfer.errors import MedtransferError
from medtransfer.inspect.similarity import RANDOM, RANDOM_IMAGENET, experiment_similarity
from medtransfer.models.classifier import get_backbone
from medtransfer.models.init import build_model
from medtransfer.training.run import run_experiment


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, digits_data_dir):
    root = tmp_path_factory.mktemp("transfusion")
    weights = root / "mobilenet_backbone.weights.h5"
    keras.utils.set_random_seed(0)
    get_backbone(build_model("mobilenet", 2, 32, "glorot")).save_weights(weights)
    common = dict(dataset="digits", net="mobilenet", image_size=32, batch_size=10,
                  epochs="0+1", train_size=20, classes=("0", "1"), deterministic=True,
                  logdir=str(root), experiment="transfusion", data_dir=str(digits_data_dir))
    ids = {}
    for name, options in (("glorot0", dict(init="glorot", seed=0)),
                          ("glorot1", dict(init="glorot", seed=1)),
                          ("imagenet", dict(init="imagenet", seed=0,
                                            weights_file=str(weights)))):
        ids[name] = run_experiment(RunConfig(**common, **options)).run_dir.name
    return root / "transfusion", ids


@pytest.mark.slow  # the fixture trains three mobilenet runs
def test_the_figure_compares_random_inits_with_each_other_and_with_imagenet(experiment,
                                                                           tmp_path, capsys):
    folder, ids = experiment
    code = main(["similarity", "--experiment", str(folder), "--out", str(tmp_path),
                 "--images", "40"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert (tmp_path / "transfusion_similarity.png").stat().st_size > 10_000
    with (tmp_path / "transfusion_similarity.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    # The top two of mobilenet's 13 blocks, for each of the three pairs.
    assert [(row["comparison"], row["run_id"], row["against"], row["block"], row["layer"])
            for row in rows] == [
        (comparison, ids[a], ids[b], str(block), f"conv_pw_{block}_relu")
        for comparison, a, b in ((RANDOM, "glorot0", "glorot1"),
                                 (RANDOM_IMAGENET, "glorot0", "imagenet"),
                                 (RANDOM_IMAGENET, "glorot1", "imagenet"))
        for block in (12, 13)]
    similarity = [float(row["similarity"]) for row in rows]
    # glorot seed 0 and the imagenet run started from the same weights and trained alike.
    assert similarity[2:4] == pytest.approx([1.0, 1.0], abs=1e-5)
    assert all(0.0 <= value <= 1.0 + 1e-9 for value in similarity)

    # The printed values are the means of the top two blocks: over the one random pair,
    # and over both random-vs-imagenet pairs. 1x1 feature maps at 32 px give one data
    # point per image against 1024 channels: those blocks read high, and it is said.
    random, imagenet = np.mean(similarity[:2]), np.mean(similarity[2:])
    assert f"mobilenet     digits        {random:>18.3f}{imagenet:>20.3f}" in captured.out
    assert "fewer than 10 data points per dimension in the top blocks of mobilenet" in \
        captured.err


@pytest.mark.slow
def test_an_experiment_without_an_imagenet_run_says_what_each_net_has(experiment, tmp_path):
    folder, ids = experiment
    for name in ("glorot0", "glorot1"):
        shutil.copytree(folder / ids[name], tmp_path / ids[name])
    with pytest.raises(MedtransferError, match="mobilenet on digits: 2 glorot and 0 imagenet"):
        experiment_similarity(tmp_path)


def test_runs_and_an_experiment_are_not_given_together(tmp_path, capsys):
    assert main(["similarity", "RUN", "--experiment", str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["similarity"]) == 2
    assert "needs run directories (RUN_DIR ...) or --experiment" in capsys.readouterr().err
