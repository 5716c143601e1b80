"""The config schema: parsing, precedence and the errors a user sees."""

import json

import pytest
import yaml

from medtransfer.config import (
    RunConfig,
    config_from_mapping,
    load_config_file,
    parse_epochs,
    parse_size,
    save_config,
)
from medtransfer.errors import MedtransferError


@pytest.mark.parametrize(
    "text, expected", [("3+50", (3, 50)), ("0+1", (0, 1)), (" 2 + 0 ", (2, 0))]
)
def test_parse_epochs(text, expected):
    assert parse_epochs(text) == expected


@pytest.mark.parametrize("text", ["50", "3+", "+5", "a+b", "3+50+1", "-1+5", "0+0"])
def test_malformed_epochs_fail_with_the_form(text):
    with pytest.raises(MedtransferError, match="W\\+E|no epoch"):
        parse_epochs(text)


def test_defaults_follow_the_study():
    config = RunConfig()
    assert (config.warmup_epochs, config.finetune_epochs) == (3, 50)
    assert config.freeze == 0.0 and config.init == "glorot" and config.scaling == "unit"


def test_run_id_and_run_dir():
    config = RunConfig(dataset="cancer", net="mobilenet", init="imagenet", freeze=0.3, seed=7,
                       experiment="study", logdir="logs")
    assert config.run_id == "cancer-mobilenet-imagenet-f0.30-s7"
    assert str(config.run_dir) == "logs/study/cancer-mobilenet-imagenet-f0.30-s7"
    transfer = config.replace(init="/runs/cancer-x/best.weights.h5")
    assert transfer.run_id.startswith("cancer-mobilenet-from_cancer-x_")
    assert transfer.run_id.endswith("-f0.30-s7")


@pytest.mark.parametrize("size, expected", [("4GiB", 4 * 1024**3), ("512M", 512 * 1024**2),
                                            ("0", 0), ("1.5K", 1536), (1000, 1000)])
def test_parse_size(size, expected):
    assert parse_size(size, "cache_limit") == expected


def test_unknown_key_names_it_with_did_you_mean():
    with pytest.raises(MedtransferError, match="'fereeze'.*Did you mean 'freeze'"):
        config_from_mapping({"fereeze": 0.5})


@pytest.mark.parametrize("key, value, words", [
    ("freeze", "half", "must be a number"),
    ("batch_size", 3.5, "must be a whole number"),
    ("augment", "yes", "true or false"),
    ("freeze", 1.5, "outside \\[0, 1\\]"),
    ("epochs", "fifty", "W\\+E"),
    ("scaling", "zscore", "Valid scalings: unit, native"),
    ("strategy", "mirored", "Did you mean 'mirrored'"),
    ("lr", -1.0, "positive"),
    ("batch_size", 0, "≥ 1"),
])
def test_bad_values_are_named(key, value, words):
    with pytest.raises(MedtransferError, match=words):
        config_from_mapping({key: value})


