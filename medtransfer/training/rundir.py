"""The run directory: every file a run writes, and who may write it.

``tensorboard_logs/<experiment>/<run_id>/`` holds ``config.yaml``, TensorBoard events
(``train/``, ``validation/`` and the HParams entry at the top), ``history.csv``,
``best.weights.h5``, ``predictions_test.csv``, ``resume/`` (the state to resume from
after a kill, removed when the run completes), ``error.txt`` (why ``sweep`` saw the
last attempt fail, removed when the run completes) and, written last and atomically,
``metrics.json``.

Each epoch ends in the same order: new best weights into ``resume/`` under their epoch,
then history.csv (rewritten whole, atomically) and TensorBoard, then the resume state:
the model and optimizer weights under their epoch (``resume/state-eNNNN.weights.h5``),
then ``state.json`` naming that file, the epoch and the best epoch (atomically: this
rename is the moment the epoch counts as done), then the older weights files removed;
and only then ``best.weights.h5``. Whatever the moment of a kill, ``state.json`` says
which epoch to resume after and names the weights and the best weights that belong to
it; every other file in ``resume/`` and every history row after that epoch is a stray of
an unfinished epoch, dropped on resume (:meth:`RunDirectory.read_resume_state`).

TensorBoard scalars are derived from ``history.csv``: after a resume they are written
again from it, so each epoch appears exactly once.

Readers never open these files themselves: :func:`read_run` (and :func:`scan_experiment`
for a whole experiment) is the one reader of a run directory in any state, and
:func:`open_run` the one opener of a complete run.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import functools
import io
import os
import shutil
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medtransfer.config import (
    FIELDS,
    NOT_IDENTITY,
    RUN_CONFIG,
    RUN_WEIGHTS,
    RunConfig,
    identity_differences,
    load_config_file,
)
from medtransfer.errors import MedtransferError, working_directory_note
from medtransfer.fileio import read_json, write_json_atomic, write_text_atomic

HISTORY_COLUMNS = (
    "epoch", "phase", "loss", "accuracy", "val_loss", "val_auc_micro", "val_auc_macro",
    "val_accuracy", "lr", "seconds", "train_seconds",
)
MULTI_LABEL_HISTORY_COLUMNS = tuple(
    "val_auc_mean" if column == "val_auc_macro" else column for column in HISTORY_COLUMNS)
"""A multi-label run's history.csv: the mean of the findings' AUCs in place of the macro AUC."""
TRAIN_SCALARS = ("loss", "accuracy", "lr")
VALIDATION_SCALARS = ("val_loss", "val_accuracy", "val_auc_micro", "val_auc_macro",
                      "val_auc_mean")
# Scalars written once a run completes, at step = best epoch, in the run's top folder;
# the HParams tab shows them per run. Tag -> metrics.json key.
RESULT_SCALARS = {
    "best/val_auc_mean": "val_auc_mean_best",
    "test/auc_mean": "test_auc_mean",
    "best/val_auc_micro": "val_auc_micro_best",
    "test/auc_micro": "test_auc_micro",
    "test/auc_macro": "test_auc_macro",
    "test/accuracy": "test_accuracy",
}
MULTI_LABEL_PRIMARY = "auc_mean"
SINGLE_LABEL_PRIMARY = "auc_micro"


def primary_metric(metrics: dict[str, Any]) -> str:
    """The metric a run's best epoch is chosen on and a report compares: ``auc_mean`` (the
    mean of the findings' AUCs) when ``metrics`` (a split's metrics, or metrics.json with
    its ``test_`` keys) are a multi-label run's, else ``auc_micro``."""
    multi = MULTI_LABEL_PRIMARY in metrics or f"test_{MULTI_LABEL_PRIMARY}" in metrics
    return MULTI_LABEL_PRIMARY if multi else SINGLE_LABEL_PRIMARY


def best_validation_auc(metrics: dict[str, Any]) -> float:
    """A complete run's best validation AUC of its primary metric (metrics.json's
    ``val_auc_micro_best``, or a multi-label run's ``val_auc_mean_best``): what a
    search maximises."""
    return float(metrics[f"val_{primary_metric(metrics)}_best"])


# What a complete run's metrics.json must hold for a reader to use it.
REQUIRED_METRICS = ("dataset", "net", "init", "freeze", "seed", "best_epoch", "test_auc_micro")


class RunHeld(MedtransferError):
    """Another process holds the run directory's lock: it is training that run now.

    Not a failure of the run: it exits with 75 (``EX_TEMPFAIL``, "try again later"), so a
    sweep tells a run held elsewhere from a failed one and skips it.
    """

    exit_code = 75


