"""The net registry, the backbones and the shared classifier head (issue #2, point 4; the
ResNets of issue #23)."""

import keras
import numpy as np
import pytest

from medtransfer.errors import MedtransferError
from medtransfer.models import NETS, build_classifier, build_model, get_backbone, get_net

NETS_IN_ORDER = [
    "inception_v3",
    "resnet50_v2",
    "densenet121",
    "mobilenet",
    "resnet50",
    "small_cnn",
    "cbr_large_t",
    "cbr_large_w",
    "cbr_small",
    "cbr_tiny",
    "resnet18",
    "resnet34",
    "resnet18_28",
]

# Backbone output (height, width, channels) at the test input: the Keras apps reduce a
# 32 px input (75 px for InceptionV3) to 1x1; small_cnn halves 4 times (32 -> 2); the CBR
# pools (3x3/2 'same') map s to ceil(s/2) four times (32 -> 2); resnet18/34 halve 5 times
# like the Keras ResNets (32 -> 1), resnet18_28 three times ('same': 16 -> 8 -> 4 -> 2).
TEST_SIZE_AND_OUTPUT = {
    "inception_v3": (75, (1, 1, 2048)),
    "resnet50_v2": (32, (1, 1, 2048)),
    "densenet121": (32, (1, 1, 1024)),
    "mobilenet": (32, (1, 1, 1024)),
    "small_cnn": (32, (2, 2, 256)),
    "cbr_large_t": (32, (2, 2, 512)),
    "cbr_large_w": (32, (2, 2, 512)),
    "cbr_small": (32, (2, 2, 256)),
    "cbr_tiny": (32, (2, 2, 512)),
    "resnet50": (32, (1, 1, 2048)),
    "resnet18": (32, (1, 1, 512)),
    "resnet34": (32, (1, 1, 512)),
    "resnet18_28": (16, (2, 2, 512)),
}


def test_registry_holds_the_nets_of_the_design_and_the_resnets():
    assert NETS.names() == NETS_IN_ORDER


@pytest.mark.parametrize("name", NETS.names())
def test_every_net_builds_without_top_and_classifies(name):
    size, backbone_output = TEST_SIZE_AND_OUTPUT[name]
    backbone = get_net(name).build_backbone((size, size, 3), None)
    assert backbone.output_shape == (None, *backbone_output)

    classifier = build_classifier(backbone, 3)
    probabilities = keras.ops.convert_to_numpy(classifier(np.zeros((2, size, size, 3))))
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_specs_record_sizes_weights_and_preprocessing():
    defaults = {spec.name: spec.default_input_size for spec in NETS}
    assert defaults == {
        "inception_v3": 299,
        "resnet50_v2": 224,
        "densenet121": 224,
        "mobilenet": 224,
        "small_cnn": 128,
        "cbr_large_t": 224,
        "cbr_large_w": 224,
        "cbr_small": 224,
        "cbr_tiny": 224,
        "resnet50": 224,
        "resnet18": 224,
        "resnet34": 224,
        "resnet18_28": 28,
    }
    minimums = {spec.name: spec.min_input_size for spec in NETS}
    assert minimums == {
        "inception_v3": 75,
        "resnet50_v2": 32,
        "densenet121": 32,
        "mobilenet": 32,
        "small_cnn": 16,
        "cbr_large_t": 16,
        "cbr_large_w": 16,
        "cbr_small": 16,
        "cbr_tiny": 16,
        "resnet50": 32,
        "resnet18": 32,
        "resnet34": 32,
        "resnet18_28": 8,
    }
    assert [spec.name for spec in NETS if spec.imagenet] == NETS_IN_ORDER[:5]
    assert get_net("mobilenet").imagenet_file == "mobilenet_1_0_224_tf_no_top.h5"
    assert get_net("inception_v3").imagenet_file == (
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
    )
    assert get_net("resnet50_v2").imagenet_file == (
        "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
    )
    assert get_net("resnet50").imagenet_file == (
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    )
    assert get_net("densenet121").imagenet_file == (
        "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"
    )
    for spec in NETS:
        if spec.imagenet:
            assert spec.imagenet_url.startswith("https://storage.googleapis.com/")
            assert spec.imagenet_url.endswith("/" + spec.imagenet_file)
            assert spec.preprocess_input is not None
        else:
            assert spec.imagenet_file is None and spec.imagenet_url is None
            assert spec.preprocess_input is None
    # The native preprocessing of InceptionV3 maps [0, 255] to [-1, 1].
    scaled = get_net("inception_v3").preprocess_input(np.array([0.0, 255.0]))
    np.testing.assert_allclose(scaled, [-1.0, 1.0])


