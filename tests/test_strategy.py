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
