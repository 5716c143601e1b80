"""The CBR family of Transfusion (Raghu et al., NeurIPS 2019): small nets for medical images.

Each block is Conv2D (stride 1, 'same' padding, no bias since batch norm's offset replaces
it) -> BatchNormalization -> ReLU, followed by MaxPool 3x3 stride 2; CBR-LargeT has no pool
after its last block. Global average pooling and the classifier are the shared head
(:mod:`medtransfer.models.classifier`).

=============  ======  ========================
net            kernel  filters
=============  ======  ========================
cbr_large_t    7x7     32, 64, 128, 256, 512
cbr_large_w    7x7     64, 128, 256, 512
cbr_small      7x7     32, 64, 128, 256
cbr_tiny       5x5     64, 128, 256, 512
=============  ======  ========================

Sizes: the default input is 224 px. The pools use 'same' padding, so each maps a side s to
ceil(s / 2): no border row or column is dropped (a 'valid' 3x3/2 pool drops the last one at
even sides) and a map never shrinks to nothing. Every CBR net pools four times, so 16 px is
the smallest input that still ends in a 1x1 map of real pixels; that is ``min_input_size``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from medtransfer.models.registry import NETS, NetSpec

if TYPE_CHECKING:
    import keras

# name -> (kernel size, filters per block, pool after the last block, description)
CBR_NETS: dict[str, tuple[int, tuple[int, ...], bool, str]] = {
    "cbr_large_t": (7, (32, 64, 128, 256, 512), False, "Transfusion CBR-LargeT: 5 blocks 7x7"),
    "cbr_large_w": (7, (64, 128, 256, 512), True, "Transfusion CBR-LargeW: 4 wide blocks 7x7"),
    "cbr_small": (7, (32, 64, 128, 256), True, "Transfusion CBR-Small: 4 blocks 7x7"),
    "cbr_tiny": (5, (64, 128, 256, 512), True, "Transfusion CBR-Tiny: 4 wide blocks 5x5"),
}


def build_cbr_backbone(
    input_shape: tuple[int, int, int],
    weights: str | Path | None = None,
    *,
    net: str,
) -> keras.Model:
    """Builds the backbone of one CBR net.

    Args:
        input_shape: ``(height, width, channels)``, each side at least 16.
        weights: ``None`` for Keras default initialisers, or a weights file to load.
        net: one of :data:`CBR_NETS`.

    Returns:
        The backbone, a functional model named ``"backbone"``.

    Raises:
        MedtransferError: ``weights`` does not fit the backbone.
    """
    # Keras only now: registering the net must not load TensorFlow (``medtransfer list``).
    import keras

    from medtransfer.models.weights_io import load_backbone_weights

    kernel_size, filters, pool_last, _ = CBR_NETS[net]
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for block, width in enumerate(filters, start=1):
        x = keras.layers.Conv2D(
            width, kernel_size, padding="same", use_bias=False, name=f"block{block}_conv"
        )(x)
        x = keras.layers.BatchNormalization(name=f"block{block}_bn")(x)
        x = keras.layers.ReLU(name=f"block{block}_relu")(x)
        if block < len(filters) or pool_last:
            x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"block{block}_pool")(
                x
            )
    backbone = keras.Model(inputs, x, name="backbone")
    if weights is not None:
        load_backbone_weights(backbone, weights, net)
    return backbone


def _pool_count(net: str) -> int:
    _, filters, pool_last, _ = CBR_NETS[net]
    return len(filters) if pool_last else len(filters) - 1


for _name, (_kernel, _filters, _pool_last, _description) in CBR_NETS.items():
    NETS.register(
        _name,
        NetSpec(
            name=_name,
            description=_description + f", filters {'/'.join(map(str, _filters))}",
            default_input_size=224,
            min_input_size=2 ** _pool_count(_name),
            imagenet=False,
            imagenet_file=None,
            imagenet_url=None,
            preprocess_input=None,
            build_backbone=partial(build_cbr_backbone, net=_name),
            block_pattern=r"(block\d+)_",
            blocks=f"block1..block{len(_filters)}",
        ),
    )
