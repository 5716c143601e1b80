"""Every bad input the CLI and ``prepare`` handle: its exit code, its words, no traceback.

One table, one parametrised test. Each case runs the real command line in-process
(``medtransfer.cli.main``) and must fail before anything trains, with a one-paragraph
message holding every listed word (case-insensitive substring, or a regex) and exit code
2. A few representative cases also run as real subprocesses (``python -m medtransfer``)
to check the exit status and stderr a user sees.
"""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.error
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pytest
from layouts import write_folder

from medtransfer.cli import main


@dataclass
class Context:
    """What a case's setup may use: a fresh folder, the prepared digits, monkeypatch."""

    tmp: Path
    data: Path
    monkeypatch: pytest.MonkeyPatch

    def expand(self, text: str) -> str:
        return text.replace("{tmp}", str(self.tmp)).replace("{data}", str(self.data))


Argv = Sequence[str] | Callable[[Context], list[str]]


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        id: the test id.
        argv: the arguments after ``medtransfer`` (``{tmp}`` and ``{data}`` are filled in),
            or a setup function that writes what the case needs and returns them.
        words: what the message must contain: case-insensitive substrings (with ``{tmp}``
            filled in) or compiled regexes.
        code: the exit code.
        after: an extra check on what the failed command left behind.
    """

    id: str
    argv: Argv
    words: Sequence[str | re.Pattern]
    code: int = 2
    after: Callable[[Context], None] | None = None


def run(*args: str) -> Callable[[Context], list[str]]:
    """``medtransfer run`` on the prepared digits, logging under the case's folder."""
    return lambda ctx: ["run", "--data-dir", str(ctx.data), "--logdir", str(ctx.tmp / "logs"),
                        "--experiment", "bad", *map(ctx.expand, args)]


def run_with_config(content: str, *args: str) -> Callable[[Context], list[str]]:
    def setup(ctx: Context) -> list[str]:
        (ctx.tmp / "run.yaml").write_text(content)
        return run("--config", "{tmp}/run.yaml", *args)(ctx)
    return setup


def prepare(*args: str) -> Callable[[Context], list[str]]:
    return lambda ctx: ["prepare", *map(ctx.expand, args), "--workers", "1", "--no-progress"]


def nothing_trained(ctx: Context) -> None:
    """The run failed before training: no run directory left, not even one holding .lock."""
    written = [p.name for p in (ctx.tmp / "logs").rglob("*") if p.is_file()]
    assert not written, written
    assert not list((ctx.tmp / "logs").glob("bad/*")), "an empty run directory was left"


# --- setups ------------------------------------------------------------------------------

def logdir_through_a_file(ctx: Context) -> list[str]:
    # Root may write anywhere, so a permission bit would not stop it; a path through a
    # regular file cannot be created by anyone.
    (ctx.tmp / "afile").write_text("not a folder")
    return run("--logdir", "{tmp}/afile/logs")(ctx)


def file_left_alone(ctx: Context) -> None:
    assert (ctx.tmp / "afile").read_text() == "not a folder"


