"""The one reader of finished runs (``open_run``): what report, inspect and predict use."""

import csv

import numpy as np
import pytest

from medtransfer.config import RunConfig
from medtransfer.errors import MedtransferError
from medtransfer.training.run import run_experiment
from medtransfer.training.rundir import open_run


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, digits_data_dir):
    root = tmp_path_factory.mktemp("reader")
    config = RunConfig(dataset="digits", net="small_cnn", epochs="0+1", image_size=16,
                       batch_size=64, train_size=200, lr=1e-3, experiment="reader",
                       logdir=str(root), data_dir=str(digits_data_dir))
    return run_experiment(config).run_dir


def test_open_run_rebuilds_the_best_checkpoint(finished_run):
    run = open_run(finished_run, "test")
    assert run.config.net == "small_cnn" and run.metrics["status"] == "complete"
    model = run.model()
    probabilities, ids = [], []
    for images, _, batch_ids in run.split("test"):
        probabilities.append(model.predict(images, verbose=0))
        ids.extend(value.decode() for value in batch_ids.numpy())
    with (finished_run / "predictions_test.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert ids == [row["id"] for row in rows]
    saved = np.array([[float(v) for k, v in row.items() if k.startswith("prob_")]
                      for row in rows])
    np.testing.assert_allclose(np.concatenate(probabilities), saved, atol=1e-5)


def test_open_run_refuses_what_is_not_a_complete_run(tmp_path, finished_run):
    with pytest.raises(MedtransferError, match="not a run directory"):
        open_run(tmp_path, "tsne")
    (tmp_path / "config.yaml").write_text((finished_run / "config.yaml").read_text())
    with pytest.raises(MedtransferError, match="not complete.*no metrics.json"):
        open_run(tmp_path, "tsne")
    (tmp_path / "metrics.json").write_text('{"status": "diverged"}')
    with pytest.raises(MedtransferError, match="status is 'diverged'"):
        open_run(tmp_path, "tsne")
