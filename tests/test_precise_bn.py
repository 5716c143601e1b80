"""Precise BatchNorm statistics (DESIGN.md "Evaluation and BatchNorm statistics").

The statistics are checked against numpy over the very features the BatchNorm layers
receive, under the default strategy and under MirroredStrategy with mixed precision; a
real run shows the gap that motivated them.
"""

import csv
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from medtransfer.config import RunConfig
from medtransfer.models.classifier import get_backbone
from medtransfer.models.freezing import freeze_bottom_layers
from medtransfer.models.init import build_model
from medtransfer.training.batchnorm import PreciseBatchNorm
from medtransfer.training.run import run_experiment
from medtransfer.training.strategy import make_strategy, set_precision

BATCH = 8
IMAGES = 36  # four full batches and one of 4: the weighting by batch size matters


def batches(seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (IMAGES, 16, 16, 3)).astype(np.float32)
    labels = np.eye(10, dtype=np.float32)[rng.integers(0, 10, IMAGES)]
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(BATCH)


def population_statistics(backbone, layer, dataset):
    """Mean and variance over every image of what ``layer`` receives in training mode."""
    features = keras.Model(backbone.inputs, layer.input)
    pooled = np.concatenate([
        np.asarray(features(images, training=True), dtype=np.float64).reshape(
            -1, layer.input.shape[-1])
        for images, _ in dataset
    ])
    return pooled.mean(axis=0), pooled.var(axis=0)


@pytest.mark.parametrize("strategy_name, mixed", [("default", False), ("mirrored", True)])
def test_trainable_layers_get_the_exact_statistics_and_nothing_else_changes(
        strategy_name, mixed):
    set_precision(mixed)
    try:
        strategy = make_strategy(strategy_name)
        with strategy.scope():
            model = build_model("small_cnn", 10, 16, "glorot", seed=0)
        backbone = get_backbone(model)
        # floor(0.5 * 12) = 6 layers frozen: block 1 and 2's BatchNorm keep their
        # statistics, block 3 and 4's are re-estimated.
        freeze_bottom_layers(backbone, 0.5)
        frozen_bn, trainable_bn = ["block1_bn", "block2_bn"], ["block3_bn", "block4_bn"]
        rng = np.random.default_rng(1)
        for name in frozen_bn + trainable_bn:  # distinctive values, not Keras' 0 and 1
            layer = backbone.get_layer(name)
            layer.moving_mean.assign(rng.normal(0, 1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(1, 2, layer.moving_variance.shape))
        before = {weight.path: np.array(weight) for weight in model.weights}
        dataset = batches()
        expected = {name: population_statistics(backbone, backbone.get_layer(name), dataset)
                    for name in trainable_bn}

        assert PreciseBatchNorm(model, dataset).update() == 2

        rtol = 2e-3 if mixed else 1e-5
        for name in trainable_bn:
            layer = backbone.get_layer(name)
            mean, variance = expected[name]
            np.testing.assert_allclose(np.array(layer.moving_mean), mean, rtol=rtol,
                                       atol=1e-5)
            np.testing.assert_allclose(np.array(layer.moving_variance), variance, rtol=rtol,
                                       atol=1e-5)
        re_estimated = {backbone.get_layer(name).moving_mean.path for name in trainable_bn} | \
            {backbone.get_layer(name).moving_variance.path for name in trainable_bn}
        for weight in model.weights:
            if weight.path not in re_estimated:
                np.testing.assert_array_equal(np.array(weight), before[weight.path],
                                              err_msg=weight.path)
    finally:
        set_precision(False)


def test_nothing_to_do_when_the_whole_backbone_is_frozen():
    model = build_model("small_cnn", 10, 16, "glorot", seed=0)
    get_backbone(model).trainable = False  # phase 1 of the regime
    before = [np.array(weight) for weight in model.weights]
    assert PreciseBatchNorm(model, batches()).update() == 0
    for weight, old in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(np.array(weight), old)


@pytest.fixture(scope="module")
def both_statistics(tmp_path_factory, digits_data_dir):
    """The same 0+1 run on digits at 16 px, once per kind of BatchNorm statistics."""
    root = tmp_path_factory.mktemp("bn")
    results = {}
    for bn_stats in ("moving", "precise"):
        config = RunConfig(dataset="digits", net="small_cnn", image_size=16, epochs="0+1",
                           lr=1e-3, batch_size=32, strategy="default", bn_stats=bn_stats,
                           logdir=str(root), experiment=bn_stats, data_dir=str(digits_data_dir))
        results[bn_stats] = run_experiment(config)
    return results


@pytest.mark.slow
def test_precise_statistics_rescue_a_short_run(both_statistics):
    # The training is the same (statistics only serve evaluation), the evaluation is not:
    # after 45 steps Keras' moving averages still hold mostly their initial 0 and 1.
    moving, precise = both_statistics["moving"], both_statistics["precise"]
    rows = {name: next(csv.DictReader((result.run_dir / "history.csv").read_text().splitlines()))
            for name, result in both_statistics.items()}
    assert rows["moving"]["loss"] == rows["precise"]["loss"]
    assert float(rows["moving"]["val_accuracy"]) < 0.5
    assert moving.metrics["test_accuracy"] < 0.5
    assert float(rows["precise"]["val_accuracy"]) > 0.9
    assert precise.metrics["test_accuracy"] > 0.9


@pytest.mark.slow
def test_the_choice_is_recorded(both_statistics):
    for bn_stats, result in both_statistics.items():
        assert result.metrics["bn_stats"] == bn_stats
        metrics = json.loads((result.run_dir / "metrics.json").read_text())
        assert metrics["bn_stats"] == bn_stats
        assert yaml.safe_load((result.run_dir / "config.yaml").read_text())["bn_stats"] == \
            bn_stats


@pytest.mark.slow
def test_the_best_checkpoint_holds_the_statistics_the_test_used(both_statistics):
    # A later reader (report, predict) rebuilds the model from best.weights.h5 alone and
    # must get the run's test predictions, so the re-estimated statistics are in it.
    from medtransfer.training.rundir import open_run

    run = open_run(both_statistics["precise"].run_dir, "test")
    probabilities = run.model().predict(run.split("test").map(lambda x, y, i: x), verbose=0)
    with (run.path / "predictions_test.csv").open() as stream:
        written = np.array([[float(p) for p in row[2:]] for row in list(csv.reader(stream))[1:]])
    np.testing.assert_allclose(probabilities, written, atol=1e-5)
