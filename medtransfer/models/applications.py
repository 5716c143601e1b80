"""The keras.applications nets: the study's four and Transfusion's ResNet50, as backbones
without top and pooling.

Each is built with ``include_top=False, pooling=None, weights=None`` and, when given a
weights file, loaded through :func:`medtransfer.models.weights_io.load_backbone_weights`
(so a wrong file fails with a MedtransferError that names it). Which file Keras would
download for ImageNet is recorded in the :class:`NetSpec` (``imagenet_file``,
``imagenet_url``, ``imagenet_file_hash``), copied from the Keras 3 sources; the lookup in
the Keras cache and the download live in :mod:`medtransfer.models.init`.

Keras is imported when a backbone is built or an image preprocessed, not when the nets are
registered: ``medtransfer list`` reads the registry without loading TensorFlow.

MobileNet: Keras publishes ImageNet weights trained at 128, 160, 192 and 224 px and uses the
224 px file at any other size. The backbone's weight shapes do not depend on the input
size, so medtransfer always uses the 224 px file (``mobilenet_1_0_224_tf_no_top.h5``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from medtransfer.models.registry import NETS, NetSpec

if TYPE_CHECKING:
    import keras

_KERAS_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/"


def _backbone_builder(net: str, application: str) -> Callable[..., keras.Model]:
    """``build_backbone`` for ``keras.applications.<application>``, importing Keras on call."""

    def build_backbone(
        input_shape: tuple[int, int, int], weights: str | Path | None = None
    ) -> keras.Model:
        import keras

        from medtransfer.models.weights_io import load_backbone_weights

        backbone = getattr(keras.applications, application)(
            include_top=False,
            weights=None,
            input_shape=tuple(input_shape),
            pooling=None,
            name="backbone",
        )
        if weights is not None:
            load_backbone_weights(backbone, weights, net)
        return backbone

    build_backbone.__doc__ = f"Builds the {net} backbone (include_top=False, pooling=None)."
    return build_backbone


def _preprocessor(module: str) -> Callable:
    """``keras.applications.<module>.preprocess_input``, importing Keras on call."""

    def preprocess_input(x, data_format=None):
        import keras

        return getattr(keras.applications, module).preprocess_input(x, data_format=data_format)

    preprocess_input.__doc__ = f"keras.applications.{module}.preprocess_input"
    return preprocess_input


def _register(
    name: str,
    description: str,
    default_input_size: int,
    min_input_size: int,
    application: str,
    preprocess_module: str,
    imagenet_file: str,
    imagenet_url: str,
    imagenet_file_hash: str | None,
    block_pattern: str,
    blocks: str,
) -> None:
    NETS.register(
        name,
        NetSpec(
            name=name,
            description=description,
            default_input_size=default_input_size,
            min_input_size=min_input_size,
            imagenet=True,
            imagenet_file=imagenet_file,
            imagenet_url=imagenet_url,
            imagenet_file_hash=imagenet_file_hash,
            preprocess_input=_preprocessor(preprocess_module),
            build_backbone=_backbone_builder(name, application),
            block_pattern=block_pattern,
            blocks=blocks,
        ),
    )


_register(
    "inception_v3",
    "keras.applications InceptionV3 (Szegedy et al. 2016)",
    299,
    75,
    "InceptionV3",
    "inception_v3",
    "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    _KERAS_WEIGHTS + "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "bcbd6486424b2319ff4ef7d526e38f63",
    r"(mixed\d+)$",
    "mixed0..mixed10 (11 Inception modules)",
)
_register(
    "resnet50_v2",
    "keras.applications ResNet50V2 (He et al. 2016, pre-activation)",
    224,
    32,
    "ResNet50V2",
    "resnet_v2",
    "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    _KERAS_WEIGHTS + "resnet/resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "fac2f116257151a9d068a22e544a4917",
    r"(conv\d)_block\d+_out$",
    "conv2..conv5 (4 residual stages)",
)
_register(
    "densenet121",
    "keras.applications DenseNet121 (Huang et al. 2017)",
    224,
    32,
    "DenseNet121",
    "densenet",
    "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
    _KERAS_WEIGHTS + "densenet/densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "30ee3e1110167f948a6b9946edeeb738",
    r"(conv\d)_block\d+_concat$",
    "conv2..conv5 (4 dense blocks)",
)
_register(
    "mobilenet",
    "keras.applications MobileNet, alpha 1.0 (Howard et al. 2017)",
    224,
    32,
    "MobileNet",
    "mobilenet",
    "mobilenet_1_0_224_tf_no_top.h5",
    _KERAS_WEIGHTS + "mobilenet/mobilenet_1_0_224_tf_no_top.h5",
    None,
    r"conv_pw_(\d+)_relu$",
    "1..13 (13 depthwise-separable blocks)",
)
_register(
    "resnet50",
    "keras.applications ResNet50 (He et al. 2016, v1): Transfusion's net",
    224,
    32,
    "ResNet50",
    "resnet50",
    "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    _KERAS_WEIGHTS + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "4d473c1dd8becc155b73f8504c6f6626",
    r"(conv\d)_block\d+_out$",
    "conv2..conv5 (4 residual stages)",
)
