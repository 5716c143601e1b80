"""Inits glorot, imagenet, mean_var and a path, as DESIGN.md "Initialisation" (issue #2, 5).

Nothing is downloaded: ImageNet files are stood in for by weights saved from a model built
here, and the download is pointed at a local port that refuses or never answers.
"""

import dataclasses
import socket
import threading
import time

import h5py
import keras
import numpy as np
import pytest
import yaml

import medtransfer.models.init as init_module
from medtransfer.errors import MedtransferError
from medtransfer.models import (
    build_classifier,
    build_model,
    get_backbone,
    get_net,
    resample_mean_var,
    resolve_imagenet_weights,
)
from medtransfer.models.classifier import OUTPUT_LAYER


def _values(model):
    return [keras.ops.convert_to_numpy(w).copy() for w in model.weights]


def _assert_same(model, values):
    assert len(model.weights) == len(values)
    for weight, value in zip(model.weights, values, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(weight), value, err_msg=weight.path
        )


def _scramble(model, seed=1):
    """Gives each tensor its own mean and spread, so that loading and resampling show."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        value = rng.normal(rng.uniform(-1, 1), rng.uniform(0.1, 1.0), size=weight.shape)
        if "moving_variance" in weight.path:
            value = np.abs(value) + 0.1
        weight.assign(value.astype("float32"))
    return model


@pytest.fixture(scope="module")
def mobilenet_source():
    """A MobileNet backbone at 32 px with scrambled weights: the stand-in ImageNet weights."""
    return _scramble(get_net("mobilenet").build_backbone((32, 32, 3), None))


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


def _must_not_download(*args, **kwargs):
    raise AssertionError("a test tried to download")


def test_glorot_is_reproducible_from_the_keras_seed():
    keras.utils.set_random_seed(7)
    first = _values(build_model("small_cnn", 2, 32, "glorot"))
    keras.utils.set_random_seed(7)
    _assert_same(build_model("small_cnn", 2, 32, "glorot"), first)
    keras.utils.set_random_seed(8)
    other = _values(build_model("small_cnn", 2, 32, "glorot"))
    assert not np.array_equal(first[0], other[0])


def test_glorot_refuses_a_weights_file(tmp_path):
    with pytest.raises(MedtransferError, match="--weights-file"):
        build_model("small_cnn", 2, 32, "glorot", weights_file=tmp_path / "x.weights.h5")


def test_imagenet_loads_the_weights_file(tmp_path, mobilenet_source, keras_home, monkeypatch):
    monkeypatch.setattr(keras.utils, "get_file", _must_not_download)
    file = tmp_path / "mobilenet_backbone.weights.h5"
    mobilenet_source.save_weights(file)

    model = build_model("mobilenet", 3, 32, "imagenet", weights_file=file)

    _assert_same(get_backbone(model), _values(mobilenet_source))


def test_imagenet_finds_the_file_in_the_keras_cache(mobilenet_source, keras_home, monkeypatch):
    monkeypatch.setattr(keras.utils, "get_file", _must_not_download)
    spec = get_net("mobilenet")
    cached = keras_home / "models" / "mobilenet_1_0_224_tf_no_top.h5"
    cached.parent.mkdir()
    # The Keras ImageNet files are legacy HDF5 (Keras 2), which model.save writes for '.h5'.
    mobilenet_source.save(cached)

    assert resolve_imagenet_weights(spec) == cached
    model = build_model("mobilenet", 3, 32, "imagenet")

    _assert_same(get_backbone(model), _values(mobilenet_source))


def test_imagenet_reads_the_layout_of_the_published_keras_files(
    mobilenet_source, keras_home, monkeypatch
):
    # The files Keras publishes hold the weights at the HDF5 root ('layer_names' and one
    # group per layer), as Keras 2's save_weights_to_hdf5_group wrote them; model.save
    # nests them under 'model_weights' instead, so both layouts are tested.
    from keras.src.legacy.saving import legacy_h5_format

    monkeypatch.setattr(keras.utils, "get_file", _must_not_download)
    cached = keras_home / "models" / "mobilenet_1_0_224_tf_no_top.h5"
    cached.parent.mkdir()
    with h5py.File(cached, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, mobilenet_source)
    with h5py.File(cached) as file:
        assert "layer_names" in file.attrs and "model_weights" not in file

    model = build_model("mobilenet", 3, 32, "imagenet")

    _assert_same(get_backbone(model), _values(mobilenet_source))


def test_resnet50_takes_its_imagenet_file_from_the_keras_cache(keras_home, monkeypatch):
    # Transfusion's net: the same lookup as every keras app, under its own file name, in
    # the layout of the published files.
    from keras.src.legacy.saving import legacy_h5_format

    monkeypatch.setattr(keras.utils, "get_file", _must_not_download)
    source = _scramble(get_net("resnet50").build_backbone((32, 32, 3), None))
    cached = keras_home / "models" / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    cached.parent.mkdir()
    with h5py.File(cached, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, source)

    model = build_model("resnet50", 3, 32, "imagenet")

    _assert_same(get_backbone(model), _values(source))


def _closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_imagenet_offline_without_file_names_file_cache_and_flag(keras_home):
    spec = get_net("mobilenet")
    url = f"http://127.0.0.1:{_closed_port()}/mobilenet/{spec.imagenet_file}"
    offline = dataclasses.replace(spec, imagenet_url=url)

    with pytest.raises(MedtransferError) as error:
        resolve_imagenet_weights(offline)

    message = str(error.value)
    assert "'mobilenet_1_0_224_tf_no_top.h5'" in message
    assert str(keras_home / "models") in message
    assert url in message
    assert "--weights-file PATH" in message


def test_a_silent_server_fails_within_the_download_timeout(keras_home, monkeypatch):
    monkeypatch.setattr(init_module, "DOWNLOAD_TIMEOUT_SECONDS", 0.5)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)  # connections complete in the kernel; nothing ever answers
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    spec = get_net("mobilenet")
    url = f"http://127.0.0.1:{server.getsockname()[1]}/{spec.imagenet_file}"
    previous_timeout = socket.getdefaulttimeout()
    start = time.monotonic()
    try:
        with pytest.raises(MedtransferError, match="could not be downloaded"):
            resolve_imagenet_weights(dataclasses.replace(spec, imagenet_url=url))
    finally:
        server.close()
    assert time.monotonic() - start < 5
    assert socket.getdefaulttimeout() == previous_timeout


def test_imagenet_weights_file_that_does_not_exist_is_named(tmp_path):
    missing = tmp_path / "nowhere.h5"
    with pytest.raises(MedtransferError, match=f"--weights-file {missing} does not exist"):
        build_model("mobilenet", 2, 32, "imagenet", weights_file=missing)


@pytest.mark.parametrize("init", ["imagenet", "mean_var"])
@pytest.mark.parametrize("net", ["small_cnn", "cbr_tiny", "resnet18"])
def test_nets_without_imagenet_weights_say_which_have_them(net, init):
    with pytest.raises(MedtransferError) as error:
        build_model(net, 2, 32, init)
    assert f"'{net}' has no ImageNet weights" in str(error.value)
    assert "inception_v3, resnet50_v2, densenet121, mobilenet" in str(error.value)


def test_mean_var_keeps_each_tensors_mean_and_std_but_not_its_values(tmp_path, mobilenet_source):
    file = tmp_path / "imagenet.weights.h5"
    mobilenet_source.save_weights(file)

    backbone = get_backbone(build_model("mobilenet", 3, 32, "mean_var", weights_file=file, seed=3))

    statistics = 0
    for source, weight in zip(mobilenet_source.weights, backbone.weights, strict=True):
        value = keras.ops.convert_to_numpy(weight).astype(np.float64)
        if "moving_mean" in weight.path or "moving_variance" in weight.path:
            expected = 0.0 if "moving_mean" in weight.path else 1.0
            np.testing.assert_array_equal(value, expected)
            statistics += 1
            continue
        original = keras.ops.convert_to_numpy(source).astype(np.float64)
        n, mean, std = original.size, original.mean(), original.std()
        # Sampling error of the mean is std / sqrt(n), of the std about std / sqrt(2n).
        assert abs(value.mean() - mean) < 5 * std / np.sqrt(n), weight.path
        assert abs(value.std() - std) < 5 * std / np.sqrt(2 * n), weight.path
        assert not np.any(np.isclose(value, original, rtol=0, atol=1e-7)), weight.path
    assert statistics == 2 * 27  # MobileNet has 27 BatchNorm layers


def test_mean_var_is_seeded(mobilenet_source):
    def resampled(seed):
        backbone = get_net("mobilenet").build_backbone((32, 32, 3), None)
        backbone.set_weights(mobilenet_source.get_weights())
        resample_mean_var(backbone, seed)
        return _values(backbone)

    first = resampled(0)
    assert all(np.array_equal(a, b) for a, b in zip(first, resampled(0), strict=True))
    assert not np.array_equal(first[0], resampled(1)[0])


def _finished_run(run_dir, net, num_classes, image_size=32):
    """A run directory as training leaves it: config.yaml and best.weights.h5."""
    keras.utils.set_random_seed(11)
    classifier = build_classifier(
        _scramble(get_net(net).build_backbone((image_size, image_size, 3), None)), num_classes
    )
    _scramble(classifier, seed=2)
    run_dir.mkdir()
    config = {"net": net, "image_size": image_size, "num_classes": num_classes, "init": "glorot"}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    classifier.save_weights(run_dir / "best.weights.h5")
    return classifier


def test_path_to_a_run_of_the_same_task_loads_backbone_and_head(tmp_path):
    saved = _finished_run(tmp_path / "run", "small_cnn", 3)

    model = build_model("small_cnn", 3, 32, str(tmp_path / "run"), transfer_head=True)

    _assert_same(model, _values(saved))


def test_path_to_a_run_of_another_task_with_as_many_classes_gets_a_new_head(tmp_path):
    saved = _finished_run(tmp_path / "run", "small_cnn", 3)

    model = build_model("small_cnn", 3, 32, str(tmp_path / "run"))

    _assert_same(get_backbone(model), _values(get_backbone(saved)))
    saved_hidden = keras.ops.convert_to_numpy(saved.get_layer("head_dense").kernel)
    assert not np.array_equal(saved_hidden, model.get_layer("head_dense").kernel)
    # The new output layer is zero: a uniform guess on any image, whatever its features.
    output = model.get_layer(OUTPUT_LAYER)
    assert not np.any(keras.ops.convert_to_numpy(output.kernel))
    assert not np.any(keras.ops.convert_to_numpy(output.bias))
    images = np.random.default_rng(0).uniform(size=(4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(images)), 1 / 3, rtol=1e-6)


def test_transferring_a_head_that_does_not_fit_fails_naming_the_tensor(tmp_path):
    _finished_run(tmp_path / "run", "small_cnn", 3)
    with pytest.raises(MedtransferError) as error:
        build_model("small_cnn", 4, 32, str(tmp_path / "run"), transfer_head=True)
    assert "shape (256, 3) in the file, the net expects (256, 4)" in str(error.value)


def test_path_to_a_run_with_other_classes_loads_the_backbone_only(tmp_path):
    saved = _finished_run(tmp_path / "run", "small_cnn", 3)

    model = build_model("small_cnn", 5, 48, str(tmp_path / "run"))

    _assert_same(get_backbone(model), _values(get_backbone(saved)))
    assert model.output_shape == (None, 5)
    saved_hidden = keras.ops.convert_to_numpy(saved.get_layer("head_dense").kernel)
    new_hidden = keras.ops.convert_to_numpy(model.get_layer("head_dense").kernel)
    assert not np.array_equal(saved_hidden, new_hidden)


def test_path_to_a_run_of_another_net_fails_naming_it(tmp_path):
    _finished_run(tmp_path / "run", "cbr_tiny", 3)
    with pytest.raises(MedtransferError, match="saved from net 'cbr_tiny', not 'small_cnn'"):
        build_model("small_cnn", 3, 32, str(tmp_path / "run"))


def test_path_to_a_classifier_weights_file_loads_its_backbone(tmp_path):
    saved = _finished_run(tmp_path / "run", "cbr_small", 2)
    model = build_model("cbr_small", 4, 32, str(tmp_path / "run" / "best.weights.h5"))
    _assert_same(get_backbone(model), _values(get_backbone(saved)))


def test_path_to_a_backbone_weights_file_loads_it(tmp_path):
    source = _scramble(get_net("cbr_tiny").build_backbone((32, 32, 3), None))
    file = tmp_path / "tiny_backbone.weights.h5"
    source.save_weights(file)

    model = build_model("cbr_tiny", 2, 64, str(file))

    _assert_same(get_backbone(model), _values(source))


def test_weights_with_other_layer_shapes_fail_before_training(tmp_path):
    # cbr_large_w and cbr_tiny have the same layers and widths; only the kernels differ.
    file = tmp_path / "large_w.weights.h5"
    get_net("cbr_large_w").build_backbone((32, 32, 3), None).save_weights(file)

    with pytest.raises(MedtransferError) as error:
        build_model("cbr_tiny", 2, 32, str(file))

    message = str(error.value)
    assert str(file) in message and "'cbr_tiny'" in message
    assert "shape (7, 7, 3, 64) in the file, the net expects (5, 5, 3, 64)" in message


def test_weights_of_another_net_fail_before_training(tmp_path):
    saved = _finished_run(tmp_path / "run", "small_cnn", 3)
    file = tmp_path / "small_cnn_classifier.weights.h5"
    saved.save_weights(file)

    with pytest.raises(MedtransferError) as error:
        build_model("cbr_small", 3, 32, str(file))

    message = str(error.value)
    assert str(file) in message
    # small_cnn's convolutions have biases, CBR's do not.
    assert "the file holds 24 weight tensors, the net expects 20" in message


def test_imagenet_file_of_another_net_fails_naming_the_file(tmp_path, mobilenet_source):
    file = tmp_path / "mobilenet.weights.h5"
    mobilenet_source.save_weights(file)
    with pytest.raises(MedtransferError, match=f"Weights file {file} does not fit net 'cbr_tiny'"):
        get_net("cbr_tiny").build_backbone((32, 32, 3), file)


def test_legacy_h5_of_another_net_fails_naming_the_file(tmp_path):
    file = tmp_path / "small_cnn_no_top.h5"
    get_net("small_cnn").build_backbone((32, 32, 3), None).save(file)
    with pytest.raises(MedtransferError) as error:
        build_model("cbr_tiny", 2, 32, "imagenet", weights_file=file)
    assert "'cbr_tiny' has no ImageNet weights" in str(error.value)
    with pytest.raises(MedtransferError) as error:
        build_model("cbr_tiny", 2, 32, str(file))
    message = str(error.value)
    assert f"Weights file {file} does not fit net 'cbr_tiny'" in message
    assert ".." not in message


def test_unknown_init_suggests_the_closest_and_paths():
    with pytest.raises(MedtransferError) as error:
        build_model("small_cnn", 2, 32, "imagnet")
    message = str(error.value)
    assert "Did you mean 'imagenet'?" in message
    assert "glorot, imagenet, mean_var" in message
    assert "path to an earlier run directory or a weights file" in message


def test_a_directory_that_is_not_a_run_fails(tmp_path):
    with pytest.raises(MedtransferError, match="no config.yaml"):
        build_model("small_cnn", 2, 32, str(tmp_path))


def test_path_and_mean_var_inits_work_inside_a_mirrored_strategy(tmp_path, mobilenet_source):
    # Training builds the model inside the strategy scope (DESIGN.md "Scale").
    import tensorflow as tf

    saved = _finished_run(tmp_path / "run", "cbr_tiny", 3)
    imagenet = tmp_path / "imagenet.weights.h5"
    mobilenet_source.save_weights(imagenet)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        transferred = build_model("cbr_tiny", 3, 32, str(tmp_path / "run"), transfer_head=True)
        resampled = build_model("mobilenet", 3, 32, "mean_var", weights_file=imagenet, seed=3)
    _assert_same(transferred, _values(saved))
    moving_means = [w for w in get_backbone(resampled).weights if "moving_mean" in w.path]
    assert all(not np.any(keras.ops.convert_to_numpy(w)) for w in moving_means)
