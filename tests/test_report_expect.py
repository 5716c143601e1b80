"""A sweep file's structured ``expect``: checked by the sweep's reader, evaluated by report."""

import pytest
from fabricated_runs import make_run

from medtransfer.errors import MedtransferError
from medtransfer.study.grid import check_expect, expand
from medtransfer.study.report import build_report, load_study

GRID = {"base": {"dataset": "digits", "net": "small_cnn"}, "grid": {"init": ["glorot"]}}
IMPROVEMENT = {"improvement": "run:source", "over": "glorot", "sign": "positive"}
METRIC = {"metric": "test_auc_micro", "init": "glorot", "range": [0.5, 0.9]}


@pytest.mark.parametrize("expect, words", [
    ({"txt": "x"}, "Did you mean 'text'?"),
    ({"checks": {"metric": "x"}}, "checks must be a list"),
    ({"checks": [{**IMPROVEMENT, "sing": "positive"}]}, "Did you mean 'sign'?"),
    ({"checks": [{**IMPROVEMENT, "sign": "postive"}]}, "Did you mean 'positive'?"),
    ({"checks": [{**METRIC, "improvement": "glorot"}]}, "either 'improvement' or 'metric'"),
    ({"checks": [{"improvement": "glorot", "sign": "positive"}]}, "'over' is missing"),
    ({"checks": [{**METRIC, "range": [0.9, 0.5]}]}, "two numbers with LOW <= HIGH"),
    ({"checks": [{**METRIC, "range": 0.9}]}, "range must be [LOW, HIGH]"),
    ({"checks": [{**METRIC, "freeze": 2}]}, "freeze must be a number in [0, 1]"),
    ({"checks": [{**METRIC, "where": {"train_sise": 10}}]}, "Did you mean 'train_size'?"),
    ({"checks": [{**METRIC, "where": {"logdir": "x"}}]}, "Unknown run option 'logdir'"),
    ({"checks": [{**IMPROVEMENT, "excludes_zero": "yes"}]}, "excludes_zero must be true"),
    ({"checks": [{**METRIC, "init": 3}]}, "init must be a name"),
])
def test_a_bad_expect_names_the_problem(expect, words):
    with pytest.raises(MedtransferError) as error:
        expand({**GRID, "expect": expect}, source="s.yaml")
    assert words in str(error.value) and "s.yaml, expect" in str(error.value)


def test_good_expects_pass():
    check_expect("a sentence")
    check_expect({"text": "t", "checks": [
        {**IMPROVEMENT, "freeze": 0.5, "where": {"train_size": 10}, "excludes_zero": True},
        {**METRIC, "freeze": 1, "where": {"classes": [5, 6]}}]})
    assert len(expand({**GRID, "expect": {"text": "t"}}, source="s.yaml")) == 1


SWEEP = """experiment: demo
base: {dataset: digits, net: small_cnn}
grid:
  - {name: source, classes: [[0, 1, 2, 3, 4]]}
  - {classes: [[5, 6, 7, 8, 9]], train_size: [10], init: [glorot, "run:source"],
     seed: [0, 1]}
  - {classes: [[5, 6, 7, 8, 9]], train_size: [10], init: ["run:source"], freeze: [1.0],
     seed: [0, 1]}
expect:
  text: Transfer helps with 10 images.
  checks:
    - {improvement: "run:source", over: glorot, where: {train_size: 10}, sign: positive}
    - {improvement: "run:source", over: glorot, sign: negative}
    - {improvement: "run:source", over: glorot, sign: positive, excludes_zero: true}
    - {metric: test_auc_micro, init: "run:source", freeze: 1.0, range: [0.5, 0.85]}
    - {metric: test_auc_micro, init: "run:source", freeze: 1.0, range: [0.85, 1.0]}
    - {improvement: "run:source", over: glorot, where: {train_size: 50}, sign: positive}
"""


