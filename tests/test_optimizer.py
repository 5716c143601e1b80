"""``training.schedule.Adam``: Keras' Adam to the bit, with the step's bias correction
traced once instead of once per variable."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from medtransfer.training.schedule import Adam, make_optimizer
from medtransfer.training.strategy import make_strategy


def _model(dtype=None) -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, dtype=dtype)(inputs)
    x = keras.layers.BatchNormalization(dtype=dtype)(x)
    x = keras.layers.GlobalAveragePooling2D(dtype=dtype)(x)
    outputs = keras.layers.Dense(3, activation="softmax", dtype=dtype)(x)
    return keras.Model(inputs, outputs)


def _trained(optimizer_class, strategy=None, dtype=None, steps=3):
    """Weights and optimizer variables after ``steps`` steps from the same start, and
    the weights of that start."""
    strategy = strategy or tf.distribute.get_strategy()
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8 * steps, 8, 8, 3)).astype("float32")
    labels = keras.utils.to_categorical(np.arange(8 * steps) % 3, 3)
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = _model(dtype)
        optimizer = optimizer_class(1e-2)
        if dtype == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        model.compile(optimizer=optimizer, loss="categorical_crossentropy")
    start = [np.array(w) for w in model.weights]
    model.fit(images, labels, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return ([np.array(w) for w in model.weights],
            [np.array(v) for v in model.optimizer.variables], start)


@pytest.mark.parametrize("case", ["default", "mirrored", "mixed_float16"])
def test_the_weights_are_bit_identical_to_keras_adam(case):
    options = {}
    if case == "mirrored":  # over the two logical CPUs of conftest
        options["strategy"] = make_strategy("mirrored")  # the process's one, as runs share it
    if case == "mixed_float16":
        options["dtype"] = "mixed_float16"
    ours = _trained(Adam, **options)
    theirs = _trained(keras.optimizers.Adam, **options)
    if case == "mirrored":
        assert options["strategy"].num_replicas_in_sync == 2
    for mine, keras_own in zip(ours, theirs, strict=True):
        assert len(mine) == len(keras_own)
        for a, b in zip(mine, keras_own, strict=True):
            np.testing.assert_array_equal(a, b)
    # Both started from the same weights, and the steps moved every trainable one (the
    # comparison is not of two untouched models).
    weights, _, start = ours
    trained = [index for index, (a, b) in enumerate(zip(weights, start, strict=True))
               if not np.array_equal(a, b)]
    assert len(trained) >= 6, trained


def _pow_ops(optimizer) -> tuple[int, int]:
    """The Pow ops in one traced update of the test model, and its trainable variables."""
    model = _model()
    variables = model.trainable_variables
    optimizer.build(variables)
    step = tf.function(lambda grads: optimizer.apply(grads, variables))
    specs = [tf.TensorSpec(v.shape, v.dtype) for v in variables]
    graph = step.get_concrete_function(specs).graph
    return sum(op.type == "Pow" for op in graph.get_operations()), len(variables)


def test_the_bias_correction_is_traced_once_per_step_not_per_variable():
    ours, count = _pow_ops(make_optimizer("adam", 1e-3))
    theirs, _ = _pow_ops(keras.optimizers.Adam(1e-3))
    assert count == 6  # kernel and bias of the convolution and dense, BN's gamma and beta
    assert (ours, theirs) == (2, 2 * count)  # beta_1 ** step and beta_2 ** step


def test_a_state_saved_by_keras_adam_resumes_identically(tmp_path):
    """The optimizer variables are Keras': a weights file saved by either loads into the
    other, and the next steps agree to the bit."""
    rng = np.random.default_rng(1)
    images = rng.normal(size=(16, 8, 8, 3)).astype("float32")
    labels = keras.utils.to_categorical(np.arange(16) % 3, 3)
    keras.utils.set_random_seed(0)
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    model.fit(images, labels, batch_size=8, epochs=1, shuffle=False, verbose=0)
    saved = tmp_path / "state.weights.h5"
    model.save_weights(saved)
    after = {}
    for name, optimizer in (("keras", keras.optimizers.Adam(1e-2)), ("ours", Adam(1e-2))):
        resumed = _model()
        resumed.compile(optimizer=optimizer, loss="categorical_crossentropy")
        resumed.optimizer.build(resumed.trainable_variables)
        resumed.load_weights(saved)
        assert int(resumed.optimizer.iterations) == 2
        resumed.fit(images, labels, batch_size=8, epochs=1, shuffle=False, verbose=0)
        after[name] = [np.array(w) for w in resumed.weights + resumed.optimizer.variables]
    for a, b in zip(after["ours"], after["keras"], strict=True):
        np.testing.assert_array_equal(a, b)
