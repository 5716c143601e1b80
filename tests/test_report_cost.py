"""The report's cost: per run its wall time and images/s per phase, per experiment the
device-hours, beside the last estimate."""

import csv
import io
import json

import pytest
from fabricated_runs import make_run

from medtransfer.study.costs import cost_section
from medtransfer.study.estimate import CACHE
from medtransfer.study.report import load_study
from medtransfer.training.rundir import scan_experiment


@pytest.fixture
def experiment(tmp_path):
    experiment = tmp_path / "logs" / "cost"
    experiment.mkdir(parents=True)
    # 1 h on 2 GPUs and 30 min on one: 2.5 device-hours; a run before wall_seconds existed
    # counts its epochs (900 s); a run in progress costs nothing yet.
    two = make_run(experiment, val_aucs=[0.7, 0.8], test_auc=0.8, metrics={
        "wall_seconds": 3600.0, "replicas": 2, "images_per_second_warmup": 1200.0,
        "images_per_second_finetune": 400.0})
    one = make_run(experiment, net="mobilenet", val_aucs=[0.7, 0.8], test_auc=0.8, metrics={
        "wall_seconds": 1800.0, "replicas": 1, "images_per_second_warmup": None,
        "images_per_second_finetune": 250.5})
    make_run(experiment, net="densenet121", val_aucs=[0.7], test_auc=0.8,
             metrics={"epoch_seconds": 900.0})
    make_run(experiment, net="resnet50_v2", val_aucs=[0.7], status=None)
    (experiment.parent / CACHE).write_text(json.dumps({"calibrations": {}, "runs": {"cost": {
        two.path.name: {"seconds": 3000.0}, one.path.name: {"seconds": 2000.0}}}}))
    return experiment, two.path.name, one.path.name


def test_the_cost_section_by_hand(experiment):
    experiment, two, one = experiment
    text = "\n".join(cost_section(scan_experiment(experiment), {two: 3000.0, one: 2000.0}))
    assert f"| `{two}` | 1:00:00 | 1,200.0 | 400.0 | 2.000 | 0:50:00 |" in text
    assert f"| `{one}` | 0:30:00 | – | 250.5 | 0.500 | 0:33:20 |" in text
    assert "| 0:15:00 | – | – | 0.250 | – |" in text
    # 2 + 0.5 + 0.25 measured; estimated 3000 s x 2 devices + 2000 s = 8000 s = 2.222 h
    assert "Total: 2.750 device-hours over 3 complete runs (estimated 2.222)." in text
    assert "resnet50_v2" not in text


def test_results_csv_and_summary_carry_the_cost(experiment):
    experiment, two, one = experiment
    study = load_study(experiment)
    rows = {row["run_dir"].rsplit("/", 1)[-1]: row
            for row in csv.DictReader(io.StringIO(study.results_csv()))}
    assert float(rows[two]["device_hours"]) == pytest.approx(2.0)
    assert float(rows[two]["estimated_seconds"]) == 3000.0
    assert float(rows[one]["images_per_second_finetune"]) == 250.5
    assert rows[one]["wall_seconds"] == "1800.0"
    summary, _ = study.summary()
    assert "## Cost" in summary and "2.750 device-hours" in summary
