"""Freezing exactly as DESIGN.md "Freezing" says (issue #2, point 6)."""

import keras
import numpy as np
import pytest

from medtransfer.errors import MedtransferError
from medtransfer.models import (
    FreezeSummary,
    backbone_layers,
    build_model,
    freeze_backbone,
    freeze_bottom_layers,
    freeze_summary,
    get_backbone,
)


@pytest.fixture(scope="module")
def small_cnn():
    return build_model("small_cnn", 3, 32, "glorot")


@pytest.fixture(scope="module")
def mobilenet():
    return build_model("mobilenet", 3, 32, "glorot")


@pytest.mark.parametrize(
    ("net", "fraction", "frozen"),
    [
        # small_cnn: n = 12 (conv, bn, pool x 4)
        ("small_cnn", 0.0, 0),  # floor(0 * 12) = 0
        ("small_cnn", 0.1, 1),  # floor(1.2) = 1
        ("small_cnn", 0.3, 3),  # floor(3.6) = 3
        ("small_cnn", 1.0, 12),  # floor(12) = 12
        # mobilenet: n = 85 (86 layers minus the InputLayer)
        ("mobilenet", 0.0, 0),  # floor(0 * 85) = 0
        ("mobilenet", 0.1, 8),  # floor(8.5) = 8
        ("mobilenet", 0.3, 25),  # floor(25.5) = 25
        ("mobilenet", 1.0, 85),  # floor(85) = 85
    ],
)
def test_frozen_layers_are_the_bottom_floor_f_n(net, fraction, frozen, request):
    classifier = request.getfixturevalue(net)
    backbone = get_backbone(classifier)
    layers = backbone_layers(backbone)

    assert freeze_bottom_layers(backbone, fraction) == frozen

    assert [layer.trainable for layer in layers] == [False] * frozen + [True] * (
        len(layers) - frozen
    )
    summary = freeze_summary(classifier)
    assert (summary.frozen_layers, summary.total_layers) == (frozen, len(layers))
    head = classifier.layers[2:]
    assert all(layer.trainable for layer in head)


def test_layer_counts_exclude_the_input_layer(small_cnn, mobilenet):
    assert len(backbone_layers(get_backbone(small_cnn))) == 12
    assert len(backbone_layers(get_backbone(mobilenet))) == 85
    for classifier in (small_cnn, mobilenet):
        assert not any(
            isinstance(layer, keras.layers.InputLayer)
            for layer in backbone_layers(get_backbone(classifier))
        )


def test_fraction_is_read_as_the_decimal_written():
    # 100 weightless layers; in binary floating point 0.29 * 100 = 28.999999999999996 and
    # 0.57 * 100 = 56.99999999999999, whose floors are one short.
    inputs = keras.Input((4,))
    x = inputs
    for _ in range(100):
        x = keras.layers.Identity()(x)
    backbone = keras.Model(inputs, x)
    assert freeze_bottom_layers(backbone, 0.29) == 29
    assert freeze_bottom_layers(backbone, 0.57) == 57
    assert freeze_bottom_layers(backbone, 0.3) == 30


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan"), "half"])
def test_fraction_outside_zero_one_fails(fraction, small_cnn):
    with pytest.raises(MedtransferError, match="--freeze"):
        freeze_bottom_layers(get_backbone(small_cnn), fraction)


def test_phase_one_freezes_all_and_phase_two_unfreezes_the_top(small_cnn):
    backbone = get_backbone(small_cnn)
    freeze_backbone(backbone)
    assert freeze_summary(small_cnn).frozen_layers == 12
    assert not small_cnn.layers[1].trainable

    # Phase 2 must override the model-level flag of phase 1.
    assert freeze_bottom_layers(backbone, 0.5) == 6
    assert [layer.trainable for layer in backbone_layers(backbone)] == [False] * 6 + [True] * 6


def test_summary_counts_batch_norm_statistics_as_frozen_params(small_cnn):
    freeze_bottom_layers(get_backbone(small_cnn), 0.25)  # floor(0.25 * 12) = 3: block 1
    # Block 1: conv 7*7*3*32 + 32 = 4,736; BN gamma, beta, mean, variance 4 * 32 = 128.
    # Trainable: the backbone 2,114,496 minus block 1 (4,864) minus the moving statistics
    # of blocks 2-4 (2 * (64 + 128 + 256) = 896) = 2,108,736; the head 256 * 256 + 256 =
    # 65,792 and 256 * 3 + 3 = 771; in all 2,175,299.
    assert freeze_summary(small_cnn) == FreezeSummary(
        frozen_layers=3, total_layers=12, frozen_params=4_864, trainable_params=2_175_299
    )


def _snapshot(layers):
    return {
        (layer.name, weight.path): keras.ops.convert_to_numpy(weight).copy()
        for layer in layers
        for weight in layer.weights
    }


def _train_two_steps(classifier):
    # A new optimizer per call: DESIGN.md's phase 2 recompiles with a fresh Adam state.
    classifier.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(8, 32, 32, 3)).astype("float32")
    labels = keras.utils.to_categorical(rng.integers(0, 3, size=8), 3)
    classifier.fit(images, labels, batch_size=4, epochs=1, verbose=0)


def test_training_changes_only_unfrozen_weights_and_statistics():
    keras.utils.set_random_seed(0)
    classifier = build_model("small_cnn", 3, 32, "glorot")
    backbone = get_backbone(classifier)
    assert freeze_bottom_layers(backbone, 0.5) == 6  # blocks 1 and 2
    layers = backbone_layers(backbone)
    before = _snapshot(layers)
    head_before = _snapshot(classifier.layers[2:])

    _train_two_steps(classifier)

    after = _snapshot(layers)
    head_after = _snapshot(classifier.layers[2:])
    frozen_names = {layer.name for layer in layers[:6]}
    changed = {key for key in before if not np.array_equal(before[key], after[key])}
    frozen_keys = {key for key in before if key[0] in frozen_names}
    # Frozen: kernels, biases, gamma, beta and the moving mean and variance all unchanged.
    assert frozen_keys and not frozen_keys & changed
    # Unfrozen: every tensor moved, BatchNorm moving statistics included.
    assert changed == set(before) - frozen_keys
    assert any("moving_variance" in path for _, path in changed)
    assert all(not np.array_equal(head_before[k], head_after[k]) for k in head_before)


def test_phase_one_training_keeps_the_whole_backbone():
    keras.utils.set_random_seed(0)
    classifier = build_model("small_cnn", 3, 32, "glorot")
    backbone = get_backbone(classifier)
    freeze_backbone(backbone)
    before = _snapshot(backbone_layers(backbone))
    head_before = _snapshot(classifier.layers[2:])

    _train_two_steps(classifier)

    after = _snapshot(backbone_layers(backbone))
    assert all(np.array_equal(before[key], after[key]) for key in before)
    head_after = _snapshot(classifier.layers[2:])
    assert all(not np.array_equal(head_before[k], head_after[k]) for k in head_before)
