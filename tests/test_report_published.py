"""``published: values:`` printed beside the same metric of our runs, like with like."""

import pytest
from fabricated_runs import make_run

from medtransfer.errors import MedtransferError
from medtransfer.study.grid import check_published
from medtransfer.study.report import build_report, load_study

SWEEP = """experiment: bench
base: {dataset: cats_vs_dogs}
grid: {net: [small_cnn, cbr_tiny], init: [glorot]}
published:
  source: "A benchmark (2023)"
  values:
    - {dataset: cats_vs_dogs, net: small_cnn, metric: test_auc_macro, value: 0.944, label: AUC}
    - {dataset: cats_vs_dogs, net: small_cnn, metric: test_accuracy, value: 0.854, label: ACC}
    - {dataset: cats_vs_dogs, net: cbr_tiny, metric: test_auc_macro, value: 0.9}
"""


@pytest.fixture()
def bench(tmp_path):
    experiment = tmp_path / "bench"
    experiment.mkdir()
    # small_cnn: two seeds, positive-class AUC 0.90 and 0.94 (mean 0.92, sd 0.0283),
    # accuracy 0.5 each (the fabricated runs' value). cbr_tiny: planned, never run.
    for seed, macro in ((0, 0.90), (1, 0.94)):
        make_run(experiment, dataset="cats_vs_dogs", net="small_cnn", seed=seed,
                 val_aucs=[0.9], test_auc=0.9, metrics={"test_auc_macro": macro})
    (experiment / "sweep.yaml").write_text(SWEEP)
    return experiment


def test_published_values_stand_beside_our_mean(bench, tmp_path):
    table = load_study(bench).published_values_table()
    assert table.splitlines()[2:] == [
        "| cats_vs_dogs | small_cnn · glorot | AUC (test_auc_macro) | 0.944 | "
        "0.920 ± 0.028 (n=2) | -0.024 |",
        "| cats_vs_dogs | small_cnn · glorot | ACC (test_accuracy) | 0.854 | "
        "0.500 ± 0.000 (n=2) | -0.354 |",
        "| cats_vs_dogs | cbr_tiny · glorot | test_auc_macro | 0.900 | — | — |",
    ]
    summary = build_report(bench, tmp_path / "out").summary.read_text()
    assert "Published (A benchmark (2023)) beside ours:" in summary
    assert "| 0.944 | 0.920 ± 0.028 (n=2) | -0.024 |" in summary


@pytest.mark.parametrize(("published", "complaint"), [
    ({"values": [{"dataset": "d", "net": "n", "metric": "m"}]}, "'value' is missing"),
    ({"values": [{"dataset": "d", "net": "n", "metric": "m", "value": "94%"}]},
     "value must be a number"),
    ({"values": [{"dataset": "d", "net": "n", "metric": "m", "value": 1, "nett": "x"}]},
     "Did you mean 'net'"),
    ({"values": {"dataset": "d"}}, "values must be a list"),
])
def test_a_malformed_published_value_is_refused(published, complaint):
    with pytest.raises(MedtransferError, match=complaint):
        check_published(published, "bench.yaml")
