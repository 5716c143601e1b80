"""Run identity: one run directory per configuration, and reproducing a run beside it."""

import dataclasses
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from medtransfer.config import (
    FIELDS,
    NOT_IDENTITY,
    RUN_ID_MAX_LENGTH,
    RunConfig,
    identity_differences,
    resolved_defaults,
    save_config,
)
from medtransfer.errors import MedtransferError
from medtransfer.fileio import read_json

STUDY_FREEZES = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


def test_defaults_keep_the_study_ids():
    assert RunConfig().run_id == "digits-small_cnn-glorot-f0.00-s0"
    # Stating the dataset's and net's defaults is the same configuration as leaving them out
    # (small_cnn's 128 px capped to 4 x 8 = 32 on 8x8 digits).
    explicit = RunConfig(lr=1e-3, image_size=32, flips=False, noise=True, color=False,
                         epochs=" 3 + 50 ", batch_size=32, augment=True)
    assert explicit.run_id == "digits-small_cnn-glorot-f0.00-s0"
    ids = [RunConfig(dataset="cancer", net="inception_v3", init="imagenet", freeze=freeze,
                     lr=1e-5, image_size=299).run_id for freeze in STUDY_FREEZES]
    assert ids == [f"cancer-inception_v3-imagenet-f{freeze:.2f}-s0" for freeze in STUDY_FREEZES]


def test_a_sweep_gives_distinct_readable_ids():
    base = "digits-small_cnn-glorot-f0.00-s0"
    assert RunConfig(lr=5e-4).run_id == base + "-lr0.0005"
    assert RunConfig(lr=1e-4).run_id == base + "-lr0.0001"
    assert RunConfig(train_size=200).run_id == base + "-ts200"
    assert RunConfig(train_size=400).run_id == base + "-ts400"
    demo = RunConfig(epochs="1+3", lr=5e-4, batch_size=8, image_size=16, train_size=100)
    assert demo.run_id == base + "-e1+3-lr0.0005-bs8-px16-ts100"
    assert RunConfig(freeze=0.125).run_id == "digits-small_cnn-glorot-f0.125-s0"
    assert RunConfig(freeze=0.12).run_id == "digits-small_cnn-glorot-f0.12-s0"
    assert RunConfig(scaling="native", dropout=0.2).run_id == base + "-scaling=native-dropout=0.2"


def _another_value(name: str, default):
    """A value of field ``name``'s type that differs from its resolved default."""
    special = {"epochs": "1+1", "init": "imagenet", "dataset": "cancer", "net": "cbr_tiny"}
    if name in special:
        return special[name]
    annotation = typing.get_type_hints(RunConfig)[name]
    kind = next(a for a in typing.get_args(annotation) or (annotation,) if a is not type(None))
    if kind is bool:
        return not default
    if kind is int:
        return (default or 0) + 7
    if kind is float:
        return (default or 0.0) + 0.25
    return f"{default or 'value'}2"


@pytest.mark.parametrize("name", [name for name in FIELDS if name not in NOT_IDENTITY])
def test_every_field_that_changes_the_result_changes_the_id(name):
    # A field added to RunConfig is identity unless NOT_IDENTITY names it, so this test
    # covers it without being told.
    config = RunConfig()
    value = _another_value(name, getattr(resolved_defaults(config), name))
    changed = config.replace(**{name: value})
    assert changed.run_id != config.run_id
    # Another dataset or net also brings its own default learning rate or input size.
    assert name in identity_differences(config, changed)


@pytest.mark.parametrize("name", sorted(NOT_IDENTITY))
def test_fields_that_do_not_change_the_result_keep_the_id(name):
    config = RunConfig()
    changed = config.replace(**{name: _another_value(name, getattr(config, name))})
    assert changed.run_id == config.run_id
    assert identity_differences(config, changed) == {}


def test_a_long_id_hashes_the_rarely_changed_fields():
    config = RunConfig(epochs="2+20", lr=3e-4, batch_size=16, image_size=64, train_size=500,
                       scaling="native", augment=False, flips=True, noise=False,
                       mixed_precision=True, head_units=1024, dropout=0.123456789)
    other = config.replace(head_units=1023)
    assert len(config.run_id) <= RUN_ID_MAX_LENGTH
    prefix = "digits-small_cnn-glorot-f0.00-s0-e2+20-lr0.0003-bs16-px64-ts500-cfg~"
    assert config.run_id.startswith(prefix) and other.run_id.startswith(prefix)
    assert config.run_id != other.run_id


