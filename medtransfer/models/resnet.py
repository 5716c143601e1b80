"""ResNet-18 and ResNet-34 (He et al. 2016), and MedMNIST's ResNet-18 for 28 px inputs.

Keras publishes no ResNet-18/34, so they are built here from the paper's Table 1: a 7x7
stride-2 convolution with 64 filters and a 3x3 stride-2 max-pool (the stem), then four
stages of basic blocks (two 3x3 convolutions, each followed by batch norm; ReLU after the
first and after the sum), [2, 2, 2, 2] blocks for ResNet-18 and [3, 4, 6, 3] for
ResNet-34, with 64, 128, 256 and 512 filters. The first block of stages 3-5 halves the
side (stride 2 in its first convolution) and doubles the filters, so its shortcut is a
1x1 stride-2 projection with batch norm (option B of the paper); every other shortcut is
the identity. No convolution has a bias: the batch norm's offset replaces it.

The stem pads 3 (convolution) and 1 (pool) pixels on every side before 'valid'
operations, as ``keras.applications.ResNet50`` and torchvision do, so that a 224 px
input gives 56 px after the stem and 7 px at the end. Layer names follow
``keras.applications.ResNet50`` (``conv2_block1_1_conv`` ... ``conv5_block2_out``), so the
stages are found by the same block pattern.

``resnet18_28`` is MedMNIST v2's "ResNet-18 (28)" (Yang et al. 2023): the same stages
behind a 3x3 stride-1 convolution with 64 filters and no max-pool, for 28 px inputs
(28 -> 28, 14, 7, 4). Its backbone has fewer parameters than ResNet-18's only in the
stem (3x3 against 7x7 kernels).

Backbone parameters, counting all four batch norm vectors as ``count_params()`` does:
ResNet-18 11,186,112, ResNet-34 21,301,696 (torchvision's 11,689,512 and 21,797,672,
less the 1000-class layer, plus the batch norm moving statistics).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from medtransfer.models.registry import NETS, NetSpec

if TYPE_CHECKING:
    import keras

STAGE_FILTERS = (64, 128, 256, 512)
# name -> (blocks per stage, stem: "imagenet" (7x7/2 + max-pool) or "small" (3x3/1))
RESNETS: dict[str, tuple[tuple[int, ...], str]] = {
    "resnet18": ((2, 2, 2, 2), "imagenet"),
    "resnet34": ((3, 4, 6, 3), "imagenet"),
    "resnet18_28": ((2, 2, 2, 2), "small"),
}
BLOCK_PATTERN = r"(conv\d)_block\d+_out$"
"""The four residual stages conv2..conv5, as keras.applications names them."""


def build_resnet_backbone(
    input_shape: tuple[int, int, int],
    weights: str | Path | None = None,
    *,
    net: str,
) -> keras.Model:
    """Builds the backbone of ``resnet18``, ``resnet34`` or ``resnet18_28``.

    Args:
        input_shape: ``(height, width, channels)``, each side at least the net's
            ``min_input_size``.
        weights: ``None`` for Keras default initialisers, or a weights file to load.
        net: one of :data:`RESNETS`.

    Returns:
        The backbone without pooling or classifier, a functional model named
        ``"backbone"``.

    Raises:
        MedtransferError: ``weights`` does not fit the backbone.
    """
    # Keras only now: registering the net must not load TensorFlow (``medtransfer list``).
    import keras

    from medtransfer.models.weights_io import load_backbone_weights

    layers = keras.layers
    blocks, stem = RESNETS[net]
    inputs = keras.Input(shape=input_shape)
    if stem == "imagenet":
        x = layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
        x = layers.Conv2D(64, 7, strides=2, use_bias=False, name="conv1_conv")(x)
    else:
        x = layers.Conv2D(64, 3, padding="same", use_bias=False, name="conv1_conv")(inputs)
    x = layers.BatchNormalization(name="conv1_bn")(x)
    x = layers.ReLU(name="conv1_relu")(x)
    if stem == "imagenet":
        x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
        x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, (count, filters) in enumerate(zip(blocks, STAGE_FILTERS, strict=True), start=2):
        for block in range(1, count + 1):
            stride = 2 if block == 1 and stage > 2 else 1
            x = _basic_block(x, filters, stride, f"conv{stage}_block{block}")
    backbone = keras.Model(inputs, x, name="backbone")
    if weights is not None:
        load_backbone_weights(backbone, weights, net)
    return backbone


def _basic_block(x, filters: int, stride: int, name: str):
    """Two 3x3 convolutions with batch norm and a shortcut: a 1x1 projection with batch
    norm where the shape changes, else the identity."""
    import keras

    layers = keras.layers
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                 name=f"{name}_0_conv")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_0_bn")(shortcut)
    x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                      name=f"{name}_1_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_1_bn")(x)
    x = layers.ReLU(name=f"{name}_1_relu")(x)
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_2_bn")(x)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.ReLU(name=f"{name}_out")(x)


_DESCRIPTIONS = {
    "resnet18": "ResNet-18 (He et al. 2016): basic blocks 2/2/2/2, 64-512 filters",
    "resnet34": "ResNet-34 (He et al. 2016): basic blocks 3/4/6/3, 64-512 filters",
    "resnet18_28": "MedMNIST's ResNet-18 (28): ResNet-18 with a 3x3 stride-1 stem, no "
                   "max-pool",
}
# Smallest side: the 7x7/2 stem and the pool halve it twice and stages 3-5 three times
# more (32 -> 1); the 28 px variant halves it only in stages 3-5 (8 -> 1).
_MIN_INPUT_SIZE = {"imagenet": 32, "small": 8}
_DEFAULT_INPUT_SIZE = {"imagenet": 224, "small": 28}

for _name, (_blocks, _stem) in RESNETS.items():
    NETS.register(
        _name,
        NetSpec(
            name=_name,
            description=_DESCRIPTIONS[_name],
            default_input_size=_DEFAULT_INPUT_SIZE[_stem],
            min_input_size=_MIN_INPUT_SIZE[_stem],
            imagenet=False,
            imagenet_file=None,
            imagenet_url=None,
            preprocess_input=None,
            build_backbone=partial(build_resnet_backbone, net=_name),
            block_pattern=BLOCK_PATTERN,
            blocks="conv2..conv5 (4 residual stages)",
        ),
    )
