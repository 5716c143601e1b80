"""A kill at any write of a run resumes as if never killed (issue #25 point 1).

One real run (the CLI, in a subprocess) stops at every file operation it makes, before
and after each: every weights file saved, every rename, link and removal (atomic
writes of history.csv and state.json included: their temporary file exists at the
moment before the rename), every TensorBoard write, predictions_test.csv and
metrics.json. At each of these moments it copies its run directory aside: the copy is
exactly what a kill at that moment leaves, since nothing of a killed process survives
but its files (one test below kills a real process with ``os._exit`` at one moment and
finds exactly that moment's copy). Copies that equal the one before (nothing written in
between) are kept once.

Each copy is then resumed as ``run`` resumes it. What a resumed run does after its
restore step (``_restore_progress``: read state.json, drop the strays of the unfinished
epoch) is a function of the files that step leaves and of the config alone, so the
test restores every copy, checks that it leaves exactly the directory of the last
completed epoch (history.csv the byte-for-byte prefix of the uninterrupted run's, the
weights files that epoch's), and trains on from one copy per such state: its history.csv
must equal the uninterrupted run's in every column but the wall-clock ones, with the
same best epoch and test metrics. Training on from all ~37 copies would cost ~150 CPU
seconds for the same proof.
"""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

# Runs `medtransfer run` with argv[3:], copying the run directory argv[1] into
# argv[2]/NNN/<experiment>/<run_id> at every moment before and after a file operation
# (hard links for weights files, written once and never changed in place; a copy of the
# rest), or, with argv[2] of the form "exit:K", exiting at once at moment K instead.
SNAPSHOT_EVERY_WRITE = r"""
import os, shutil, sys
from pathlib import Path

import keras

from medtransfer.cli import main
from medtransfer.training import rundir, run

RUN_DIR, TARGET, ARGS = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
link, copy2 = os.link, shutil.copy2
moments, last, busy = [0], [None], [False]


def link_or_copy(source, destination):
    (link if source.endswith(".h5") else copy2)(source, destination)


def moment():
    if busy[0] or not RUN_DIR.exists():
        return
    busy[0] = True
    try:
        files = sorted((str(p.relative_to(RUN_DIR)), p.stat().st_size, p.stat().st_mtime_ns)
                       for p in RUN_DIR.rglob("*") if p.is_file())
        if files == last[0]:
            return
        last[0] = files
        if TARGET.startswith("exit:"):
            if moments[0] == int(TARGET[5:]):
                os._exit(9)
        else:
            copy = Path(TARGET) / f"{moments[0]:03d}" / RUN_DIR.parent.name / RUN_DIR.name
            shutil.copytree(RUN_DIR, copy, copy_function=link_or_copy)
        moments[0] += 1
    finally:
        busy[0] = False


def around(function):
    def wrapped(*args, **kwargs):
        moment()
        result = function(*args, **kwargs)
        moment()
        return result
    return wrapped


for owner, name in ((os, "replace"), (os, "rename"), (os, "link"), (os, "unlink"),
                    (shutil, "rmtree"), (keras.Model, "save_weights"),
                    (rundir.TensorBoardLog, "write_epoch"),
                    (rundir.TensorBoardLog, "write_results"),
                    (rundir.TensorBoardLog, "rewrite"), (run, "_write_predictions")):
    setattr(owner, name, around(getattr(owner, name)))
code = main(ARGS)
moment()
sys.exit(code)
"""

WALL_CLOCK = ("seconds", "train_seconds")


def cli_args(logdir, data_dir):
    # 1+2 epochs: a resume inside phase 1, at the phase boundary (fresh Adam) and inside
    # phase 2 (Adam's state restored). At lr 1e-2, seed 0 makes epochs 1 and 2 new bests and epoch 3
    # not, so both paths of an epoch's end are killed.
    return ["run", "--dataset", "digits", "--net", "small_cnn", "--image-size", "16",
            "--batch-size", "32", "--train-size", "64", "--lr", "1e-2", "--seed", "0",
            "--epochs", "1+2", "--freeze", "0.5", "--deterministic", "--strategy",
            "default", "--experiment", "kills", "--logdir", str(logdir), "--data-dir",
            str(data_dir)]


def run_dir_in(logdir, data_dir):
    from medtransfer.config import RunConfig
    from medtransfer.training.resolve import resolve_config

    config = RunConfig(dataset="digits", net="small_cnn", image_size=16, batch_size=32,
                       train_size=64, lr=1e-2, seed=0, epochs="1+2", freeze=0.5,
                       deterministic=True, strategy="default", experiment="kills",
                       logdir=str(logdir), data_dir=str(data_dir))
    return resolve_config(config)[0].run_dir


def history(run_dir):
    with (run_dir / "history.csv").open(newline="") as stream:
        return [{key: value for key, value in row.items() if key not in WALL_CLOCK}
                for row in csv.DictReader(stream)]


def files_of(run_dir):
    """The run directory's file names; TensorBoard's carry the time and the process id."""
    names = (str(path.relative_to(run_dir)) for path in run_dir.rglob("*") if path.is_file())
    return sorted(name.split(".tfevents.")[0] for name in names)


