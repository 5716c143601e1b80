"""A path init transfers the classifier head only for the same task (issue #20, point 1).

Real runs on digits: a source trained on classes 0-4, then targets that start from it. A
head trained on 0-4 maps features to *those* classes; loaded for 5-9 (as many classes,
another task) it starts the target far from a uniform guess (measured before the fix:
loss 5.93 where glorot starts at ln 5 = 1.609). A Keras-default new head on those trained
features is as far off (5.36), so a new head's output layer starts at zero.
"""

import json
import math

import keras
import numpy as np
import pytest
import yaml

from medtransfer.config import RunConfig
from medtransfer.models.classifier import OUTPUT_LAYER
from medtransfer.training.run import run_experiment
from medtransfer.training.rundir import choose_head, open_run

SOURCE_CLASSES = ("0", "1", "2", "3", "4")
OTHER_CLASSES = ("5", "6", "7", "8", "9")


class FirstBatch(keras.callbacks.Callback):
    """Records the first training batch's loss and the output layer's initial kernel."""

    def __init__(self):
        super().__init__()
        self.loss = None
        self.kernel = None

    def on_train_begin(self, logs=None):
        if self.kernel is None:
            self.kernel = keras.ops.convert_to_numpy(self.model.get_layer(OUTPUT_LAYER).kernel)

    def on_train_batch_end(self, batch, logs=None):
        if self.loss is None:
            self.loss = float(logs["loss"])


@pytest.fixture(scope="module")
def source(tmp_path_factory, digits_data_dir):
    """A small_cnn trained on digits 0-4 (all 0-4 training images, two epochs)."""
    logdir = tmp_path_factory.mktemp("logs")
    config = RunConfig(dataset="digits", net="small_cnn", classes=SOURCE_CLASSES,
                       epochs="0+2", image_size=16, batch_size=8, lr=5e-4,
                       experiment="head", logdir=str(logdir), data_dir=str(digits_data_dir))
    return run_experiment(config).run_dir


def _target(source, classes, digits_data_dir):
    recorder = FirstBatch()
    config = RunConfig(dataset="digits", net="small_cnn", classes=classes, init=str(source),
                       train_size=10, epochs="1+0", image_size=16, batch_size=8, lr=5e-4,
                       experiment="head", logdir=str(source.parent.parent),
                       data_dir=str(digits_data_dir))
    result = run_experiment(config, callbacks=[recorder])
    return result, recorder


@pytest.mark.slow
def test_another_task_with_as_many_classes_starts_from_a_new_head(source, digits_data_dir,
                                                                  capsys):
    result, first = _target(source, OTHER_CLASSES, digits_data_dir)

    # A new head guesses near uniformly: the first batch's loss is near ln 5.
    assert first.loss == pytest.approx(math.log(5), rel=0.10)
    assert result.metrics["head"] == "new"
    assert json.loads((result.run_dir / "metrics.json").read_text())["head"] == "new"
    assert ("Head: new (the source was trained on classes 0, 1, 2, 3, 4, this run's are "
            "5, 6, 7, 8, 9).") in capsys.readouterr().out
    trained = open_run(source, "test").model().get_layer(OUTPUT_LAYER).kernel
    assert not np.array_equal(first.kernel, keras.ops.convert_to_numpy(trained))


@pytest.mark.slow
def test_the_same_task_starts_from_the_source_head(source, digits_data_dir, capsys):
    result, first = _target(source, SOURCE_CLASSES, digits_data_dir)

    trained = open_run(source, "test").model().get_layer(OUTPUT_LAYER).kernel
    np.testing.assert_array_equal(first.kernel, keras.ops.convert_to_numpy(trained))
    assert result.metrics["head"] == "transferred"
    assert "Head: transferred (the source was trained on the same classes 0, 1, 2, 3, 4)." \
        in capsys.readouterr().out
    # The rebuilt initial model of the target makes the same choice.
    initial = open_run(result.run_dir, "test").initial_model().get_layer(OUTPUT_LAYER).kernel
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(initial), first.kernel)


def test_the_order_of_the_classes_counts(tmp_path):
    run_dir = tmp_path / "source"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"classes": ["a", "b"]}))
    target = RunConfig(init=str(run_dir))

    assert choose_head(target, ["a", "b"]).transferred
    swapped = choose_head(target, ["b", "a"])
    assert not swapped.transferred
    assert swapped.reason == "the source was trained on classes a, b, this run's are b, a"


def test_the_source_predictions_name_its_classes_before_its_config(tmp_path):
    run_dir = tmp_path / "source"
    run_dir.mkdir()
    # classes: null means all of the dataset's; its predictions file names them.
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"dataset": "shapes",
                                                         "data_dir": str(tmp_path)}))
    target = RunConfig(init=str(run_dir))
    unknown = choose_head(target, ["x", "y"])
    assert not unknown.transferred and "classes are unknown" in unknown.reason

    (run_dir / "predictions_test.csv").write_text("id,label,prob_x,prob_y\ni0,x,0.9,0.1\n")
    assert choose_head(target, ["x", "y"]).transferred


def test_a_weights_file_or_a_named_init_gets_a_new_head(tmp_path):
    file = tmp_path / "source.weights.h5"
    file.write_bytes(b"")
    from_file = choose_head(RunConfig(init=str(file)), ["0", "1"])
    assert not from_file.transferred and "records no class names" in from_file.reason
    assert choose_head(RunConfig(init="glorot"), ["0", "1"]).word == "new"
