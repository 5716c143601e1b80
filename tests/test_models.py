"""The net registry, the nine backbones and the shared classifier head (issue #2, point 4)."""

import keras
import numpy as np
import pytest

from medtransfer.errors import MedtransferError
from medtransfer.models import NETS, build_classifier, build_model, get_backbone, get_net

NINE_NETS = [
    "inception_v3",
    "resnet50_v2",
    "densenet121",
    "mobilenet",
    "small_cnn",
    "cbr_large_t",
    "cbr_large_w",
    "cbr_small",
    "cbr_tiny",
]

# Backbone output (height, width, channels) at the test input: the Keras apps reduce a
# 32 px input (75 px for InceptionV3) to 1x1; small_cnn halves 4 times (32 -> 2); the CBR
# pools (3x3/2 'same') map s to ceil(s/2) four times (32 -> 2).
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
}


def test_registry_holds_the_nine_nets_of_the_design():
    assert NETS.names() == NINE_NETS


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
    }
    assert [spec.name for spec in NETS if spec.imagenet] == NINE_NETS[:4]
    assert get_net("mobilenet").imagenet_file == "mobilenet_1_0_224_tf_no_top.h5"
    assert get_net("inception_v3").imagenet_file == (
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
    )
    assert get_net("resnet50_v2").imagenet_file == (
        "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
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
