"""Issue #12 points 1-2: predict on new image files, and exports that need only Keras.

Two tiny datasets in their real download layouts, each prepared and trained through the
library, then used through the real command line:

- retina (fundus photographs of several sizes, cropped and downsized by ``prepare``),
  small_cnn with ``--scaling unit``;
- proteins (four single-channel stain PNGs per image, stacked by ``prepare``).

``--scaling native`` (a net's own ``preprocess_input``) in an export is checked against
the input pipeline with a small untrained classifier, as training a keras.applications
net costs half a minute of graph building.

``predict`` on the original files of the test split must reproduce the run's own
predictions_test.csv; so must the exports, loaded in a Python process that never imports
medtransfer, on the prepared test images.
"""

import csv
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from layouts import write_proteins, write_retina

from medtransfer.cli import main
from medtransfer.config import RunConfig
from medtransfer.data.prepare import prepare_dataset
from medtransfer.data.shards import decode_image, parse_example
from medtransfer.training.run import run_experiment
from medtransfer.training.rundir import open_run

TOLERANCE = 1e-5


def _train(root, layout, write, net, scaling, image_size, **prepare_options):
    written = write(root / "source")
    datasets = root / "datasets"
    prepare_dataset(layout, written.source, datasets / layout, workers=1, progress=False,
                    **prepare_options)
    config = RunConfig(dataset=layout, net=net, scaling=scaling, epochs="0+2", lr=3e-3,
                       image_size=image_size, batch_size=8, strategy="default",
                       logdir=str(root / "logs"), data_dir=str(datasets))
    return written, run_experiment(config).run_dir


@pytest.fixture(scope="module")
def retina(tmp_path_factory):
    root = tmp_path_factory.mktemp("retina")
    return _train(root, "retina", write_retina, "small_cnn", "unit", 16, max_size=32)


@pytest.fixture(scope="module")
def proteins(tmp_path_factory):
    root = tmp_path_factory.mktemp("proteins")
    return _train(root, "proteins", write_proteins, "small_cnn", "unit", 16,
                  min_class_count=10)


def _read_csv(path):
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def _probabilities(row):
    return np.array([float(value) for key, value in row.items() if key.startswith("prob_")])


def _class_names(run_dir):
    return open_run(run_dir, "test").dataset().class_names


def _saved_predictions(run_dir):
    return {row["id"]: _probabilities(row) for row in _read_csv(run_dir / "predictions_test.csv")}


def _assert_discriminates(predictions):
    """The model's outputs differ between images by far more than the tolerance, so an
    agreement within it cannot come from a model that ignores its input."""
    table = np.stack(list(predictions.values()))
    assert np.ptp(table, axis=0).max() > 100 * TOLERANCE


def test_predict_on_original_retina_files_reproduces_the_test_predictions(
    retina, tmp_path, capsys
):
    written, run_dir = retina
    saved = _saved_predictions(run_dir)
    _assert_discriminates(saved)
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not an image")
    out = tmp_path / "out" / "predictions.csv"
    # The whole folder of originals (a folder input), plus an unreadable file.
    code = main(["predict", str(run_dir), str(written.source / "train_images"),
                 str(not_an_image), "--out", str(out), "--batch-size", "3"])
    assert code == 0, capsys.readouterr().err
    assert f"rejected {not_an_image}: not an image" in capsys.readouterr().err

    rows = {row["path"]: row for row in _read_csv(out)}
    assert len(rows) == len(written.files)
    columns = [f"prob_{name}" for name in written.classes]
    assert list(next(iter(rows.values()))) == ["path", "predicted", *columns]
    for image_id, expected in saved.items():
        row = rows[str(written.files[image_id])]
        np.testing.assert_allclose(_probabilities(row), expected, atol=TOLERANCE)
        assert row["predicted"] == written.classes[int(np.argmax(_probabilities(row)))]
    rejected = _read_csv(tmp_path / "out" / "predictions.rejected.csv")
    assert rejected == [{"path": str(not_an_image), "reason": "not an image"}]