class RunDirectory:
    """The files of one run, and the lock that keeps a second process out.

    Args:
        path: ``<logdir>/<experiment>/<run_id>``.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_handle = None

    config = property(lambda self: self.path / RUN_CONFIG)
    history = property(lambda self: self.path / "history.csv")
    best_weights = property(lambda self: self.path / RUN_WEIGHTS)
    predictions = property(lambda self: self.path / "predictions_test.csv")
    metrics = property(lambda self: self.path / "metrics.json")
    resume = property(lambda self: self.path / "resume")
    resume_state = property(lambda self: self.path / "resume" / "state.json")
    export = property(lambda self: self.path / "export")
    #: Why the last attempt failed, written by ``sweep`` (the run's own stderr).
    error = property(lambda self: self.path / "error.txt")

    def read_metrics(self) -> dict[str, Any] | None:
        """The run's metrics.json, or None when it cannot be read (no run there yet)."""
        try:
            return read_json(self.metrics)
        except (OSError, ValueError):
            # Not only a missing file: a --logdir through a regular file gives "Not a
            # directory" here, which create() then reports clearly.
            return None

    def is_complete(self) -> bool:
        """A finished run is one whose metrics.json says ``"status": "complete"``."""
        metrics = self.read_metrics()
        return bool(metrics) and metrics.get("status") == "complete"

    def create(self) -> bool:
        """Creates the folder, failing clearly when it cannot be written.

        Returns:
            Whether this call created it (it did not exist before).
        """
        created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as error:
            raise MedtransferError(
                f"Cannot write the run directory '{self.path}' ({error.strerror}). Choose a "
                "log root you can write with --logdir, or fix the folder's permissions."
            ) from None
        return created

    def remove_if_empty(self) -> None:
        """Removes the folder if it holds nothing but the lock file (a run that failed
        before writing anything). Call it only after :meth:`unlock`."""
        try:
            if {entry.name for entry in self.path.iterdir()} <= {".lock"}:
                (self.path / ".lock").unlink(missing_ok=True)
                self.path.rmdir()
        except OSError:
            pass  # not empty after all, or already gone: leave it as it is

    def lock(self) -> None:
        """Takes an exclusive lock for this process, held until it exits.

        Raises:
            RunHeld: another process holds it (a second run of the same config).
        """
        handle = open(self.path / ".lock", "a+")  # noqa: SIM115 -- held for the process's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.close()
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise RunHeld(
                f"Another process is already training into '{self.path}'. Two runs of the "
                "same configuration would overwrite each other's files; wait for it to "
                "finish, or give this run another --experiment or --seed."
            ) from None
        self._lock_handle = handle

    def is_locked(self) -> bool:
        """True while a process holds :meth:`lock`: a run is training into this folder."""
        try:
            handle = open(self.path / ".lock")  # noqa: SIM115 -- closed below
        except OSError:
            return False
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            handle.close()  # closing releases a shared lock taken here
        return False

    def unlock(self) -> None:
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    def clear(self) -> None:
        """Removes every file of an earlier run (``--overwrite``); keeps the lock file."""
        for entry in self.path.iterdir():
            if entry.name == ".lock":
                continue
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    def best_candidate(self, epoch: int) -> Path:
        """Where the weights of a new best epoch wait until the resume state names them."""
        return self.resume / f"best-e{epoch:04d}.weights.h5"

    def publish_best(self, epoch: int) -> None:
        """Makes ``epoch``'s candidate best.weights.h5 (atomically) and drops the others.

        Called only after the resume state names ``epoch`` as the best, so a kill at any
        point never leaves best.weights.h5 from an epoch that a resumed run trains again.
        """
        candidate = self.best_candidate(epoch)
        if not (self.best_weights.exists() and os.path.samefile(candidate, self.best_weights)):
            # (When it is already published, linked to the candidate, the rename below
            # would leave the staged link behind: POSIX renames one name of a file over
            # another name of the same file by doing nothing.)
            staged = self.path / ".best.weights.h5.tmp"
            staged.unlink(missing_ok=True)
            try:
                os.link(candidate, staged)
            except OSError:  # a file system without hard links
                shutil.copyfile(candidate, staged)
            os.replace(staged, self.best_weights)
        for other in self.resume.glob("best-e*.weights.h5"):
            if other != candidate:
                other.unlink()

    def resume_weights(self, epoch: int) -> Path:
        """Where the model and optimizer weights after ``epoch`` are kept for a resume."""
        return self.resume / f"state-e{epoch:04d}.weights.h5"

    def save_resume_state(self, epoch: int, phase: str, best_epoch: int, best_auc: float,
                          save_weights: Callable[[Path], None]) -> None:
        """Saves the state to resume from after ``epoch`` (see :class:`ResumeState`), as
        one unit.

        The weights go to a file of their own epoch (``save_weights(path)`` writes them),
        then ``state.json`` naming that file is renamed into place, and only then are
        older weights files removed: a kill at any moment leaves a ``state.json`` whose
        weights file is whole and of its epoch (a newer one is a stray).
        """
        self.resume.mkdir(exist_ok=True)
        weights = self.resume_weights(epoch)
        save_weights(weights)
        write_json_atomic(self.resume_state, {
            "epoch": epoch,
            "phase": phase,
            "weights": weights.name,
            "best_epoch": best_epoch,
            # The primary metric's best (a multi-label run's mean AUC), under its old name.
            "val_auc_micro_best": best_auc,
        })
        for other in self.resume.glob("state-e*.weights.h5"):
            if other != weights:
                other.unlink()

    def completed_epochs(self) -> int:
        """The epochs a resume would keep (``state.json``'s epoch; 0 without one), read
        without tidying anything up: another process may be training the run."""
        try:
            return int(read_json(self.resume_state)["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def read_resume_state(self) -> ResumeState | None:
        """The state a killed run resumes from, or None when no epoch completed.

        Makes the folder what it was right after that epoch: its best weights published
        (the kill may have come before), every other file in ``resume/`` (weights or a
        best candidate of an unfinished epoch, a half-written temporary file), the
        temporary files of unfinished atomic writes and the test predictions of an
        unfinished completion removed; with no ``state.json``, ``resume/`` goes entirely.

        Raises:
            MedtransferError: ``state.json`` names a weights file that is not there.
        """
        for temporary in self.path.glob(".*.tmp"):  # see fileio.write_text_atomic
            temporary.unlink()
        self.predictions.unlink(missing_ok=True)
        if not self.resume_state.is_file():
            self.remove_resume_state()
            return None
        saved = read_json(self.resume_state)
        state = ResumeState(
            epoch=int(saved["epoch"]), phase=saved["phase"],
            best_epoch=int(saved["best_epoch"]), best_auc=float(saved["val_auc_micro_best"]),
            # A run killed under medtransfer 0.x kept one unnumbered weights file.
            weights=self.resume / saved.get("weights", "state.weights.h5"),
        )
        if not state.weights.is_file():
            raise MedtransferError(
                f"The run in '{self.path}' cannot resume: its resume/state.json names "
                f"'{state.weights.name}', which is not there. Train it afresh with "
                "--overwrite."
            )
        if state.best_epoch:
            self.publish_best(state.best_epoch)
        keep = {self.resume_state, state.weights, self.best_candidate(state.best_epoch)}
        for entry in self.resume.iterdir():
            if entry not in keep:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        return state

    def remove_resume_state(self) -> None:
        """Removes ``resume/`` (a run that has not completed an epoch)."""
        shutil.rmtree(self.resume, ignore_errors=True)

    def found_complete(self, config: RunConfig) -> bool:
        """Whether ``config``'s run is complete here already, so that nothing is left to
        train: says so and removes its leftovers. Reads files only (no TensorFlow), so
        ``run`` answers for a complete run at once.

        Raises:
            MedtransferError: the run saved here is another configuration
                (:meth:`check_same_config`).
        """
        self.check_same_config(config)
        if not self.is_complete():
            return False
        print(f"{self.path} already holds a complete run; nothing to do (use --overwrite to "
              "train it again, or 'medtransfer reproduce' on it to train a copy beside it).")
        self.remove_leftovers()
        return True

    def remove_leftovers(self) -> None:
        """Removes what a complete run no longer needs: ``resume/`` and the error.txt of
        an earlier failed attempt (a kill may come after metrics.json and before this;
        a complete run that ``run`` skips calls it again)."""
        self.remove_resume_state()
        self.error.unlink(missing_ok=True)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        write_json_atomic(self.metrics, metrics)

    def predicted_class_names(self) -> list[str] | None:
        """The run's classes in output order, from predictions_test.csv's ``prob_<class>``
        columns (the run's own record, no prepared dataset needed); None before the run
        has written its test predictions."""
        if not self.predictions.is_file():
            return None
        with self.predictions.open(newline="") as stream:
            header = next(csv.reader(stream), [])
        return [name.removeprefix("prob_") for name in header if name.startswith("prob_")]

    def read_config(self) -> RunConfig:
        """The run's resolved config (config.yaml)."""
        return load_config_file(self.config)

    def check_same_config(self, config: RunConfig) -> None:
        """Fails unless the run saved here (if any) is ``config``'s configuration.

        Only identity fields count (:data:`medtransfer.config.NOT_IDENTITY` lists the
        others), so the same run resumed with another ``--cache-limit`` or ``--logdir``
        passes, while one whose learning rate or epochs changed does not.

        Raises:
            MedtransferError: the saved config.yaml differs (listing each key, saved and
                now) or cannot be read.
        """
        if not self.config.is_file():
            return
        try:
            saved = self.read_config()
            differences = identity_differences(saved, config)
        except MedtransferError as error:
            raise MedtransferError(
                f"The run directory '{self.path}' holds a run whose config.yaml cannot be "
                f"compared with this one: {error} Train afresh over it with --overwrite "
                "(deletes that run), or choose another --experiment."
            ) from None
        if differences:
            listed = "; ".join(f"{key}: {before!r} there, {now!r} now"
                               for key, (before, now) in differences.items())
            raise MedtransferError(
                f"The run directory '{self.path}' holds a run of another configuration "
                f"({listed}). A run directory holds one configuration, so this run would "
                "resume or skip a run trained with other settings. Train afresh over it "
                "with --overwrite (deletes that run), or choose another --experiment to "
                "keep both."
            )

    # history.csv -----------------------------------------------------------------

    def read_history(self) -> list[dict[str, Any]]:
        if not self.history.exists():
            return []
        with self.history.open(newline="") as stream:
            rows = list(csv.DictReader(stream))
        return [
            {key: (value if key == "phase" else _number(value)) for key, value in row.items()}
            for row in rows
        ]

    def read_predictions(self) -> Predictions:
        """predictions_test.csv: ``id, label, prob_<class>...`` as written at the run's end.

        Raises:
            MedtransferError: the file is missing or not in that format.
        """
        # pandas' C parser reads a 22,000-image split 6x faster than the csv module (a
        # report reads every run's), its floats the same to the last bit.
        import pandas as pd

        try:
            table = pd.read_csv(self.predictions, dtype={"id": str, "label": str},
                                keep_default_na=False)
            header = list(table.columns)
            # A multi-label run's file has a "masked" column (see Predictions).
            first = 3 if header[2:3] == ["masked"] else 2
            class_names = [name.removeprefix("prob_") for name in header[first:]]
            if header[:2] != ["id", "label"] or not class_names:
                raise ValueError("the header is not id, label, prob_<class>...")
            index = {name: position for position, name in enumerate(class_names)}
            if first == 3:
                labels = np.array([_finding_row(present, masked, index) for present, masked
                                   in zip(table["label"], table["masked"], strict=True)],
                                  dtype=np.int64).reshape(len(table), len(class_names))
            else:
                labels = np.array([index[label] for label in table["label"]], dtype=np.int64)
            return Predictions(
                ids=table["id"].tolist(),
                labels=labels,
                probabilities=table[header[first:]].to_numpy(dtype=np.float64),
                class_names=class_names,
            )
        except (OSError, IndexError, KeyError, ValueError) as error:
            raise MedtransferError(
                f"Cannot read the test predictions '{self.predictions}' ({error!r}). It is "
                "written when a run completes; train the run again with --overwrite to "
                "recreate it."
            ) from None

    def write_history(self, rows: list[dict[str, Any]]) -> None:
        """Writes history.csv whole with ``rows``, atomically (a kill never leaves half a
        row; a resume drops the rows of epochs a kill left unfinished)."""
        columns = (MULTI_LABEL_HISTORY_COLUMNS if rows and "val_auc_mean" in rows[0]
                   else HISTORY_COLUMNS)
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, columns)
        writer.writeheader()
        writer.writerows([{key: row.get(key, "") for key in columns} for row in rows])
        write_text_atomic(self.history, text.getvalue())


@dataclass(frozen=True)
class ResumeState:
    """What ``resume/state.json`` records after a completed epoch.

    Attributes:
        epoch: the last completed epoch (1-based).
        phase: its phase: the optimizer state in ``weights`` belongs to it.
        best_epoch: the best epoch so far (0 before any).
        best_auc: its validation micro AUC.
        weights: the model and optimizer weights after ``epoch``.
    """

    epoch: int
    phase: str
    best_epoch: int
    best_auc: float
    weights: Path


@dataclass(frozen=True)
class Predictions:
    """A run's test predictions: ``labels`` are indices into ``class_names``, or for a
    multi-label run (``id, label, masked, prob_<finding>...``, ``label`` and ``masked``
    the findings present and unknown, ``|``-joined) a matrix ``(N, F)`` of 1, 0, -1."""

    ids: list[str]
    labels: np.ndarray
    probabilities: np.ndarray
    class_names: list[str]

    @property
    def multi_label(self) -> bool:
        return self.labels.ndim == 2


def _finding_row(present: str, masked: str, index: dict[str, int]) -> list[int]:
    row = [0] * len(index)
    for names, value in ((present, 1), (masked, -1)):
        for name in filter(None, names.split("|")):
            row[index[name]] = value
    return row


@dataclass
class RunRecord:
    """One run directory as a reader finds it, in whatever state it is.

    Attributes:
        directory: the run directory.
        status: ``complete``, ``in progress`` (no metrics.json yet), ``diverged``,
            ``broken`` (config.yaml or metrics.json unreadable, see ``problem``), or any
            other status metrics.json records.
        config: the resolved config; None when config.yaml cannot be read.
        metrics: metrics.json (empty while in progress).
        history: history.csv's rows, one per epoch logged so far.
        running: in progress and a live process holds the directory's lock (else the
            run was interrupted and resumes when its command runs again).
        problem: why the directory is broken.
    """

    directory: RunDirectory
    status: str
    config: RunConfig | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    running: bool = False
    problem: str = ""

    @property
    def path(self) -> Path:
        return self.directory.path

    @property
    def epochs_done(self) -> int:
        return max((int(row["epoch"]) for row in self.history), default=0)

    @functools.cached_property
    def predictions(self) -> Predictions:
        """The test predictions, read on first use (only complete runs have them)."""
        return self.directory.read_predictions()


def read_run(path: str | Path) -> RunRecord:
    """Reads a run directory in any state; never fails on a broken one (see ``status``)."""
    directory = RunDirectory(Path(path).expanduser())
    metrics: dict[str, Any] = {}
    if directory.metrics.exists():
        try:
            metrics = read_json(directory.metrics)
            if not isinstance(metrics, dict):
                raise ValueError(f"it holds a {type(metrics).__name__}, not an object")
        except (OSError, ValueError) as error:
            return RunRecord(directory, "broken", problem=f"unreadable metrics.json ({error})")
    if not directory.config.is_file():
        return RunRecord(directory, "broken", metrics=metrics, problem="no config.yaml")
    try:
        config = directory.read_config()
        history = directory.read_history()
    except (MedtransferError, OSError, ValueError) as error:
        return RunRecord(directory, "broken", metrics=metrics,
                         problem=f"unreadable config.yaml or history.csv ({error})")
    if metrics and "status" not in metrics:
        return RunRecord(directory, "broken", config, metrics, history,
                         problem="metrics.json has no status")
    status = str(metrics.get("status", "in progress"))
    missing = [key for key in REQUIRED_METRICS if key not in metrics]
    if status == "complete" and missing:
        return RunRecord(directory, "broken", config, metrics, history,
                         problem=f"metrics.json has no {', '.join(missing)}")
    running = status == "in progress" and directory.is_locked()
    return RunRecord(directory, status, config, metrics, history, running)


def scan_experiment(path: str | Path) -> list[RunRecord]:
    """Every run directory directly under an experiment folder, sorted by name.

    A sub-folder is a run directory when it holds config.yaml, metrics.json or
    history.csv; anything else (a report folder, say) is not looked at.

    Raises:
        MedtransferError: ``path`` is not a folder.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise MedtransferError(
            f"'{path}' is not a folder. Pass an experiment folder, "
            "<logdir>/<experiment> (for example tensorboard_logs/demo)."
        )
    folders = (RunDirectory(child) for child in sorted(root.iterdir()) if child.is_dir())
    return [read_run(folder.path) for folder in folders
            if any(path.exists() for path in (folder.config, folder.metrics, folder.history))]


class TrainedRun:
    """A complete run, opened for reading: what report, inspect, predict and export use.

    Every command that works on a finished run opens it with :func:`open_run`, which
    fails clearly on anything that is not a complete run, and rebuilds its model and
    data through this object instead of reading the files itself.

    Attributes:
        directory: the run directory.
        config: its resolved config (config.yaml).
        metrics: its metrics.json.
    """

    def __init__(self, directory: RunDirectory, config: RunConfig, metrics: dict[str, Any]):
        self.directory, self.config, self.metrics = directory, config, metrics

    @property
    def path(self) -> Path:
        return self.directory.path

    def dataset(self):
        """The prepared dataset the run was trained on."""
        from medtransfer.data.prepared import load_prepared

        return load_prepared(self.config.dataset, Path(self.config.data_dir))

    def preprocess(self):
        """The net's ``preprocess_input`` under ``--scaling native``; None for ``unit``."""
        from medtransfer.models.registry import get_net

        return get_net(self.config.net).preprocess_input if self.config.scaling == "native" \
            else None

    def class_names(self) -> list[str]:
        """The classes in label order, from predictions_test.csv's ``prob_<class>``
        columns: the run's own record, so no prepared dataset is needed."""
        return self.directory.predicted_class_names() or []

    def model(self):
        """The classifier with the best checkpoint's weights, in float32 (also for a run
        trained with ``--mixed-precision``: analysis wants full precision)."""
        from medtransfer.models.init import rebuild_trained

        with _float32_policy():
            return rebuild_trained(
                self.config.net, self.config.num_classes, self.config.image_size,
                self.directory.best_weights, head_units=self.config.head_units,
                dropout=self.config.dropout, multi_label=self.config.multi_label,
            )

    def initial_model(self):
        """The classifier as the run initialised it, before its first training step.

        Rebuilt as ``run`` built it: ``keras.utils.set_random_seed(seed)`` (which reseeds
        Python, NumPy and TensorFlow in this process), then ``build_model`` with the
        run's net, init and seed, in float32. The weights are bit-identical to the run's
        initial weights. An ``imagenet`` or ``mean_var`` run needs its ImageNet file, a
        path init the run directory or file it started from.

        Raises:
            MedtransferError: what the init needs is no longer there.
        """
        import keras

        from medtransfer.models.init import build_model

        config = self.config
        head = choose_head(config, self.class_names())
        keras.utils.set_random_seed(config.seed)
        try:
            with _float32_policy():
                return build_model(
                    config.net, config.num_classes, config.image_size, config.init,
                    weights_file=config.weights_file, seed=config.seed,
                    head_units=config.head_units, dropout=config.dropout,
                    transfer_head=head.transferred, multi_label=config.multi_label,
                )
        except MedtransferError as error:
            raise MedtransferError(
                f"Cannot rebuild the initial model of the run in '{self.path}' from its "
                f"config (init '{config.init}'): {error}"
            ) from None

    def split(self, name: str = "test", batch_size: int | None = None, *,
              scaled: bool = True):
        """A split of the run's dataset as the run evaluated it: ``(images, targets, ids)``
        batches in the split's fixed order, resized and scaled as in training (targets
        one-hot, or a multi-label run's findings: 1, 0, -1).

        Args:
            name: ``train``, ``validation`` or ``test``.
            batch_size: default the run's.
            scaled: ``False`` keeps pixels in [0, 1] even under ``--scaling native``
                (to draw them); pass such images through :meth:`to_model_input`.
        """
        from medtransfer.data.pipeline import make_dataset
        from medtransfer.training.task import run_task, task_frame

        dataset = self.dataset()
        task = run_task(self.config, dataset)
        frame = task_frame(task, dataset, name)
        return make_dataset(
            dataset.shard_paths(name), self.config.num_classes,
            image_size=self.config.image_size,
            batch_size=batch_size or self.config.batch_size, training=False,
            include_ids=True, preprocess=self.preprocess() if scaled else None,
            keep_labels=task.keep_labels, label_length=task.label_length,
            any_finding=task.any_finding,
            keep_ids=set(frame["id"]) if task.any_finding else None,
            num_examples=len(frame), cache_limit_bytes=0,
        )

    def to_model_input(self, images):
        """Images with pixels in [0, 1] (``split(scaled=False)``) scaled as the run's model
        expects them."""
        preprocess = self.preprocess()
        return images if preprocess is None else preprocess(images * 255.0)


@contextmanager
def _float32_policy():
    # The precision policy is global to Keras; a run trained mixed (or a notebook that set
    # it) must not make the rebuilt model float16.
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


@dataclass(frozen=True)
class HeadChoice:
    """Whether a run's classifier head starts from its path init's head or new.

    Attributes:
        transferred: the source's head is loaded (the same task).
        reason: why, in words, for the run's log.
    """

    transferred: bool
    reason: str

    @property
    def word(self) -> str:
        """``transferred`` or ``new``: metrics.json's ``head``."""
        return "transferred" if self.transferred else "new"


def choose_head(config: RunConfig, class_names: Sequence[str]) -> HeadChoice:
    """Whether a run of ``config`` transfers its path init's classifier head.

    The head is a map from features to *these* classes: it transfers only when the source
    run was trained on the same class names in the same order, of the same kind of task
    (single-label or multi-label), and with the same head units. A source on other
    classes, even as many, gets a new head; so does a bare weights file, which records
    no class names (pass its run directory instead). The
    source's classes are read from its predictions_test.csv, else its config.yaml's
    ``classes``, else its prepared dataset's classes; when none of these can be read the
    head is new.

    Args:
        config: the run (its ``init`` a path or a named init).
        class_names: the run's classes in output order.
    """
    if not config.init_is_path:
        return HeadChoice(False, f"init {config.init} has no classifier head")
    source = RunDirectory(Path(config.init).expanduser())
    pretraining = (source.read_metrics() or {}).get("pretraining")
    if pretraining:
        return HeadChoice(False, f"the source is {pretraining} pretraining, which trains no "
                                 "classifier head")
    if not source.config.is_file():
        return HeadChoice(False, "a weights file records no class names; to transfer the "
                                 "head of the same task, pass the source's run directory")
    try:
        source_config = source.read_config()
    except MedtransferError:
        return HeadChoice(False, f"the source's {source.config.name} cannot be read")
    source_names = source.predicted_class_names() or _configured_class_names(source_config)
    if source_names is None:
        return HeadChoice(False, f"the source's classes are unknown (no test predictions, "
                                 f"and its dataset '{source_config.dataset}' is not prepared "
                                 "here)")
    if source_config.multi_label != config.multi_label:
        # A sigmoid per finding and a softmax over classes are different maps, even on
        # the same names (digits_pairs' findings "0".."9" and digits' classes).
        kinds = {True: "multi-label", False: "single-label"}
        return HeadChoice(False, f"the source's task was {kinds[source_config.multi_label]}, "
                                 f"this run's is {kinds[config.multi_label]}")
    if list(source_names) != list(class_names):
        return HeadChoice(False, f"the source was trained on classes {_listed(source_names)}, "
                                 f"this run's are {_listed(class_names)}")
    if source_config.head_units != config.head_units:
        return HeadChoice(False, f"the source's head has {source_config.head_units} units, "
                                 f"this run's {config.head_units}")
    return HeadChoice(True, f"the source was trained on the same classes "
                            f"{_listed(class_names)}")


def _configured_class_names(config: RunConfig) -> list[str] | None:
    """A run's classes from its config: ``classes``, else all of its prepared dataset's."""
    if config.classes:
        return list(config.classes)
    from medtransfer.data.catalog import prepared_datasets

    found = [summary.class_names for summary in prepared_datasets(config.data_dir)
             if summary.name == config.dataset]
    return found[0] if found else None


def _listed(names: Sequence[str], shown: int = 8) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def find_run(path: str | Path, command: str) -> RunDirectory:
    """The run directory at ``path``, finished or not, for ``command``.

    Raises:
        MedtransferError: ``path`` is not a run directory (it has no config.yaml).
    """
    directory = RunDirectory(Path(path).expanduser())
    if not directory.config.is_file():
        raise MedtransferError(
            f"{command}: '{path}' is not a run directory: it has no config.yaml"
            f"{working_directory_note(path)}. Pass a run directory, "
            "<logdir>/<experiment>/<run_id>, as 'medtransfer run' printed it."
        )
    return directory


def open_run(path: str | Path, command: str) -> TrainedRun:
    """Opens a complete run directory for ``command`` (report, tsne, predict, ...).

    Raises:
        MedtransferError: ``path`` is not a run directory, or its run is not complete
            (still training, killed, or diverged), naming what was found.
    """
    record = read_run(find_run(path, command).path)
    if record.status == "broken":
        raise MedtransferError(
            f"{command}: the run directory '{path}' is broken: {record.problem}. Train its "
            "configuration again with 'medtransfer run ... --overwrite'."
        )
    if record.status != "complete" or not record.directory.best_weights.is_file():
        found = {"in progress": "it has no metrics.json yet",
                 "complete": "its best.weights.h5 is missing"}.get(
                     record.status, f"its status is '{record.status}'")
        raise MedtransferError(
            f"{command}: the run in '{path}' is not complete ({found}). Finish it first by "
            "running the same 'medtransfer run' command again (it resumes), then retry."
        )
    return TrainedRun(record.directory, record.config, record.metrics)


def _number(text: str) -> int | float | str:
    if text == "":
        return text
    try:
        return int(text)
    except ValueError:
        return float(text)


class TensorBoardLog:
    """Per-epoch scalars in ``train/`` and ``validation/``, and the run's HParams entry.

    Tags are the history.csv column names (``loss``, ``accuracy``, ``lr`` in train;
    ``val_loss``, ``val_accuracy``, ``val_auc_micro``, ``val_auc_macro`` in validation),
    so a curve in TensorBoard and a column in history.csv always agree. A complete run
    adds its results (``best/val_auc_micro``, ``test/auc_micro``, ...; see
    ``RESULT_SCALARS``) in its top folder, which the HParams tab shows as metrics.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._writers: dict[str, Any] = {}

    def _writer(self, name: str):
        import tensorflow as tf  # here, so that readers of runs (report) never load it

        if name not in self._writers:
            folder = self.run_dir if name == "hparams" else self.run_dir / name
            self._writers[name] = tf.summary.create_file_writer(str(folder))
        return self._writers[name]

    def write_hparams(self, config: dict[str, Any], train_images: int | None = None) -> None:
        """Writes the HParams entry once, so TensorBoard's HParams tab compares runs.

        Every identity field is a hyperparameter (see :func:`hparam_values`), so whatever
        differs between an experiment's runs (train_size, classes, lr, ...) is a column.
        No experiment summary (``hparams_config``) is written: TensorBoard would take one
        run's as the whole logdir's and hide what that run did not list; without it,
        TensorBoard derives each column's type (number, bool, text) and range from the
        values of every run, and its metrics from every run's scalars.

        Args:
            config: the resolved run config, as a dict.
            train_images: how many training images the run uses; the ``train_size``
                column of a run on the whole split.
        """
        from tensorboard.plugins.hparams import api as hparams_api

        values = hparam_values(config, train_images)
        # A resumed run writes it again: drop the old entry so the tab shows the run once.
        for old in self.run_dir.glob("events.out.tfevents.*"):
            old.unlink()
        with self._writer("hparams").as_default():
            # The trial id names the session in the HParams tab: with the experiment in
            # it, the same run id in two experiments stays two rows under one logdir.
            hparams_api.hparams(
                values, trial_id=f"{self.run_dir.parent.name}/{self.run_dir.name}")
        self._writers["hparams"].flush()

    def write_results(self, metrics: dict[str, Any]) -> None:
        """Writes a complete run's results (``RESULT_SCALARS``) at step = best epoch."""
        import tensorflow as tf

        with self._writer("hparams").as_default():
            for tag, key in RESULT_SCALARS.items():
                if isinstance(metrics.get(key), int | float):
                    tf.summary.scalar(tag, float(metrics[key]), step=int(metrics["best_epoch"]))
        self.close()

    def write_epoch(self, row: dict[str, Any]) -> None:
        import tensorflow as tf

        step = int(row["epoch"])
        for writer_name, tags in (("train", TRAIN_SCALARS), ("validation", VALIDATION_SCALARS)):
            with self._writer(writer_name).as_default():
                for tag in tags:
                    if row.get(tag, "") != "":
                        tf.summary.scalar(tag, float(row[tag]), step=step)
            self._writers[writer_name].flush()

    def rewrite(self, rows: list[dict[str, Any]]) -> None:
        """Replaces all scalar event files by ``rows``: each epoch exactly once."""
        self.close()
        for name in ("train", "validation"):
            shutil.rmtree(self.run_dir / name, ignore_errors=True)
        for row in rows:
            self.write_epoch(row)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


def hparam_values(config: dict[str, Any], train_images: int | None = None) -> dict[str, Any]:
    """The HParams entry of a run: every identity field of ``config`` (every field but
    ``NOT_IDENTITY``), each always of one type, so that a column compares across runs.

    Numbers stay numbers (an unset one, like ``patience``, is left out rather than
    turned into text), ``train_size`` is the number of training images used (the whole
    split's count when unset), ``classes`` is text (``3,5,7``, or ``all``), ``findings``
    too (a multi-label run's; it and ``any_finding`` are left out for a single-label run).
    """
    values: dict[str, Any] = {}
    for name in FIELDS:
        value = config.get(name)
        if name in NOT_IDENTITY:
            continue
        if name == "train_size" and value is None:
            value = train_images
        elif name == "classes":
            value = "all" if value is None else ",".join(str(item) for item in value)
        elif name == "findings" and value is not None:
            value = ",".join(str(item) for item in value)
        elif name == "any_finding" and config.get("findings") is None:
            continue  # a single-label run: no finding to speak of
        if value is not None:
            values[name] = value if isinstance(value, bool | int | float | str) else str(value)
    return values