def snapshot_every_write(run_dir, target, args):
    return subprocess.run([sys.executable, "-c", SNAPSHOT_EVERY_WRITE, str(run_dir),
                           str(target), *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def killed_everywhere(tmp_path_factory, digits_data_dir):
    """The uninterrupted run's directory and the copies of it at every moment."""
    root = tmp_path_factory.mktemp("kills")
    run_dir = run_dir_in(root / "whole", digits_data_dir)
    done = snapshot_every_write(run_dir, root / "copies",
                                cli_args(root / "whole", digits_data_dir))
    assert done.returncode == 0, done.stderr
    return run_dir, sorted((root / "copies").iterdir())


def restored(run_dir):
    """Runs a copy's restore step; returns (epochs kept, the files it leaves).

    The files that decide what the run does next, each by content: weights files by
    their inode (the copies hard-link them, and a restore only links, renames and
    removes them), the others by their bytes. config.yaml, the lock, the write test and
    TensorBoard's events are left out: a run writes them again before (config, lock,
    write test) or in (events, from history.csv) its restore step.
    """
    from medtransfer.training.run import _restore_progress
    from medtransfer.training.rundir import RunDirectory, TensorBoardLog

    _, resume = _restore_progress(RunDirectory(run_dir), TensorBoardLog(run_dir))
    files = {}
    for path in sorted(run_dir.rglob("*")):
        name = str(path.relative_to(run_dir))
        if path.is_file() and ".tfevents." not in name and name not in (".lock", ".write-test",
                                                                       "config.yaml"):
            files[name] = path.stat().st_ino if name.endswith(".h5") else path.read_bytes()
    return (resume.epoch if resume else 0), files


def working_copy(copy, target):
    shutil.copytree(copy, target, copy_function=lambda source, destination: (
        os.link if source.endswith(".h5") else shutil.copy2)(source, destination))
    return target


@pytest.mark.slow
def test_a_kill_at_any_write_resumes_as_if_never_killed(killed_everywhere, tmp_path,
                                                        digits_data_dir):
    from medtransfer.cli import main
    from medtransfer.training.rundir import RunDirectory

    whole, copies = killed_everywhere
    expected = history(whole)
    metrics = json.loads((whole / "metrics.json").read_text())
    assert [row["epoch"] for row in expected] == ["1", "2", "3"]
    # Both ends of an epoch are covered only if some epoch after the first does not improve.
    assert metrics["best_epoch"] == 2, "epochs 1 and 2 should improve and epoch 3 not: " \
        "choose another --seed or --lr in cli_args"
    # At least, in each of three epochs, before and after history.csv, TensorBoard, the
    # state's weights and the state.json rename, and in two of them the best weights.
    assert len(copies) > 3 * 5 + 2
    lines = (whole / "history.csv").read_bytes().splitlines(keepends=True)
    states, complete = {}, []
    for copy in copies:
        logdir = working_copy(copy, tmp_path / copy.name)
        run_dir = run_dir_in(logdir, digits_data_dir)
        if RunDirectory(run_dir).is_complete():
            complete.append(logdir)
            continue
        epochs, files = restored(run_dir)
        # Exactly the rows of the epochs kept, byte for byte (wall-clock columns too).
        assert files.pop("history.csv", b"") == b"".join(lines[:epochs + 1] if epochs else []), \
            copy.name
        states.setdefault(epochs, {}).setdefault(repr(sorted(files.items())), logdir)
    # Every moment restores to the one directory of its last completed epoch.
    assert {epochs: len(found) for epochs, found in states.items()} == \
        {0: 1, 1: 1, 2: 1, 3: 1}
    for logdir in [*(next(iter(found.values())) for found in states.values()), *complete]:
        run_dir = run_dir_in(logdir, digits_data_dir)
        assert main(cli_args(logdir, digits_data_dir)) == 0, logdir.name
        assert history(run_dir) == expected, logdir.name
        resumed = json.loads((run_dir / "metrics.json").read_text())
        for key in ("best_epoch", "val_auc_micro_best", "test_auc_micro", "test_accuracy"):
            assert resumed[key] == metrics[key], (logdir.name, key)
        assert files_of(run_dir) == files_of(whole), logdir.name


@pytest.mark.slow
def test_a_real_kill_leaves_what_its_copy_holds(killed_everywhere, tmp_path, digits_data_dir):
    # The moment between epoch 2's resume weights and its state.json: the one that
    # resumed from epoch 2's weights as if they were epoch 1's before issue #25.
    whole, copies = killed_everywhere
    moment = next(copy for copy in copies
                  if (run_dir_in(copy, digits_data_dir) / "resume"
                      / "state-e0002.weights.h5").exists())
    run_dir = run_dir_in(tmp_path, digits_data_dir)
    killed = snapshot_every_write(run_dir, f"exit:{int(moment.name)}",
                                  cli_args(tmp_path, digits_data_dir))
    assert killed.returncode == 9, killed.stderr
    assert files_of(run_dir) == files_of(run_dir_in(moment, digits_data_dir))
    state = json.loads((run_dir / "resume" / "state.json").read_text())
    assert state["epoch"] == 1 and state["weights"] == "state-e0001.weights.h5"
