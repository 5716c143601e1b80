"""A multi-label run end to end on the bundled digits_pairs (the real CLI), and the task
options (--findings, --any-finding) as a run resolves them."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tensorboard_events import scalar_steps, tags

from medtransfer.config import RunConfig
from medtransfer.errors import MedtransferError
from medtransfer.training.metrics import evaluate_multi_label
from medtransfer.training.rundir import MULTI_LABEL_HISTORY_COLUMNS, RunDirectory

FINDINGS = [str(digit) for digit in range(10)]
RUN_ID = "digits_pairs-small_cnn-glorot-f0.00-s0-e0+2-bs64-px16"


@pytest.fixture(scope="module")
def pairs_data_dir(tmp_path_factory):
    from medtransfer.data.prepared import load_prepared

    root = tmp_path_factory.mktemp("pairs_data")
    load_prepared("digits_pairs", root)
    return root


@pytest.fixture(scope="module")
def pairs_run(tmp_path_factory, pairs_data_dir):
    root = tmp_path_factory.mktemp("pairs_run")
    result = subprocess.run(
        [sys.executable, "-m", "medtransfer", "run", "--dataset", "digits_pairs",
         "--epochs", "0+2", "--image-size", "16", "--batch-size", "64", "--experiment",
         "pairs", "--logdir", str(root / "logs"), "--data-dir", str(pairs_data_dir)],
        cwd=root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return root / "logs" / "pairs" / RUN_ID, result


@pytest.mark.slow
def test_a_multi_label_run_learns_and_records_per_finding_metrics(pairs_run, pairs_data_dir):
    run_dir, result = pairs_run
    assert "test AUC (mean over findings)" in result.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "complete"
    assert (metrics["task"], metrics["primary_metric"]) == ("multi_label", "auc_mean")
    assert metrics["test_auc_mean"] > 0.9  # chance is 0.5
    assert list(metrics["test_auc_per_finding"]) == FINDINGS
    assert metrics["num_classes"] == 10

    # The test metrics are the exact scikit-learn numbers of predictions_test.csv, whose
    # labels are the prepared test split's.
    table = pd.read_csv(run_dir / "predictions_test.csv", dtype=str, keep_default_na=False)
    assert list(table.columns) == ["id", "label", "masked", *(f"prob_{f}" for f in FINDINGS)]
    split = pd.read_csv(pairs_data_dir / "digits_pairs" / "split.csv", dtype=str,
                        keep_default_na=False).set_index("id")
    assert (table["label"].to_numpy() == split.loc[table["id"], "label"].to_numpy()).all()
    predictions = RunDirectory(run_dir).read_predictions()
    assert predictions.multi_label and predictions.labels.shape == (len(table), 10)
    recomputed = evaluate_multi_label(predictions.labels, predictions.probabilities, FINDINGS)
    assert recomputed["auc_mean"] == pytest.approx(metrics["test_auc_mean"], abs=1e-6)
    assert recomputed["auc_micro"] == pytest.approx(metrics["test_auc_micro"], abs=1e-6)

    # The best epoch is the one of the best validation mean AUC, the curve in history.csv.
    with (run_dir / "history.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert tuple(rows[0]) == MULTI_LABEL_HISTORY_COLUMNS
    curve = [float(row["val_auc_mean"]) for row in rows]
    assert metrics["best_epoch"] == 1 + int(np.argmax(curve))
    assert metrics["val_auc_mean_best"] == pytest.approx(max(curve))
    # TensorBoard: the same curve, and the results the HParams tab shows.
    assert [value for _, value in scalar_steps(run_dir / "validation", "val_auc_mean")] == \
        pytest.approx(curve, rel=1e-6)
    assert {"best/val_auc_mean", "test/auc_mean", "test/auc_micro"} <= tags(run_dir)


def test_findings_and_any_finding_make_the_task_and_name_the_run(pairs_data_dir):
    from medtransfer.training.resolve import resolve_config
    from medtransfer.training.run import run_class_names

    base = RunConfig(dataset="digits_pairs", data_dir=str(pairs_data_dir), epochs="0+2")
    everything, dataset = resolve_config(base)
    assert everything.findings == tuple(FINDINGS) and everything.multi_label
    assert everything.num_classes == 10
    assert everything.run_id == "digits_pairs-small_cnn-glorot-f0.00-s0-e0+2"
    # The default stated explicitly is the same run.
    assert resolve_config(base.replace(findings=tuple(FINDINGS)))[0].run_id == \
        everything.run_id

    two, _ = resolve_config(base.replace(findings=("3", "5")))
    assert (two.num_classes, two.run_id) == (2, everything.run_id + "-findings=3,5")
    assert run_class_names(two, dataset) == ["3", "5"]
    one, _ = resolve_config(base.replace(findings=("7",)))
    assert one.num_classes == 1 and one.multi_label  # one sigmoid: a binary task

    healthy, _ = resolve_config(base.replace(any_finding=True))
    assert not healthy.multi_label and healthy.num_classes == 2
    assert run_class_names(healthy, dataset) == ["healthy", "finding"]
    assert healthy.run_id == everything.run_id + "-any_finding=true"


def test_bad_task_options_fail_with_what_is_valid(pairs_data_dir, digits_data_dir):
    from medtransfer.training.resolve import resolve_config

    pairs = RunConfig(dataset="digits_pairs", data_dir=str(pairs_data_dir))
    with pytest.raises(MedtransferError, match="finding '33'. Did you mean '3'"):
        resolve_config(pairs.replace(findings=("3", "33")))
    with pytest.raises(MedtransferError, match="--classes keeps classes of a single-label"):
        resolve_config(pairs.replace(classes=("3", "5")))
    digits = RunConfig(dataset="digits", data_dir=str(digits_data_dir))
    for option in ({"findings": ("3",)}, {"any_finding": True}):
        with pytest.raises(MedtransferError, match="needs a multi-label dataset"):
            resolve_config(digits.replace(**option))


@pytest.mark.slow
def test_predict_and_export_give_a_probability_per_finding(pairs_run, tmp_path):
    import cv2
    import keras
    import tensorflow as tf

    from medtransfer.data.shards import decode_image, parse_example
    from medtransfer.serve.export import export_run
    from medtransfer.serve.predict import predict_images
    from medtransfer.training.rundir import open_run

    run_dir, _ = pairs_run
    dataset = open_run(run_dir, "test").dataset()
    folder = tmp_path / "images"
    folder.mkdir()
    images = {}
    for record in tf.data.TFRecordDataset([str(p) for p in dataset.shard_paths("test")]).take(6):
        example = parse_example(record, len(FINDINGS))
        image_id = example["id"].numpy().decode()
        images[image_id] = decode_image(example["image"]).numpy()
        cv2.imwrite(str(folder / f"{image_id}.png"), images[image_id][:, :, ::-1])
    expected = pd.read_csv(run_dir / "predictions_test.csv", dtype={"id": str}).set_index("id")
    columns = [f"prob_{finding}" for finding in FINDINGS]

    predict_images(run_dir, [folder], out=tmp_path / "predictions.csv")
    predicted = pd.read_csv(tmp_path / "predictions.csv", keep_default_na=False)
    assert list(predicted.columns) == ["path", "predicted", *columns]
    for _, row in predicted.iterrows():
        image_id = Path(row["path"]).stem
        probabilities = row[columns].to_numpy(dtype=float)
        assert probabilities == pytest.approx(expected.loc[image_id, columns].to_numpy(float),
                                              abs=1e-5)
        # "predicted": the findings at probability 0.5 or more, |-joined as in split.csv.
        assert row["predicted"] == "|".join(
            finding for finding, p in zip(FINDINGS, probabilities, strict=True) if p >= 0.5)

    result = export_run(run_dir, out=tmp_path / "model.keras")
    model = keras.saving.load_model(result.path)
    for image_id, pixels in images.items():
        outputs = model(pixels[None])
        probabilities = np.asarray(outputs["probabilities"])[0]
        assert probabilities == pytest.approx(expected.loc[image_id, columns].to_numpy(float),
                                              abs=1e-5)
        assert (np.asarray(outputs["present"])[0] == (probabilities >= 0.5)).all()


@pytest.mark.slow
def test_inspect_commands_read_a_multi_label_run(pairs_run, tmp_path):
    from medtransfer.inspect.gradcam import run_gradcam
    from medtransfer.inspect.similarity import run_similarity
    from medtransfer.inspect.tsne import run_tsne

    run_dir, _ = pairs_run
    expected = pd.read_csv(run_dir / "predictions_test.csv", dtype=str,
                           keep_default_na=False).set_index("id")

    # t-SNE coloured by finding 3: each image is "3" when 3 is among its findings.
    tsne = run_tsne([run_dir], tmp_path / "tsne", max_images=40, finding="3")
    table = pd.read_csv(tsne.tables["tsne"], dtype=str)
    assert len(table) == 40
    for image_id, label in zip(table["id"], table["label"], strict=True):
        assert label == ("3" if "3" in expected.loc[image_id, "label"].split("|") else "no 3")
    with pytest.raises(MedtransferError, match="finding '33'"):
        run_tsne([run_dir], tmp_path / "tsne", max_images=40, finding="33")

    # Grad-CAM of finding 7: its probability is the run's sigmoid output for 7.
    cam = run_gradcam(run_dir, tmp_path / "cam", images=4, class_name="7")
    assert (cam.heatmaps.classes == FINDINGS.index("7")).all()
    for image_id, probabilities in zip(cam.ids, cam.heatmaps.probabilities, strict=True):
        assert probabilities[7] == pytest.approx(float(expected.loc[image_id, "prob_7"]),
                                                 abs=1e-5)

    similarity = run_similarity([run_dir], out=tmp_path / "svcca", max_images=60)
    assert similarity.rows and all(0 <= row.similarity <= 1 + 1e-9 for row in similarity.rows)


@pytest.mark.slow
def test_lr_find_on_a_multi_label_task_uses_its_loss(pairs_data_dir, tmp_path):
    from medtransfer.tune.lr_find import find_lr

    config = RunConfig(dataset="digits_pairs", data_dir=str(pairs_data_dir), image_size=16,
                       batch_size=64, logdir=str(tmp_path))
    result = find_lr(config, steps=10)
    # The masked binary cross-entropy of an untrained net is about ln 2 per finding (about
    # 1 here, its logits not all zero); a categorical cross-entropy of the two-digit
    # targets would start near 2 ln 10 = 4.6.
    assert 0.5 < result.losses[0] < np.log(10)


def test_the_pipeline_gives_each_task_its_targets(pairs_data_dir):
    from medtransfer.data.pipeline import make_dataset
    from medtransfer.data.prepared import load_prepared
    from medtransfer.training.task import run_task, task_frame, task_labels

    dataset = load_prepared("digits_pairs", pairs_data_dir)
    base = RunConfig(dataset="digits_pairs", data_dir=str(pairs_data_dir))
    for config in (base.replace(findings=("5", "3")), base.replace(any_finding=True,
                                                                  findings=("0", "1"))):
        task = run_task(config, dataset)
        frame = task_frame(task, dataset, "validation")
        stream = make_dataset(
            dataset.shard_paths("validation"), task.num_outputs, image_size=16,
            batch_size=50, training=False, include_ids=True, keep_labels=task.keep_labels,
            label_length=task.label_length, any_finding=task.any_finding,
            num_examples=len(frame))
        targets = np.concatenate([batch[1].numpy() for batch in stream])
        ids = [i.decode() for batch in stream for i in batch[2].numpy()]
        expected = task_labels(task, dataset, frame.set_index("id").loc[ids].reset_index())
        if task.any_finding:
            # healthy (0) or finding (1, a 0 or a 1 among the two digits), one-hot.
            assert (targets.argmax(axis=1) == expected).all() and targets.sum() == len(ids)
            assert set(expected) == {0, 1}
        else:
            # Columns 5 then 3 of the dataset's findings, in --findings order.
            assert (targets == expected).all() and targets.shape[1] == 2
            matrix = dataset.label_matrix(frame.set_index("id").loc[ids].reset_index())
            assert (targets == matrix[:, [5, 3]]).all()


@pytest.mark.slow
def test_report_compares_multi_label_runs_on_mean_auc(pairs_run, tmp_path):
    from medtransfer.study.report import build_report

    run_dir, _ = pairs_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    report = build_report(run_dir.parent, out=tmp_path)
    # The main table's cell is the run's test mean AUC with its interval.
    assert f"{metrics['test_auc_mean']:.4f} [" in report.main_text
    summary = report.summary.read_text()
    assert "## Per finding (multi-label runs)" in summary
    for finding, auc in metrics["test_auc_per_finding"].items():
        assert f"| {finding} | {auc:.4f} [" in summary
    results = pd.read_csv(report.results)
    low, high = results.loc[0, ["test_auc_mean_ci_low", "test_auc_mean_ci_high"]]
    assert low <= metrics["test_auc_mean"] <= high
    assert results.loc[0, "test_auc_3"] == pytest.approx(metrics["test_auc_per_finding"]["3"])


def test_balanced_class_weight_is_a_positive_weight_per_finding(pairs_data_dir):
    from medtransfer.training.resolve import resolve_config
    from medtransfer.training.run import training_class_weights, training_frame

    config, dataset = resolve_config(RunConfig(
        dataset="digits_pairs", data_dir=str(pairs_data_dir), findings=("3", "5"),
        class_weight="balanced"))
    frame = training_frame(config, dataset)
    weights, keras_weights = training_class_weights(config, dataset, frame)
    present = {finding: frame["label"].str.split("|").map(lambda s, f=finding: f in s).sum()
               for finding in ("3", "5")}
    assert keras_weights is None  # the loss applies them, not Keras' class_weight
    assert weights == pytest.approx({finding: (len(frame) - count) / count
                                     for finding, count in present.items()})


@pytest.mark.slow
def test_a_multi_label_head_does_not_transfer_to_a_single_label_task(pairs_run):
    from medtransfer.training.rundir import choose_head

    run_dir, _ = pairs_run
    # digits' classes are the names of digits_pairs' findings, "0".."9", in that order.
    head = choose_head(RunConfig(dataset="digits", init=str(run_dir)), FINDINGS)
    assert not head.transferred and "multi-label" in head.reason
    same = RunConfig(dataset="digits_pairs", init=str(run_dir), findings=tuple(FINDINGS))
    assert choose_head(same, FINDINGS).transferred


def test_chexpert_runs_default_to_its_five_competition_findings(tmp_path):
    from medtransfer.data.prepared import default_findings
    from medtransfer.data.sources import CHEXPERT_FINDINGS
    from medtransfer.fileio import write_json_atomic

    folder = tmp_path / "chest"
    folder.mkdir()
    write_json_atomic(folder / "manifest.json", {
        "layout": "chexpert", "task": "multi_label", "class_names": list(CHEXPERT_FINDINGS)})
    assert default_findings("chest", tmp_path) == (
        "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
    # The default, stated or not, is one run; another choice names its findings by hash
    # ("Pleural Effusion" is not filename-safe).
    config = RunConfig(dataset="chest", data_dir=str(tmp_path))
    five = config.replace(findings=default_findings("chest", tmp_path))
    assert five.run_id == config.run_id == "chest-small_cnn-glorot-f0.00-s0"
    edema = config.replace(findings=("Edema", "Pleural Effusion"))
    assert edema.run_id.startswith("chest-small_cnn-glorot-f0.00-s0-findings~")