def imagenet_offline(ctx: Context) -> list[str]:
    (ctx.tmp / "keras_home").mkdir()
    ctx.monkeypatch.setenv("KERAS_HOME", str(ctx.tmp / "keras_home"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    # What keras.utils.get_file does offline, without ever trying the network in a test.
    ctx.monkeypatch.setattr(keras.utils, "get_file", offline)
    return run("--net", "mobilenet", "--init", "imagenet", "--image-size", "32")(ctx)


def weights_of_another_net(ctx: Context) -> list[str]:
    from medtransfer.models.registry import get_net

    backbone = get_net("cbr_tiny").build_backbone((32, 32, 3), None)
    backbone.save_weights(ctx.tmp / "cbr_tiny.weights.h5")
    return run("--net", "small_cnn", "--image-size", "32",
               "--init", "{tmp}/cbr_tiny.weights.h5")(ctx)


def run_dir_of_another_net(ctx: Context) -> list[str]:
    (ctx.tmp / "old_run").mkdir()
    (ctx.tmp / "old_run" / "config.yaml").write_text("net: cbr_tiny\n")
    return run("--net", "small_cnn", "--image-size", "32", "--init", "{tmp}/old_run")(ctx)


def init_not_hdf5(ctx: Context) -> list[str]:
    (ctx.tmp / "notes.weights.h5").write_text("these are not weights")
    return run("--image-size", "32", "--init", "{tmp}/notes.weights.h5")(ctx)


def folder_source(ctx: Context, **options) -> Path:
    return write_folder(ctx.tmp / "source", **options).source


def class_too_small(ctx: Context) -> list[str]:
    source = folder_source(ctx, classes=("common", "rare"))
    for path in sorted((source / "rare").iterdir())[3:]:
        path.unlink()
    return prepare("folder", "--source", str(source), "--out", "{tmp}/out")(ctx)


def too_many_rejected(ctx: Context) -> list[str]:
    source = folder_source(ctx)
    for path in sorted((source / "benign").iterdir())[:4]:
        path.write_bytes(b"\x00 not an image")
    return prepare("folder", "--source", str(source), "--out", "{tmp}/out")(ctx)


def rejected_listed_no_manifest(ctx: Context) -> None:
    assert (ctx.tmp / "out" / "rejected.csv").is_file()
    assert not (ctx.tmp / "out" / "manifest.json").exists()


def csv_without_columns(ctx: Context) -> list[str]:
    (ctx.tmp / "labels.csv").write_text("file,class\na.png,x\n")
    return prepare("csv", "--source", "{tmp}/labels.csv", "--out", "{tmp}/out")(ctx)


def medmnist_not_npz(ctx: Context) -> list[str]:
    (ctx.tmp / "pathmnist.npz").write_text("<html>404 Not Found</html>")
    return prepare("medmnist", "--source", "{tmp}/pathmnist.npz", "--out", "{tmp}/out")(ctx)


def medmnist_other_arrays(ctx: Context) -> list[str]:
    np.savez(ctx.tmp / "other.npz", x=np.zeros(3), y=np.ones(3))
    return prepare("medmnist", "--source", "{tmp}/other.npz", "--out", "{tmp}/out")(ctx)


def prepared_with_other_seed(ctx: Context) -> list[str]:
    from medtransfer.data.prepare import prepare_dataset

    source = folder_source(ctx)
    prepare_dataset("folder", source, ctx.tmp / "out", workers=1, progress=False)
    return prepare("folder", "--source", str(source), "--out", "{tmp}/out", "--seed", "1")(ctx)


def manifest_kept(ctx: Context) -> None:
    assert (ctx.tmp / "out" / "manifest.json").is_file()


def empty_source(layout: str) -> Callable[[Context], list[str]]:
    def setup(ctx: Context) -> list[str]:
        (ctx.tmp / "source").mkdir()
        return prepare(layout, "--source", "{tmp}/source", "--out", "{tmp}/out")(ctx)
    return setup


def source_is_a_file(ctx: Context) -> list[str]:
    (ctx.tmp / "image.png").write_bytes(b"")
    return prepare("folder", "--source", "{tmp}/image.png", "--out", "{tmp}/out")(ctx)


def out_inside_source(ctx: Context) -> list[str]:
    source = folder_source(ctx)
    return prepare("folder", "--source", str(source), "--out", str(source / "prepared"))(ctx)


def cats_still_zipped(ctx: Context) -> list[str]:
    (ctx.tmp / "dogs-vs-cats").mkdir()
    (ctx.tmp / "dogs-vs-cats" / "train.zip").write_bytes(b"PK")
    return prepare("cats_vs_dogs", "--source", "{tmp}/dogs-vs-cats", "--out", "{tmp}/out")(ctx)


# --- the table ---------------------------------------------------------------------------

CASES = [
    # argparse: usage line and message, exit 2
    Case("no-subcommand", [], ["Give a command", "run", "prepare"]),
    Case("unknown-subcommand", ["rnu"],  # ('trian' is closer to 'pretrain')
         ["Unknown command 'rnu'", "Did you mean 'run'", "prepare"]),
    Case("unknown-flag", ["run", "--frezee", "0.5"],
         ["Unknown option '--frezee'", "Did you mean '--freeze'", "medtransfer run --help"]),
    Case("flag-with-underscore", ["run", "--batch_size", "8"],
         ["Unknown option '--batch_size'", "Did you mean '--batch-size'"]),
    Case("freeze-not-a-number", ["run", "--freeze", "abc"],
         ["--freeze", "invalid float value: 'abc'"]),
    Case("scaling-choice", ["run", "--scaling", "zscore"],
         ["Unknown scaling 'zscore'", "unit, native"]),
    Case("strategy-choice", ["run", "--strategy", "tpu"],
         ["Unknown strategy 'tpu'", "auto, mirrored, default"]),
    Case("batch-size-not-whole", ["run", "--batch-size", "1.5"], ["invalid int value: '1.5'"]),
    Case("prepare-no-layout", ["prepare"], ["required", "dataset"]),
    Case("prepare-max-reject-text", ["prepare", "cancer", "--max-reject", "1%"],
         ["--max-reject", "invalid float value"]),
    Case("predict-no-input", ["predict", "{tmp}"], ["required", "INPUT"]),
    Case("export-format-unknown", ["export", "{tmp}", "--format", "kears"],
         ["Unknown export format 'kears'", "Did you mean 'keras'", "saved_model",
          "medtransfer export --help"]),
    Case("class-weight-unknown", run("--class-weight", "balance"),
         ["Unknown class weight 'balance'", "Did you mean 'balanced'", "none"]),
    Case("patience-zero", run("--patience", "0"), ["--patience 0", "≥ 1"]),

    # predict, export: what they read
    Case("predict-not-a-run", ["predict", "{tmp}", "{tmp}/scan.png"],
         ["predict: '{tmp}' is not a run directory", "config.yaml", "<run_id>"]),
    Case("export-not-a-run", ["export", "{tmp}"],
         ["export: '{tmp}' is not a run directory", "config.yaml"]),

    # run: names and values
    Case("unknown-net", run("--net", "resnet50v2"),
         ["Unknown net 'resnet50v2'", "Did you mean 'resnet50_v2'", "small_cnn", "cbr_tiny",
          "medtransfer list"]),
    Case("unknown-dataset", run("--dataset", "canser"),
         ["Unknown dataset 'canser'", "Did you mean 'cancer'", "retina", "cats_vs_dogs",
          "medtransfer list"]),
    Case("own-dataset-not-prepared", run("--dataset", "xrays", "--data-dir", "{tmp}/datasets"),
         ["Unknown dataset 'xrays'", "your own data",
          "medtransfer prepare folder --source DIR --out {tmp}/datasets/xrays",
          "medtransfer prepare csv --source FILE.csv --out {tmp}/datasets/xrays",
          "medtransfer prepare medmnist --source FILE.npz --out {tmp}/datasets/xrays",
          "--dataset xrays"]),
    Case("layout-as-dataset", run("--dataset", "folder"),
         ["layout for your own data", "medtransfer prepare folder --source", "--dataset NAME"]),
    Case("retina-not-prepared", run("--dataset", "retina", "--data-dir", "{tmp}/datasets"),
         ["'retina' is not prepared", "kaggle competitions download -c "
          "aptos2019-blindness-detection", "medtransfer prepare retina --source"]),
    Case("freeze-above-one", run("--freeze", "1.5"),
         ["--freeze 1.5", "outside [0, 1]", "0.75"]),
    Case("freeze-negative", run("--freeze=-0.1"), ["--freeze -0.1", "outside [0, 1]"]),
    Case("epochs-malformed", run("--epochs", "3-50"), ["--epochs '3-50'", "W+E", "3+50"]),
    Case("epochs-words", run("--epochs", "three+fifty"), ["'three+fifty'", "W+E"]),
    Case("epochs-none", run("--epochs", "0+0"), ["'0+0'", "no epoch", "0+1"]),
    Case("image-size-below-net-minimum", run("--net", "inception_v3", "--image-size", "32"),
         ["--image-size 32", "inception_v3", re.compile(r"\(75 px\)"), "at least 75"]),
    Case("image-size-zero", run("--image-size", "0"), ["--image-size 0", "≥ 1"]),
    Case("train-size-zero", run("--train-size", "0"), ["--train-size 0", "≥ 1"]),
    Case("seed-negative", run("--seed=-1"), ["--seed -1", "[0, 2**32 - 1]", "default 0"]),
    Case("seed-too-large", run("--seed", str(2**32)), ["--seed 4294967296", "[0, 2**32 - 1]"]),
    Case("lr-negative", run("--lr=-1e-4"), ["--lr -0.0001", "positive", "1e-5"]),
    Case("dropout-one", run("--dropout", "1"), ["--dropout 1.0", "outside [0, 1)", "0.5"]),
    Case("cache-limit-not-a-size", run("--cache-limit", "lots"),
         ["--cache-limit 'lots' is not a size", "4GiB"]),
    Case("experiment-with-slash", run("--experiment", "a/b"),
         ["experiment 'a/b'", "contain no '/'"]),
    Case("imagenet-for-small-cnn", run("--net", "small_cnn", "--init", "imagenet"),
         ["'small_cnn' has no ImageNet weights", "inception_v3", "mobilenet", "--init glorot"],
         after=nothing_trained),
    Case("mean-var-for-cbr", run("--net", "cbr_tiny", "--init", "mean_var"),
         ["'cbr_tiny' has no ImageNet weights", "--init glorot"], after=nothing_trained),

    # run: config files
    Case("config-missing", run("--config", "{tmp}/nope.yaml"),
         ["{tmp}/nope.yaml", "does not exist", "config.yaml"]),
    Case("config-not-yaml", run_with_config("net: [small_cnn\n"),
         ["{tmp}/run.yaml", "not valid YAML", "key: value"]),
    Case("config-not-a-mapping", run_with_config("- small_cnn\n- cbr_tiny\n"),
         ["{tmp}/run.yaml", "must hold a mapping", "not a list"]),
    Case("config-unknown-key", run_with_config("epoch: 3+50\n"),
         ["{tmp}/run.yaml", "Unknown config key 'epoch'", "Did you mean 'epochs'", "freeze",
          "batch_size", "'medtransfer run --help' explains them"]),
    Case("config-wrong-type", run_with_config("freeze: high\n"),
         ["{tmp}/run.yaml", "'freeze'", "'high'", "must be a number"]),
    Case("config-bad-choice", run_with_config("scaling: zscore\n"),
         ["{tmp}/run.yaml", "Unknown scaling 'zscore'", "unit, native"]),
    Case("config-bad-range", run_with_config("freeze: 2\n"),
         ["{tmp}/run.yaml", "freeze 2", "outside [0, 1]"]),
    Case("config-num-classes-mismatch", run_with_config("num_classes: 3\n"),
         ["num_classes: 3", "has 10 classes", "Remove num_classes"]),

    # run: log directory
    Case("logdir-not-writable", logdir_through_a_file,
         ["Cannot write the run directory", "{tmp}/afile/logs", "Not a directory", "--logdir"],
         after=file_left_alone),

    # run: weights
    Case("weights-file-missing",
         run("--net", "mobilenet", "--init", "imagenet", "--image-size", "32",
             "--weights-file", "{tmp}/nowhere.h5"),
         ["--weights-file {tmp}/nowhere.h5 does not exist", "mobilenet_1_0_224_tf_no_top.h5"],
         after=nothing_trained),
    Case("weights-file-with-glorot", run("--weights-file", "{tmp}/x.h5"),
         ["--weights-file", "'imagenet' and 'mean_var'", "Drop --weights-file"]),
    Case("imagenet-offline", imagenet_offline,
         ["'mobilenet_1_0_224_tf_no_top.h5'", "{tmp}/keras_home/models", "--weights-file PATH",
          "https://storage.googleapis.com/"], after=nothing_trained),
    Case("init-weights-of-another-net", weights_of_another_net,
         ["{tmp}/cbr_tiny.weights.h5", "does not fit net 'small_cnn'", "tensor"],
         after=nothing_trained),
    Case("init-run-of-another-net", run_dir_of_another_net,
         ["saved from net 'cbr_tiny'", "--net cbr_tiny"], after=nothing_trained),
    Case("init-not-hdf5", init_not_hdf5,
         ["{tmp}/notes.weights.h5", "not an HDF5 file", ".weights.h5"], after=nothing_trained),
    Case("init-unknown-name", run("--image-size", "32", "--init", "imagnet"),
         ["Unknown init 'imagnet'", "Did you mean 'imagenet'", "glorot", "does not exist"],
         after=nothing_trained),
    Case("init-missing-path", run("--image-size", "32", "--init", "{tmp}/runs/old"),
         ["--init {tmp}/runs/old does not exist", "run directory", "weights file", "glorot"],
         after=nothing_trained),
    Case("init-folder-not-a-run", run("--image-size", "32", "--init", "{tmp}"),
         ["not a run directory", "config.yaml"], after=nothing_trained),

    # prepare: arguments
    Case("prepare-unknown-layout", prepare("cancr", "--source", "{tmp}"),
         ["Unknown dataset 'cancr'", "Did you mean 'cancer'", "medmnist"]),
    Case("prepare-no-source", prepare("cancer", "--out", "{tmp}/out"),
         ["cancer needs --source", "medtransfer prepare cancer --source DIR"]),
    Case("prepare-source-missing", prepare("cancer", "--source", "{tmp}/nowhere"),
         ["--source {tmp}/nowhere does not exist"]),
    Case("prepare-digits-with-source",
         prepare("digits", "--source", "{tmp}/source", "--out", "{tmp}/out"),
         ["digits is bundled", "takes no --source", "without it"]),
    Case("prepare-max-reject-above-one", prepare("cancer", "--max-reject", "1.5"),
         ["--max-reject", "[0, 1)", "1.5", "0.01"]),
    Case("prepare-max-reject-negative", prepare("cancer", "--max-reject=-0.1"),
         ["--max-reject", "[0, 1)"]),
    Case("prepare-max-size-tiny", prepare("cancer", "--max-size", "4"),
         ["--max-size", "at least 8", "got 4"]),
    Case("prepare-seed-negative", prepare("digits", "--out", "{tmp}/out", "--seed=-1"),
         ["--seed -1", "[0, 2**32 - 1]"]),
    Case("prepare-no-workers", ["prepare", "cancer", "--workers", "0"],
         ["--workers", "at least 1", "got 0"]),

    # prepare: sources
    Case("prepare-wrong-layout", empty_source("cancer"),
         ["train_labels.csv", "cancer layout expects", "--source"]),
    Case("prepare-folder-source-is-file", source_is_a_file,
         ["--source {tmp}/image.png is a file", "one subfolder per class"]),
    Case("prepare-out-inside-source", out_inside_source,
         ["is inside --source", "outside it"]),
    Case("prepare-cats-still-zipped", cats_still_zipped,
         ["train.zip", "Unzip it first", "unzip"]),
    Case("prepare-class-too-small", class_too_small,
         ["'rare' has 3 images", "at least 10", "subfolder"]),
    Case("prepare-too-many-rejected", too_many_rejected,
         ["4 of 20 images (20.0%) were rejected", "--max-reject 0.01", "rejected.csv",
          "no manifest.json"], after=rejected_listed_no_manifest),
    Case("prepare-csv-missing-columns", csv_without_columns,
         ["no column 'path', 'label'", "file, class", "path, label"]),
    Case("prepare-medmnist-not-npz", medmnist_not_npz,
         ["{tmp}/pathmnist.npz is not a .npz file", "Download it again from MedMNIST"]),
    Case("prepare-medmnist-other-arrays", medmnist_other_arrays,
         ["train_images", "it holds: x, y", "MedMNIST"]),
    Case("prepare-changed-arguments", prepared_with_other_seed,
         ["{tmp}/out is already prepared", "seed 0 (now 1)", "--force", "another --out"],
         after=manifest_kept),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_fails_clearly(case, tmp_path, digits_data_dir, monkeypatch, capsys):
    ctx = Context(tmp_path, digits_data_dir, monkeypatch)
    argv = case.argv(ctx) if callable(case.argv) else [ctx.expand(a) for a in case.argv]
    capsys.readouterr()

    def fit(*args, **kwargs):
        raise AssertionError("bad input must fail before training starts")

    monkeypatch.setattr(keras.Model, "fit", fit)
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    except Exception as error:  # noqa: BLE001 -- escaping main() means a traceback
        pytest.fail(f"medtransfer {' '.join(argv)} raised {error!r}: a user sees a traceback")
    out, err = capsys.readouterr()

    assert code == case.code, err
    assert "Traceback" not in out + err
    for word in case.words:
        if isinstance(word, re.Pattern):
            assert re.search(word.pattern, err, re.IGNORECASE), (word.pattern, err)
        else:
            assert ctx.expand(word).lower() in err.lower(), (word, err)
    # One paragraph: the error is the last thing on stderr, on one line.
    last = err.rstrip("\n").splitlines()[-1]
    assert re.match(r"medtransfer( \w+)?: error: ", last), err
    if case.after:
        case.after(ctx)


SUBPROCESS_CASES = ["freeze-not-a-number", "unknown-net", "prepare-source-missing"]


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_the_real_command_exits_without_traceback(case_id, tmp_path, digits_data_dir,
                                                  monkeypatch):
    case = next(case for case in CASES if case.id == case_id)
    ctx = Context(tmp_path, digits_data_dir, monkeypatch)
    argv = case.argv(ctx) if callable(case.argv) else [ctx.expand(a) for a in case.argv]
    done = subprocess.run([sys.executable, "-m", "medtransfer", *argv], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == case.code, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    for word in case.words:
        if isinstance(word, str):
            assert ctx.expand(word).lower() in done.stderr.lower(), (word, done.stderr)