def test_path_inits_are_readable_and_distinct(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = RunConfig(init="logs/a/digits-small_cnn-glorot-f0.00-s0/best.weights.h5")
    second = RunConfig(init="logs/b/digits-small_cnn-glorot-f0.00-s0/best.weights.h5")
    run_dir = RunConfig(init="logs/a/digits-small_cnn-glorot-f0.00-s0")
    stem = RunConfig(init="pretrained/backbone.weights.h5")
    assert first.run_id.startswith("digits-small_cnn-from_digits-small_cnn-glorot-f0.00-s0_")
    assert first.run_id.endswith("-f0.00-s0")
    assert stem.run_id.startswith("digits-small_cnn-from_backbone_")
    assert len({first.run_id, second.run_id, run_dir.run_id, stem.run_id}) == 4
    # A long source name loses whole fields, never part of one (issue #25: it ended
    # "-ts20_<hash>" for a source trained on 200 images).
    long = RunConfig(init="logs/a/digits-small_cnn-glorot-f0.00-s0-e1+2-px128-ts200")
    label = long.run_id.removeprefix("digits-small_cnn-").removesuffix("-f0.00-s0")
    assert label.startswith("from_digits-small_cnn-glorot-f0.00-s0-e1+2-px128_")
    assert len(label.removeprefix("from_").rsplit("_", 1)[0]) <= 48
    assert len(label.rsplit("_", 1)[1]) == 6
    # The same file named relatively or absolutely is one init.
    absolute = first.replace(init=str(tmp_path / first.init))
    assert absolute.run_id == first.run_id
    assert identity_differences(first, absolute) == {}


def _tiny(data_dir, **changes) -> RunConfig:
    return RunConfig(dataset="digits", net="small_cnn", epochs="0+1", image_size=16,
                     batch_size=16, train_size=80, lr=5e-4, data_dir=str(data_dir),
                     experiment="exp", logdir="logs").replace(**changes)


@pytest.fixture(scope="module")
def project(tmp_path_factory, digits_data_dir):
    """A finished run trained from a project folder with relative data_dir and logdir."""
    from medtransfer.training.run import run_experiment

    root = tmp_path_factory.mktemp("project")
    (root / "datasets").symlink_to(digits_data_dir)
    previous = Path.cwd()
    os.chdir(root)
    try:
        result = run_experiment(_tiny("datasets"))
    finally:
        os.chdir(previous)
    return root, result


def test_config_yaml_holds_absolute_paths(project):
    root, result = project
    run_id = "digits-small_cnn-glorot-f0.00-s0-e0+1-lr0.0005-bs16-px16-ts80"
    assert result.run_dir == root / "logs" / "exp" / run_id
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert (saved["data_dir"], saved["logdir"]) == (str(root / "datasets"), str(root / "logs"))


def test_the_same_configuration_skips_however_it_is_spelled(project, monkeypatch):
    from medtransfer.training.run import run_experiment

    root, result = project
    monkeypatch.chdir(root)
    # Absolute instead of relative paths, another cache, the epochs spaced out: one run.
    again = run_experiment(_tiny(root / "datasets", logdir=str(root / "logs"),
                                 cache_limit="0", epochs=" 0 + 1", strategy="default"))
    assert again.skipped and again.run_dir == result.run_dir


def test_another_configuration_is_refused_and_overwrite_trains_afresh(project, monkeypatch):
    from medtransfer.training.run import run_experiment

    root, _ = project
    monkeypatch.chdir(root)
    config = _tiny("datasets", seed=1)
    # A directory trained under the old run ids, which ignored lr and epochs.
    stale = Path(config.replace(logdir=str(root / "logs")).run_dir)
    stale.mkdir(parents=True)
    save_config(config.replace(lr=0.01, epochs="0+2", data_dir=str(root / "datasets")),
                stale / "config.yaml")
    (stale / "metrics.json").write_text('{"status": "complete", "test_auc_micro": 0.5}')
    with pytest.raises(MedtransferError) as error:
        run_experiment(config)
    message = str(error.value)
    assert "epochs: '0+2' there, '0+1' now" in message
    assert "lr: 0.01 there, 0.0005 now" in message
    assert "--overwrite" in message and "\n" not in message
    assert "data_dir" not in message  # relative now, absolute then: the same dataset

    result = run_experiment(config, overwrite=True)
    assert not result.skipped and result.run_dir == stale
    assert read_json(stale / "metrics.json")["status"] == "complete"
    assert yaml.safe_load((stale / "config.yaml").read_text())["epochs"] == "0+1"


@pytest.mark.slow
def test_reproduce_from_another_directory(project, tmp_path):
    root, result = project
    original_metrics = (result.run_dir / "metrics.json").read_bytes()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]),
           "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    completed = subprocess.run(
        [sys.executable, "-m", "medtransfer", "reproduce", str(result.run_dir)],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    copy = root / "logs" / "exp-repro" / result.run_dir.name
    copy_metrics = read_json(copy / "metrics.json")
    assert copy_metrics["status"] == "complete"
    lines = completed.stdout.splitlines()
    original_row = next(line for line in lines if line.startswith("original "))
    copy_row = next(line for line in lines if line.startswith("reproduction "))
    assert f"{result.metrics['test_auc_micro']:.4f}" in original_row
    assert f"{copy_metrics['test_auc_micro']:.4f}" in copy_row
    assert f"reproduction: {copy}" in completed.stdout
    assert (result.run_dir / "metrics.json").read_bytes() == original_metrics
    assert list(elsewhere.iterdir()) == []


def test_a_relative_path_that_is_missing_names_the_working_directory(project, tmp_path,
                                                                    monkeypatch):
    from medtransfer.training.reproduce import reproduce_run

    root, result = project
    old = tmp_path / "logs" / "exp" / "old-run"
    old.mkdir(parents=True)
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    for changes, words in (
        ({"dataset": "mydigits", "data_dir": "datasets"}, "Unknown dataset 'mydigits'"),
        ({"init": "runs/source"}, "--init runs/source does not exist"),
    ):
        (old / "config.yaml").write_text(yaml.safe_dump({**saved, **changes}))
        with pytest.raises(MedtransferError, match=words) as error:
            reproduce_run(old)
        assert f"relative to the working directory {tmp_path}" in str(error.value)
    assert not (tmp_path / "logs" / "exp-repro").exists()


def test_not_identity_names_only_fields():
    assert set(NOT_IDENTITY) <= {field.name for field in dataclasses.fields(RunConfig)}