def test_small_cnn_backbone_has_the_studys_parameter_count():
    backbone = get_net("small_cnn").build_backbone((32, 32, 3), None)
    # convs 4,736 + 100,416 + 401,536 + 1,605,888; batch norm 4 x (32 + 64 + 128 + 256)
    assert backbone.count_params() == 2_114_496
    kinds = [type(layer).__name__ for layer in backbone.layers[1:]]
    assert kinds == ["Conv2D", "BatchNormalization", "MaxPooling2D"] * 4
    convs = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [conv.filters for conv in convs] == [32, 64, 128, 256]
    assert {(conv.kernel_size, conv.padding, conv.activation.__name__) for conv in convs} == {
        ((7, 7), "same", "relu")
    }


@pytest.mark.parametrize(
    ("name", "kernel", "filters", "last_layer"),
    [
        ("cbr_large_t", 7, [32, 64, 128, 256, 512], "ReLU"),
        ("cbr_large_w", 7, [64, 128, 256, 512], "MaxPooling2D"),
        ("cbr_small", 7, [32, 64, 128, 256], "MaxPooling2D"),
        ("cbr_tiny", 5, [64, 128, 256, 512], "MaxPooling2D"),
    ],
)
def test_cbr_nets_follow_transfusion(name, kernel, filters, last_layer):
    backbone = get_net(name).build_backbone((32, 32, 3), None)
    layers = backbone.layers[1:]
    convs = [layer for layer in layers if isinstance(layer, keras.layers.Conv2D)]
    pools = [layer for layer in layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert [conv.filters for conv in convs] == filters
    assert {(conv.kernel_size, conv.strides, conv.padding) for conv in convs} == {
        ((kernel, kernel), (1, 1), "same")
    }
    assert {(pool.pool_size, pool.strides) for pool in pools} == {((3, 3), (2, 2))}
    # Conv -> BN -> ReLU in every block; a pool after each block but LargeT's last.
    assert [type(layer).__name__ for layer in layers[:4]] == [
        "Conv2D",
        "BatchNormalization",
        "ReLU",
        "MaxPooling2D",
    ]
    assert len(pools) == 4
    assert type(layers[-1]).__name__ == last_layer


@pytest.mark.parametrize("name", ["small_cnn", "cbr_large_t", "cbr_tiny"])
def test_smallest_input_ends_in_a_one_by_one_map(name):
    spec = get_net(name)
    model = build_model(name, 2, spec.min_input_size, "glorot")
    assert get_backbone(model).output_shape[1:3] == (1, 1)


@pytest.mark.parametrize(
    ("name", "minimum", "default"), [("inception_v3", 75, 299), ("small_cnn", 16, 128)]
)
def test_input_below_the_minimum_fails_with_the_limits(name, minimum, default):
    with pytest.raises(MedtransferError) as error:
        build_model(name, 2, minimum - 1, "glorot")
    message = str(error.value)
    assert f"'{name}'" in message
    assert f"minimum is {minimum} px" in message
    assert f"default {default} px" in message


def test_unknown_net_suggests_the_closest():
    with pytest.raises(MedtransferError, match="Did you mean 'mobilenet'"):
        get_net("mobilnet")


def test_head_is_shared_and_the_backbone_nested():
    backbone = get_net("cbr_tiny").build_backbone((32, 32, 3), None)
    classifier = build_classifier(backbone, 4, head_units=16, dropout=0.25)
    assert get_backbone(classifier) is backbone
    assert backbone.name == "backbone"
    head = classifier.layers[2:]
    assert [type(layer).__name__ for layer in head] == [
        "GlobalAveragePooling2D",
        "Dense",
        "Dropout",
        "Dense",
    ]
    pool, hidden, dropout, output = head
    assert (hidden.units, hidden.activation.__name__) == (16, "relu")
    assert dropout.rate == 0.25
    assert (output.units, output.activation.__name__) == (4, "softmax")
    assert classifier.output_shape == (None, 4)


def test_output_stays_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model("small_cnn", 3, 32, "glorot")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert get_backbone(model).layers[1].compute_dtype == "float16"
    output = model(np.zeros((1, 32, 32, 3), dtype="float32"))
    assert keras.backend.standardize_dtype(output.dtype) == "float32"


def test_head_arguments_are_checked():
    backbone = get_net("small_cnn").build_backbone((32, 32, 3), None)
    with pytest.raises(MedtransferError, match="at least 2 classes"):
        build_classifier(backbone, 1)
    with pytest.raises(MedtransferError, match="dropout"):
        build_classifier(backbone, 2, dropout=1.0)


# --- ResNet-18/34 (He et al. 2016) and MedMNIST's ResNet-18 (28) --------------------------


def _stage_blocks(backbone):
    """Blocks per stage conv2..conv5, from the layer names."""
    outputs = [layer.name for layer in backbone.layers if layer.name.endswith("_out")]
    return [sum(name.startswith(f"conv{stage}_") for name in outputs) for stage in range(2, 6)]


@pytest.mark.parametrize(
    ("name", "blocks", "parameters"),
    [
        # torchvision's 11,689,512 and 21,797,672 less the 1000-class layer (513,000), plus
        # the moving mean and variance of every batch norm: 2 x 4,800 and 2 x 8,512 channels.
        ("resnet18", [2, 2, 2, 2], 11_186_112),
        ("resnet34", [3, 4, 6, 3], 21_301_696),
        # ResNet-18 with a 3x3 instead of a 7x7 stem: 64 x 3 x (49 - 9) = 7,680 fewer.
        ("resnet18_28", [2, 2, 2, 2], 11_178_432),
    ],
)
def test_resnets_follow_he_et_al(name, blocks, parameters):
    size = get_net(name).default_input_size
    backbone = get_net(name).build_backbone((size, size, 3), None)
    assert backbone.count_params() == parameters
    assert _stage_blocks(backbone) == blocks
    convs = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    assert not any(conv.use_bias for conv in convs)
    stem = backbone.get_layer("conv1_conv")
    pools = [layer for layer in backbone.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    if name == "resnet18_28":
        assert (stem.kernel_size, stem.strides) == ((3, 3), (1, 1)) and not pools
        assert backbone.output_shape == (None, 4, 4, 512)  # 28 -> 28, 14, 7, 4
    else:
        assert (stem.kernel_size, stem.strides) == ((7, 7), (2, 2))
        assert [(pool.pool_size, pool.strides) for pool in pools] == [((3, 3), (2, 2))]
        assert backbone.get_layer("pool1_pool").output.shape[1:] == (56, 56, 64)
        assert backbone.output_shape == (None, 7, 7, 512)
    # A 1x1 stride-2 projection with batch norm opens stages 3-5; the rest are identities.
    projections = [conv for conv in convs if conv.name.endswith("_0_conv")]
    assert [(conv.name, conv.kernel_size, conv.strides, conv.filters) for conv in projections] == [
        (f"conv{stage}_block1_0_conv", (1, 1), (2, 2), filters)
        for stage, filters in ((3, 128), (4, 256), (5, 512))
    ]
    for conv in projections:
        assert isinstance(backbone.get_layer(conv.name.replace("_conv", "_bn")),
                          keras.layers.BatchNormalization)
    widths = [conv.filters for conv in convs if conv.name.endswith("_2_conv")]
    stages = zip((64, 128, 256, 512), blocks, strict=True)
    assert widths == [filters for filters, count in stages for _ in range(count)]
