"""small_cnn: the study's own small baseline net, trained from scratch.

Four blocks of Conv2D 7x7 'same' with ReLU -> BatchNormalization -> MaxPool 2x2, with 32, 64,
128 and 256 filters: 12 layers and exactly 2,114,496 parameters (convolutions 2,112,576, batch
norm 1,920, of which 960 are moving statistics). Global average pooling and the classifier are
the shared head (:mod:`medtransfer.models.classifier`).

Sizes: the default input is 128 px. The pools use Keras's default 'valid' padding, so each
halves the side rounding down; four of them reach a 1x1 map at 16 px, the smallest input.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from medtransfer.models.registry import NETS, NetSpec

if TYPE_CHECKING:
    import keras

FILTERS = (32, 64, 128, 256)
KERNEL_SIZE = 7
MIN_INPUT_SIZE = 2 ** len(FILTERS)


def build_small_cnn_backbone(
    input_shape: tuple[int, int, int], weights: str | Path | None = None
) -> keras.Model:
    """Builds the small_cnn backbone (convolutional blocks, no pooling to a vector, no head).

    Args:
        input_shape: ``(height, width, channels)``, each side at least 16.
        weights: ``None`` for Keras default initialisers, or a weights file to load.

    Returns:
        The backbone, a functional model named ``"backbone"``.

    Raises:
        MedtransferError: ``weights`` does not fit the backbone.
    """
    # Keras only now: registering the net must not load TensorFlow (``medtransfer list``).
    import keras

    from medtransfer.models.weights_io import load_backbone_weights

    inputs = keras.Input(shape=input_shape)
    x = inputs
    for block, filters in enumerate(FILTERS, start=1):
        x = keras.layers.Conv2D(
            filters, KERNEL_SIZE, padding="same", activation="relu", name=f"block{block}_conv"
        )(x)
        x = keras.layers.BatchNormalization(name=f"block{block}_bn")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    backbone = keras.Model(inputs, x, name="backbone")
    if weights is not None:
        load_backbone_weights(backbone, weights, "small_cnn")
    return backbone


NETS.register(
    "small_cnn",
    NetSpec(
        name="small_cnn",
        description="the study's baseline: 4x (Conv 7x7 + ReLU, BN, MaxPool 2x2), 32-256 filters",
        default_input_size=128,
        min_input_size=MIN_INPUT_SIZE,
        imagenet=False,
        imagenet_file=None,
        imagenet_url=None,
        preprocess_input=None,
        build_backbone=build_small_cnn_backbone,
        block_pattern=r"(block\d+)_",
        blocks="block1..block4",
    ),
)
