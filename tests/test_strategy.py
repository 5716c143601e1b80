"""--strategy: what auto picks, and MirroredStrategy over the two logical CPU devices."""

import pytest
import tensorflow as tf

from medtransfer.errors import MedtransferError
from medtransfer.training.strategy import make_strategy, strategy_kind


@pytest.mark.parametrize("name, gpus, expected", [
    ("auto", 0, "default"), ("auto", 1, "default"), ("auto", 2, "mirrored"),
    ("auto", 8, "mirrored"), ("mirrored", 0, "mirrored"), ("default", 4, "default"),
])
def test_auto_mirrors_only_with_more_than_one_gpu(name, gpus, expected):
    assert strategy_kind(name, gpus) == expected


def test_unknown_strategy_suggests_the_right_one():
    with pytest.raises(MedtransferError, match="Did you mean 'mirrored'"):
        strategy_kind("mirored", 2)


def test_on_this_machine():
    # No GPU: auto is the default strategy; mirrored spans the two logical CPUs that
    # tests/conftest.py configures in place of two GPUs.
    assert make_strategy("auto") is tf.distribute.get_strategy()
    mirrored = make_strategy("mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert mirrored.num_replicas_in_sync == 2


def test_mirrored_runs_share_one_strategy():
    assert make_strategy("mirrored") is make_strategy("mirrored")


@pytest.mark.slow
def test_two_mirrored_runs_with_different_trainable_weights_in_one_process(
    tmp_path, digits_data_dir
):
    # A sweep or a notebook: the whole model trains, then only the head. Each run with a
    # strategy of its own reused the first all-reduce's collective key with another
    # gradient size, and TensorFlow aborted the second run ("Shape mismatch in the
    # collective instance 100").
    from medtransfer.config import RunConfig
    from medtransfer.training.run import run_experiment

    results = [
        run_experiment(RunConfig(
            dataset="digits", data_dir=str(digits_data_dir), net="small_cnn", image_size=16,
            epochs="0+1", freeze=freeze, batch_size=16, train_size=64, strategy="mirrored",
            logdir=str(tmp_path), experiment="two_mirrored"))
        for freeze in (0.0, 1.0)
    ]
    assert [result.metrics["status"] for result in results] == ["complete", "complete"]
    assert [result.metrics["replicas"] for result in results] == [2, 2]
    # The two runs trained different sets of weights: the failing case.
    whole, head = (result.metrics["trainable_params"] for result in results)
    assert head < whole
