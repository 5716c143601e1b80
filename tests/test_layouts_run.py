"""Issue #3 point 2: every layout, written as downloaded, prepares and trains for 0+1 epochs.

Both steps go through the real command line (in-process, to keep TensorFlow's start-up
out of the loop), exactly as a user types them.
"""

import json

import pytest
from layouts import WRITERS

from medtransfer.cli import main


@pytest.mark.slow
@pytest.mark.parametrize("case", WRITERS)
def test_prepare_then_train_one_epoch(case, tmp_path, capsys):
    layout = case.split("-")[0]
    written = WRITERS[case](tmp_path / "source")
    datasets = tmp_path / "datasets"
    prepare = ["prepare", layout, "--source", str(written.source), "--out",
               str(datasets / case), "--workers", "1", "--no-progress"]
    if layout == "proteins":
        prepare += ["--min-class-count", "10"]
    assert main(prepare) == 0, capsys.readouterr().err
    manifest = json.loads((datasets / case / "manifest.json").read_text())

    code = main(["run", "--dataset", case, "--data-dir", str(datasets), "--net", "small_cnn",
                 "--image-size", "16", "--epochs", "0+1", "--batch-size", "16",
                 "--logdir", str(tmp_path / "logs"), "--strategy", "default"])
    assert code == 0, capsys.readouterr().err
    run_dir = tmp_path / "logs" / "default" / f"{case}-small_cnn-glorot-f0.00-s0-e0+1-bs16-px16"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "complete"
    assert metrics["num_classes"] == manifest["num_classes"]
    assert metrics["test_images"] == sum(manifest["counts"]["test"].values())
    assert metrics["train_images"] == sum(manifest["counts"]["train"].values())
    assert ("test_quadratic_kappa" in metrics) == (layout == "retina")
    assert 0.0 <= metrics["test_auc_micro"] <= 1.0