def test_predict_csv_input_lists_what_it_cannot_read(retina, tmp_path, capsys):
    written, run_dir = retina
    test_ids = list(_saved_predictions(run_dir))
    listing = tmp_path / "images.csv"
    relative = [os.path.relpath(written.files[i], tmp_path) for i in test_ids[:2]]
    (tmp_path / "empty.png").write_bytes(b"")
    listing.write_text("path,comment\n" + "".join(f"{p},x\n" for p in relative)
                       + "empty.png,y\nmissing.png,z\n")
    out = tmp_path / "p.csv"
    assert main(["predict", str(run_dir), str(listing), "--out", str(out)]) == 0
    assert [row["path"] for row in _read_csv(out)] == [str(tmp_path / p) for p in relative]
    reasons = {row["path"]: row["reason"] for row in _read_csv(tmp_path / "p.rejected.csv")}
    assert reasons == {str(tmp_path / "empty.png"): "zero-byte file",
                       str(tmp_path / "missing.png"): "missing file"}

    # Nothing readable: exit code 2, the reasons, no traceback.
    capsys.readouterr()
    assert main(["predict", str(run_dir), str(tmp_path / "empty.png"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "none of the 1 input image(s) could be read" in err and "zero-byte file" in err
    assert "Traceback" not in err
    # A CSV without a path column is a mistake in the whole input: said at once.
    (tmp_path / "bad.csv").write_text("file\na.png\n")
    assert main(["predict", str(run_dir), str(tmp_path / "bad.csv")]) == 2
    assert "has no column 'path' (its columns: file)" in capsys.readouterr().err


def test_predict_stacks_protein_stain_files(proteins, tmp_path, capsys):
    written, run_dir = proteins
    saved = _saved_predictions(run_dir)
    _assert_discriminates(saved)
    out = tmp_path / "predictions.csv"
    # A folder of stain files <Id>_{red,green,blue,yellow}.png: one image per Id.
    code = main(["predict", str(run_dir), str(written.source / "train"), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    rows = {row["path"]: _probabilities(row) for row in _read_csv(out)}
    assert len(rows) == len(list((written.source / "train").glob("*_red.png")))
    for image_id, expected in saved.items():
        np.testing.assert_allclose(rows[str(written.source / "train" / image_id)], expected,
                                   atol=TOLERANCE)


CHILD = """
import json, sys
import keras, numpy as np, tensorflow as tf
images = np.load(sys.argv[1])
results = {}
for name, path in json.loads(sys.argv[2]).items():
    if path.endswith(".keras"):
        model = keras.saving.load_model(path)
        outputs = [{k: np.asarray(v) for k, v in model(images[key][None]).items()}
                   for key in images.files]
        vocabulary = [str(v) for v in model.get_layer("class_names").get_vocabulary()]
    else:
        serve = tf.saved_model.load(path).signatures["serving_default"]
        assert serve.structured_input_signature[1]["image"].dtype == tf.uint8
        outputs = [{k: v.numpy() for k, v in serve(image=tf.constant(images[key][None])).items()}
                   for key in images.files]
        vocabulary = None
    results[name] = {
        "ids": list(images.files),
        "probabilities": [o["probabilities"][0].tolist() for o in outputs],
        "class_name": [o["class_name"][0].decode() for o in outputs],
        "vocabulary": vocabulary,
    }
results["medtransfer_imported"] = any(m.split(".")[0] == "medtransfer" for m in sys.modules)
print(json.dumps(results))
"""


def _prepared_test_images(run_dir, path):
    """The test split's stored images (uint8, each its own size), by id, as an npz."""
    dataset = open_run(run_dir, "test").dataset()
    arrays = {}
    for record in tf.data.TFRecordDataset([str(p) for p in dataset.shard_paths("test")]):
        example = parse_example(record)
        arrays[example["id"].numpy().decode()] = decode_image(example["image"]).numpy()
    np.savez(path, **arrays)


@pytest.mark.slow
def test_exports_load_without_medtransfer_and_predict_like_the_run(retina, tmp_path, capsys):
    run_dir = retina[1]
    class_names = _class_names(run_dir)
    exports = {"keras": tmp_path / "model.keras", "saved_model": tmp_path / "served"}
    for export_format, out in exports.items():
        code = main(["export", str(run_dir), "--format", export_format, "--out", str(out)])
        assert code == 0, capsys.readouterr().err
    for info in (tmp_path / "model.json", tmp_path / "served.json"):
        description = json.loads(info.read_text())
        assert description["class_names"] == class_names
        # The resize the model does (pipeline.resize_image), not "bilinear" (issue #25.4).
        assert description["inside"].startswith(
            "resize to 16x16 (area interpolation when shrinking, bilinear when enlarging, "
            "rounded to uint8)")
    _prepared_test_images(run_dir, tmp_path / "test.npz")

    # A clean environment: nothing points at this worktree's medtransfer.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(tmp_path / "test.npz"),
         json.dumps({key: str(path) for key, path in exports.items()})],
        capture_output=True, text=True, cwd=tmp_path, env=env, check=False,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    results = json.loads(child.stdout.strip().splitlines()[-1])
    assert results.pop("medtransfer_imported") is False

    saved = _saved_predictions(run_dir)
    for result in results.values():
        assert sorted(result["ids"]) == sorted(saved)
        for image_id, probabilities, class_name in zip(
            result["ids"], result["probabilities"], result["class_name"], strict=True
        ):
            np.testing.assert_allclose(probabilities, saved[image_id], atol=TOLERANCE)
            assert class_name == class_names[int(np.argmax(probabilities))]
    assert results["keras"]["vocabulary"] == class_names


@pytest.mark.parametrize("net", ["densenet121", "mobilenet"])
def test_export_applies_native_scaling_as_the_pipeline_does(net, digits_data_dir):
    """densenet121's preprocess_input is per-channel (torch mode), mobilenet's is [-1, 1]
    (tf mode); the exported model must feed the classifier what the pipeline fed it."""
    import keras

    from medtransfer.data.pipeline import make_dataset
    from medtransfer.data.prepared import load_prepared
    from medtransfer.models.registry import get_net
    from medtransfer.serve.export import build_serving_model

    preprocess = get_net(net).preprocess_input
    keras.utils.set_random_seed(0)
    # A classifier that is linear in its input pixels, so any scaling error shows.
    pixels = keras.Input((16, 16, 3))
    classifier = keras.Model(pixels, keras.layers.Dense(3, activation="softmax")(
        keras.layers.Flatten()(pixels)))
    dataset = load_prepared("digits", digits_data_dir)
    batches = make_dataset(dataset.shard_paths("test"), dataset.num_classes, image_size=16,
                           batch_size=64, training=False, preprocess=preprocess,
                           cache_limit_bytes=0)
    expected = np.concatenate([classifier.predict(x, verbose=0) for x, _ in batches.take(1)])
    served = build_serving_model(classifier, 16, preprocess, ["a", "b", "c"])
    stored = [decode_image(parse_example(r)["image"])
              for r in tf.data.TFRecordDataset([str(p) for p in dataset.shard_paths("test")])]
    found = served.predict(tf.stack(stored[:64]), verbose=0)
    assert np.ptp(expected, axis=0).max() > 100 * TOLERANCE
    np.testing.assert_allclose(found["probabilities"], expected, atol=TOLERANCE)