def four_images(p_b):
    """Labels a, a, b, b with these probabilities of b."""
    return ["a", "b"], [(f"img{index}", label, [round(1 - p, 6), p])
                        for index, (label, p) in enumerate(zip("aabb", p_b, strict=True))]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Transfer perfect on seeds 0 and 1 (AUC 1); glorot perfect on seed 0 and 0.75 on
    seed 1 (true-class scores 0.9, 0.4, 0.4, 0.9 against 0.1, 0.6, 0.6, 0.1: 12 of 16
    pairs). Mean difference +0.125; a quarter of the resamples draw seed 0 twice (a
    difference of 0), so the interval starts at 0 and does not exclude it. Freeze 1:
    0.70 and 0.90, mean 0.80."""
    experiment = tmp_path_factory.mktemp("logs") / "demo"
    experiment.mkdir()
    source = make_run(experiment, dataset="digits", net="small_cnn",
                      classes=("0", "1", "2", "3", "4"), val_aucs=[0.9], test_auc=0.9)
    perfect = four_images([0.0, 0.0, 1.0, 1.0])
    target = dict(dataset="digits", net="small_cnn", classes=("5", "6", "7", "8", "9"),
                  train_size=10, val_aucs=[0.9])
    make_run(experiment, seed=0, test_auc=1.0, predictions=perfect, **target)
    make_run(experiment, seed=1, test_auc=0.75, predictions=four_images([0.1, 0.6, 0.4, 0.9]),
             **target)
    for seed, frozen in ((0, 0.7), (1, 0.9)):
        make_run(experiment, init=str(source.path), seed=seed, test_auc=1.0,
                 predictions=perfect, **target)
        make_run(experiment, init=str(source.path), seed=seed, freeze=1.0, test_auc=frozen,
                 **target)
    (experiment / "sweep.yaml").write_text(SWEEP)
    return experiment


def test_each_check_gets_its_verdict(demo):
    lines = load_study(demo).expectation()
    task = "digits (classes=5,6,7,8,9, train_size=10) · small_cnn"
    assert lines[:5] == ["", "Expected (sweep.yaml): Transfer helps with 10 images.", "",
                         "Checks of sweep.yaml's expect:", ""]
    verdicts = lines[5:]
    assert verdicts[0].startswith(
        "- transfer from source (freeze 0) over glorot (freeze 0), train_size=10: positive "
        f"difference: as expected ({task}: Δ AUC +0.1250 [+0.0000, ")
    assert verdicts[0].endswith("] over 2 seeds)")
    assert verdicts[1].startswith(
        "- transfer from source (freeze 0) over glorot (freeze 0): negative difference: "
        f"NOT as expected: {task}: Δ AUC +0.1250 [+0.0000, ")
    assert ("positive difference, interval excludes 0: NOT as expected: " in verdicts[2])
    assert verdicts[3] == (
        "- test_auc_micro of transfer from source (freeze 1) in [0.5, 0.85]: as expected "
        f"({task}: mean 0.8000 over 2 seeds)")
    assert verdicts[4] == (
        "- test_auc_micro of transfer from source (freeze 1) in [0.85, 1]: NOT as expected: "
        f"{task}: mean 0.8000 over 2 seeds")
    assert verdicts[5] == (
        "- transfer from source (freeze 0) over glorot (freeze 0), train_size=50: positive "
        "difference: not checked: no run matches transfer from source at freeze 0, "
        "train_size=50")


def test_verdicts_are_printed_and_in_the_summary(demo, tmp_path):
    report = build_report(demo, tmp_path)
    for text in (report.main_text, report.summary.read_text()):
        assert "Checks of sweep.yaml's expect:" in text
        assert text.count("NOT as expected") == 3


def test_a_plain_expect_is_not_checked(tmp_path):
    experiment = tmp_path / "plain"
    experiment.mkdir()
    make_run(experiment, dataset="digits", net="small_cnn", val_aucs=[0.9], test_auc=0.9)
    (experiment / "sweep.yaml").write_text("experiment: plain\nexpect: about 0.9\n")
    assert load_study(experiment).expectation() == ["", "Expected (not checked): about 0.9"]