def test_yaml_file_then_flags_win(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("net: cbr_tiny\nfreeze: 0.5\nepochs: 1+2\n")
    config = load_config_file(path)
    assert (config.net, config.freeze, config.epochs) == ("cbr_tiny", 0.5, "1+2")
    config = config_from_mapping({"freeze": 0.1}, base=config)
    assert (config.net, config.freeze) == ("cbr_tiny", 0.1)


def test_a_config_on_standard_input_reads_as_the_file_would(monkeypatch):
    # As a sweep hands each run its config (``run --config -``): what its file would hold.
    import io

    from medtransfer.study.launch import config_text

    config = RunConfig(net="cbr_tiny", freeze=0.5, epochs="1+2", classes=("3", "5"))
    monkeypatch.setattr("sys.stdin", io.StringIO(config_text(config)))
    assert load_config_file("-") == config
    monkeypatch.setattr("sys.stdin", io.StringIO("- a\n"))
    with pytest.raises(MedtransferError, match="The config on standard input must hold a map"):
        load_config_file("-")
    monkeypatch.setattr("sys.stdin", io.StringIO("freeze: 2\n"))
    with pytest.raises(MedtransferError, match="^In standard input: "):
        load_config_file("-")


def test_saved_config_loads_back_identically(tmp_path):
    config = RunConfig(net="cbr_small", freeze=0.75, lr=1e-4, image_size=64, num_classes=5)
    save_config(config, tmp_path / "config.yaml")
    assert load_config_file(tmp_path / "config.yaml") == config
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["net"] == "cbr_small"


@pytest.mark.parametrize("content, words", [
    ("net: [unclosed", "not valid YAML"),
    ("- a\n- b\n", "must hold a mapping"),
    ("experiment: x\ngrid: {net: [small_cnn]}\n", "is a sweep file"),
])
def test_bad_yaml_files(tmp_path, content, words):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(MedtransferError, match=words):
        load_config_file(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(MedtransferError, match="does not exist"):
        load_config_file(tmp_path / "nope.yaml")


def test_learning_rate_defaults_are_the_studys():
    from medtransfer.data.registry import get_dataset

    study = {"cancer": 1e-5, "retina": 1e-4, "proteins": 1e-4, "cats_vs_dogs": 1e-5}
    assert {name: get_dataset(name).default_lr for name in study} == study


@pytest.mark.parametrize("value", [[5, 6, 9], ["5", "6", "9"], "5,6,9", " 5, 6 ,9"])
def test_classes_come_as_a_yaml_list_or_a_comma_list(value):
    config = config_from_mapping({"classes": value})
    assert config.classes == ("5", "6", "9")
    assert config.run_id == "digits-small_cnn-glorot-f0.00-s0-classes=5,6,9"


def test_classes_are_saved_as_a_list_and_load_back(tmp_path):
    config = RunConfig(classes=("grade 0", "grade 4"))
    save_config(config, tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["classes"] == [
        "grade 0", "grade 4"]
    assert load_config_file(tmp_path / "config.yaml") == config
    # Not file-name-safe: a hash, different for another subset.
    assert config.run_id.startswith("digits-small_cnn-glorot-f0.00-s0-classes~")
    assert RunConfig(classes=("grade 0", "grade 3")).run_id != config.run_id


@pytest.mark.parametrize("value, words", [
    (["3"], "fewer than two"), (["3", "4", "3"], "names 3 more than once"),
    (["3", ""], "empty name"), ({"a": 1}, "a list of names"), ([True, 1], "a list of names"),
])
def test_bad_classes_are_named(value, words):
    with pytest.raises(MedtransferError, match=words):
        config_from_mapping({"classes": value})


def test_a_class_the_dataset_does_not_have_fails_with_did_you_mean(digits_data_dir):
    from medtransfer.training.resolve import resolve_config

    config = RunConfig(classes=("1", "x9"), data_dir=str(digits_data_dir))
    with pytest.raises(MedtransferError, match="class name 'x9'. Did you mean '9'") as error:
        resolve_config(config)
    assert "class names of dataset 'digits'" in str(error.value)
    resolved, _ = resolve_config(config.replace(classes=("9", "1")))
    assert resolved.num_classes == 2


def _manifest_with_images(data_dir, name, side):
    folder = data_dir / name
    folder.mkdir(parents=True)
    sizes = {"min_height": side // 2, "max_height": side, "min_width": side, "max_width": side}
    (folder / "manifest.json").write_text(json.dumps({"layout": "folder",
                                                      "image_size": sizes}))


@pytest.mark.parametrize("dataset, side, net, expected", [
    # digits, 8x8 (known before it is prepared): 4 x 8 = 32, or the net's smallest input.
    ("digits", None, "small_cnn", 32),
    ("digits", None, "inception_v3", 75),
    ("digits", None, "mobilenet", 32),
    ("digits", None, "cbr_tiny", 32),
    # A 28 px MedMNIST-like folder: 4 x 28 = 112 for every net.
    ("tiny", 28, "small_cnn", 112),
    ("tiny", 28, "inception_v3", 112),
    # 4 px images: the floor, 32.
    ("specks", 4, "resnet50_v2", 32),
    # The study's smallest images (cancer, 96 px): 384 caps no net's default.
    ("patches", 96, "inception_v3", 299),
    ("patches", 96, "small_cnn", 128),
    # Not prepared, size unknown: the net's default.
    ("cancer", None, "densenet121", 224),
])
def test_default_input_size_fits_the_images(tmp_path, dataset, side, net, expected):
    from medtransfer.config import default_image_size

    if side is not None:
        _manifest_with_images(tmp_path, dataset, side)
    assert default_image_size(net, dataset, tmp_path) == expected
    # The default is part of the identity: stating it gives the same run id.
    config = RunConfig(dataset=dataset, net=net, data_dir=str(tmp_path))
    assert config.replace(image_size=expected).run_id == config.run_id
    assert "-px" not in config.run_id


def test_image_size_wins_over_the_fitted_default(digits_data_dir):
    from medtransfer.training.resolve import resolve_config

    config = RunConfig(dataset="digits", net="small_cnn", data_dir=str(digits_data_dir))
    assert resolve_config(config)[0].image_size == 32
    chosen = resolve_config(config.replace(image_size=128))[0]
    assert chosen.image_size == 128 and chosen.run_id.endswith("-px128")
