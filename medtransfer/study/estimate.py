"""``sweep --estimate``: what a grid will cost on this machine, before it runs.

Each distinct (net, image size, global batch, precision, replicas) of the runs left is
calibrated once on this machine's devices (every GPU under the run's strategy, or the
CPU): a classifier is built, and for each phase it trains in (phase 1, the backbone
frozen; phase 2, the bottom F frozen) a few real training steps on random images are
timed after warm-up (three turns of 5, the median turn kept), and so are a few
prediction steps (validation, test) and the precise-BatchNorm pass. The first steps of
a phase, which trace its functions, are timed apart (a run pays them once per phase),
as are saving the weights (twice an epoch: the checkpoint candidate and the resume
state), building the model, and starting a run's process (importing TensorFlow; the
machine's, not the net's, so measured once per estimate). The numbers are cached in
``<logdir>/.estimates.json`` under this machine, the versions of medtransfer,
TensorFlow and Keras and the calibration's own format (a cache of an older format is
measured again), so a second estimate is instant; the file also keeps each run's
last estimate, which ``report`` shows beside its measured wall time.

A run also pays a set-up outside its steps: once (building its input pipeline, reading
the dataset's labels and split.csv, TensorBoard's writers and HParams, writing its
files, the process's exit) and each epoch (its records: the validation metrics,
history.csv, TensorBoard; the validation images read through the pipeline). It is
measured, per calibration and dataset, on one real run as the sweep trains it (its own
``medtransfer run`` process, in a temporary logdir): 0+2 epochs (2+0 for a run without
phase 2) on one global batch of training images, the validation and test splits whole.
Its second epoch less its training steps and what the calibration expects of the rest
(validation, BatchNorm pass, saves) is the set-up each epoch; its wall time less what
the calibration expects of the whole tiny run and its two epochs' set-up is the set-up
once, which every run pays once per process (a resumed run again). A dataset not
prepared here (sizes from the sweep file's ``split_sizes``) cannot be run: its set-up is
left out, and the output says so.

A run's expected wall time is then:

    start-up + build + set-up once + per phase: trace + its epochs x (train steps x step
    time + validation steps x prediction step time + BatchNorm pass + 2 weight saves
    + set-up each epoch) + test steps x prediction step time

with the step counts from each dataset's prepared split sizes (the run's ``train_size``
when smaller), or, for a dataset not prepared here, from the sweep file's
``split_sizes``. A run interrupted after some epochs counts only the epochs left; a
complete run counts nothing. With ``machines`` (and ``parallel`` runs on each), the runs
are handed out in grid order to the first free place, a run that transfers from another
only after that one ends, as the sweep does: the grid's expected end is the last run's.

What it leaves out: reading images from a cold disk (the calibration's images are in
memory), the data pipeline's decoding and augmentation when they, not the device, limit
a step, other jobs on the machine, and epochs ``--patience`` would skip. The set-up is
one run's measurement: on a loaded machine it carries that moment's load.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtransfer.config import RunConfig, default_image_size
from medtransfer.errors import MedtransferError
from medtransfer.fileio import read_json, write_json_atomic
from medtransfer.lifetime import child_environment
from medtransfer.machine import CORES_ENV, device_shares, usable_cores, visible_gpus
from medtransfer.study.costs import clock
from medtransfer.study.grid import PlannedRun, Sweep, load_sweep
from medtransfer.study.launch import config_text, run_command
from medtransfer.training.rundir import RunDirectory
from medtransfer.version import __version__

CACHE = ".estimates.json"
# What a calibration measures and how: one more whenever that changes, so that a cache
# of the old kind is measured again, not trusted. 2: a phase traces its steps once, and
# its first cost includes building the training state (2026-12-07).
CALIBRATION_FORMAT = 2
SPLITS = ("train", "validation", "test")
WARMUP_STEPS = 2
TIMED_STEPS = 5
# Steady steps are timed in this many turns of TIMED_STEPS, the median kept: one turn
# caught by another job's burst on a shared machine does not set the run's rate.
TURNS = 3
BATCHNORM_BATCHES = 3
SAVES_PER_EPOCH = 2  # the checkpoint candidate and the resume state's weights
NO_SETUP = {"once": 0.0, "epoch": 0.0}  # of a dataset not prepared here


@dataclass(frozen=True)
class Calibration:
    """What one (net, size, batch, precision, replicas) costs here, in seconds.

    Attributes:
        startup: starting a run's process up to importing TensorFlow and medtransfer.
        build: building the classifier.
        save: saving its weights once.
        predict_step: one prediction step of a global batch (validation, test).
        predict_trace: what the first prediction of a phase costs beyond its steps.
        replicas: the replicas of the run's strategy here (the global batch is the
            batch times these).
        phases: per phase (``warmup`` or ``f<freeze>``): ``step`` (one training step),
            ``trace`` (the phase's first training steps and precise-BatchNorm pass beyond
            their steady time) and
            ``batchnorm_image`` (the precise-BatchNorm pass per image; 0 when no
            BatchNorm layer trains in that phase).
        setup: per dataset, what a run pays beyond the above (see the module's
            docstring): ``once`` a run and each ``epoch``; a dataset not prepared here
            has none.
    """

    startup: float
    build: float
    save: float
    predict_step: float
    predict_trace: float
    phases: dict[str, dict[str, float]]
    replicas: int = 1
    setup: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class SweepEstimate:
    """The expected cost of a sweep's runs on this machine.

    Attributes:
        sweep: the sweep.
        rows: per run: run_id, state, epochs_left, seconds (expected wall time left),
            spent (seconds already spent by an interrupted run), setup_seconds and
            setup_epoch_seconds (what the run pays outside its steps, once and each
            epoch), images_per_second_warmup, images_per_second_finetune.
        machines: machines the runs are handed out to.
        parallel: runs at once on each.
        end_seconds: when the last run is expected to end, from now.
        calibrated: the calibrations measured by this call (none: all from the cache).
    """

    sweep: Sweep
    rows: list[dict[str, Any]]
    machines: int
    parallel: int
    end_seconds: float
    calibrated: list[str] = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        return sum(row["seconds"] for row in self.rows)

    @property
    def frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows)

    def text(self) -> str:
        """The estimate as printed by ``sweep --estimate``."""
        lines = [f"estimate for {self.sweep.path} on {platform.node()} "
                 f"({_devices_text()}; {len(self.calibrated)} calibration(s) measured now, "
                 "the others from the cache):"]
        unmeasured = set()
        for row in self.rows:
            spent = f", {clock(row['spent'])} spent" if row["spent"] else ""
            setup = (f"set-up {row['setup_seconds']:.0f} s + "
                     f"{row['setup_epoch_seconds']:.1f} s an epoch")
            if not row["setup_measured"]:
                setup += "*"
                unmeasured.add(row["dataset"])
            lines.append(f"  {row['state']:<9} {row['run_id']}  {clock(row['seconds'])} "
                         f"({row['epochs_left']} epochs left{spent}; {setup})")
        where = (f"{self.machines} machine{'s' if self.machines > 1 else ''}"
                 f"{f' x {self.parallel} runs at once' if self.parallel > 1 else ''}")
        device_hours = sum(row["seconds"] * row["devices"] for row in self.rows) / 3600
        lines.append(f"total {clock(self.total_seconds)} of run time left, "
                     f"{device_hours:.2f} device-hours; on {where} the grid ends in about "
                     f"{clock(self.end_seconds)}.")
        lines.append("Set-up: what a run pays outside its steps, once (starting its process, "
                     "building the model and the input pipeline, reading the labels, "
                     "TensorBoard, the test predictions' files, exiting) and each epoch "
                     "(beyond validation, BatchNorm pass and saves: its records), timed on "
                     "one tiny real run per net, size and dataset here.")
        if unmeasured:
            lines.append(f"* without the input pipeline's part: {', '.join(sorted(unmeasured))} "
                         "not prepared here, so no tiny run could measure it.")
        lines.append("Left out: reading images from a cold disk, the input pipeline when it "
                     "and not the device limits a step, other jobs on the machine.")
        return "\n".join(lines)


def estimate_sweep(path: str | Path, *, logdir: str | Path | None = None, machines: int = 1,
                   parallel: int | str | None = None, gpus_per_run: int = 1) -> SweepEstimate:
    """Estimates every run of a sweep file left to do (see the module's docstring).

    Args:
        path: the sweep file.
        logdir: overrides the root of the experiments (where the cache lives).
        machines: how many machines like this one share the grid.
        parallel: runs at once on each machine (``sweep --parallel``); the calibration
            then runs on one run's share of this machine when TensorFlow is not started
            yet.
        gpus_per_run: GPUs each of those runs gets.

    Raises:
        MedtransferError: ``machines`` below 1, or a run's dataset is neither prepared
            nor given in the sweep file's ``split_sizes`` (the message says what to add).
    """
    if not isinstance(machines, int) or machines < 1:
        raise MedtransferError(f"--machines {machines} is not valid: give how many machines "
                               "like this one share the grid, a whole number from 1.")
    sweep = load_sweep(path, logdir)
    shares = device_shares(parallel, gpus_per_run) if parallel is not None else [{}]
    missing = missing_inputs(sweep)
    if missing:
        raise MedtransferError(missing)
    with _one_share(shares[0]):
        rows, calibrated = _estimate_runs(sweep)
    end = schedule(sweep.runs, [row["seconds"] for row in rows], machines * len(shares))
    return SweepEstimate(sweep, rows, machines, len(shares), end, calibrated)


def _estimate_runs(sweep: Sweep) -> tuple[list[dict[str, Any]], list[str]]:
    """Every run's estimate (see :func:`run_estimate`), calibrating what the cache lacks;
    also the calibration keys measured now."""
    cache_path = Path(sweep.logdir) / CACHE
    cache = _read_cache(cache_path)
    entries = cache["calibrations"].setdefault(machine_key(), {})
    needed: dict[str, tuple[RunConfig, list[str], dict[str, RunConfig]]] = {}
    for run in sweep.runs:
        config, phases, datasets = needed.setdefault(calibration_key(run.config),
                                                     (run.config, [], {}))
        phases.extend(phase for phase, _ in run_phases(run.config) if phase not in phases)
        if not _not_prepared(run.config):
            datasets.setdefault(run.config.dataset, run.config)
    calibrated = []
    startup = None  # one machine: its process start-up is measured once, when first needed
    for key, (config, phases, datasets) in needed.items():
        entry = entries.get(key)
        if entry is None or any(phase not in entry["phases"] for phase in phases):
            if entry is None and startup is None:
                startup = _startup_seconds()
            entry = entries[key] = _calibrate(config, phases, entry, startup)
            calibrated.append(key)
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(cache_path, cache)
        for dataset, example in datasets.items():
            setup = entry.setdefault("setup", {})
            if dataset not in setup:
                setup[dataset] = measure_setup(example, Calibration(**entry))
                calibrated.extend([key] if key not in calibrated else [])
                write_json_atomic(cache_path, cache)
    rows = [run_estimate(run, Calibration(**entries[calibration_key(run.config)]),
                         split_sizes(run.config, sweep)
                         if not _without_sizes(run.config, sweep) else None)
            for run in sweep.runs]
    # For the report, beside each run's measured wall time: the whole run's estimate.
    recorded = {row["run_id"]: {"seconds": row["whole_seconds"], "machine": machine_key()}
                for row in rows if row["whole_seconds"] is not None}
    if cache["runs"].get(sweep.experiment) != recorded:
        cache["runs"][sweep.experiment] = recorded
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(cache_path, cache)
    return rows, calibrated


def missing_inputs(sweep: Sweep) -> str:
    """What the estimate of the runs left needs and does not have: the split sizes of each
    dataset neither prepared here nor given in the sweep file; "" when nothing is missing."""
    missing = sorted({run.config.dataset for run in sweep.runs
                      if not RunDirectory(run.run_dir).is_complete()
                      and _without_sizes(run.config, sweep)})
    if not missing:
        return ""
    example = ", ".join(f"{name}: {{train: N, validation: N, test: N}}" for name in missing)
    return (f"The estimate needs the number of images in each split of {', '.join(missing)}, "
            "which are not prepared here. Prepare them, or give the sizes at the top level "
            f"of {sweep.path}: split_sizes: {{{example}}} (the counts prepare would make, "
            "8:1:1 of the kept images).")


def _without_sizes(config: RunConfig, sweep: Sweep) -> bool:
    """Whether a run's dataset is neither prepared here nor in the sweep's split_sizes."""
    return config.dataset not in sweep.split_sizes and _not_prepared(config)


def _not_prepared(config: RunConfig) -> bool:
    from medtransfer.data.prepared import not_prepared_message

    return bool(not_prepared_message(config.dataset, Path(config.data_dir)))


def split_sizes(config: RunConfig, sweep: Sweep) -> dict[str, int]:
    """Images per split a run of ``config`` sees: the prepared dataset's (with its
    ``classes``), else the sweep file's ``split_sizes`` (a config's header figures stand
    in only until the dataset is prepared here); train at most ``train_size``."""
    from medtransfer.data.catalog import MANIFEST

    prepared = (Path(config.data_dir) / config.dataset / MANIFEST).is_file()
    if config.dataset not in sweep.split_sizes or prepared:
        return prepared_sizes(config)
    sizes = dict(sweep.split_sizes[config.dataset])
    if config.train_size is not None:
        sizes["train"] = min(sizes["train"], config.train_size)
    return sizes


def prepared_sizes(config: RunConfig) -> dict[str, int]:
    """Images per split a run of ``config`` sees in the prepared dataset (with its
    ``classes``); train at most ``train_size``."""
    from medtransfer.data.prepared import load_prepared

    dataset = load_prepared(config.dataset, Path(config.data_dir))
    sizes = {split: len(dataset.split_frame(split, config.classes)) for split in SPLITS}
    if config.train_size is not None:
        sizes["train"] = min(sizes["train"], config.train_size)
    return sizes


def run_phases(config: RunConfig) -> list[tuple[str, int]]:
    """The phases a run trains in, each with its number of epochs."""
    phases = [("warmup", config.warmup_epochs), (f"f{config.freeze:.2f}", config.finetune_epochs)]
    return [(phase, epochs) for phase, epochs in phases if epochs > 0]


def calibration_key(config: RunConfig) -> str:
    """What a run's speed depends on: net, input size, per-replica batch, precision and
    strategy (the replicas it gives on this machine)."""
    size = config.image_size or default_image_size(config.net, config.dataset,
                                                   Path(config.data_dir))
    precision = "mixed_float16" if config.mixed_precision else "float32"
    return f"{config.net}|{size}px|batch {config.batch_size}|{precision}|{config.strategy}"


def run_estimate(run: PlannedRun, calibration: Calibration,
                 sizes: dict[str, int] | None) -> dict[str, Any]:
    """One run's expected wall time left, from its calibration and split sizes (None for
    a complete run whose dataset is not here: nothing left, no whole-run estimate).

    Returns:
        run_id, dataset, state, epochs_left, seconds (left), spent (by an interrupted
        run's epochs), whole_seconds (the whole run, from its process's start),
        setup_seconds (start-up, build and the measured set-up: what the run pays once
        outside its steps), setup_epoch_seconds (what each epoch pays beyond its steps,
        validation, BatchNorm pass and saves), setup_measured (whether the set-up of its
        dataset was measured), devices (the replicas it trains on),
        images_per_second_warmup and images_per_second_finetune (training steps).
    """
    config = run.config
    directory = RunDirectory(run.run_dir)
    done, spent = 0, 0.0
    if directory.is_complete():
        state = "complete"
        done = config.total_epochs
    else:
        done = directory.completed_epochs()
        if done:
            spent = sum(float(row["seconds"]) for row in directory.read_history()
                        if int(row["epoch"]) <= done)
        state = "resume" if done else "to do"
    batch = config.batch_size * calibration.replicas
    rates = {("warmup" if phase == "warmup" else "finetune"):
             batch / calibration.phases[phase]["step"] for phase, _ in run_phases(config)}
    setup = calibration.setup.get(config.dataset, NO_SETUP)
    return {"run_id": run.run_id, "dataset": config.dataset, "state": state,
            "epochs_left": config.total_epochs - done,
            "seconds": 0.0 if state == "complete" else _seconds(config, calibration, sizes,
                                                                done),
            "spent": spent,
            "whole_seconds": None if sizes is None else _seconds(config, calibration, sizes, 0),
            "setup_seconds": calibration.startup + calibration.build + setup["once"],
            "setup_epoch_seconds": setup["epoch"],
            "setup_measured": config.dataset in calibration.setup,
            "devices": calibration.replicas,
            **{f"images_per_second_{phase}": rates.get(phase, math.nan)
               for phase in ("warmup", "finetune")}}


def _seconds(config: RunConfig, calibration: Calibration, sizes: dict[str, int],
             done: int) -> float:
    """A run's expected wall time from its process's start, after ``done`` epochs."""
    batch = config.batch_size * calibration.replicas
    train_steps, validation_steps, test_steps = (math.ceil(sizes[split] / batch)
                                                 for split in SPLITS)
    batchnorm_images = min(sizes["train"], _precise_images()) \
        if config.bn_stats == "precise" else 0
    setup = calibration.setup.get(config.dataset, NO_SETUP)
    seconds = (calibration.startup + calibration.build + setup["once"]
               + calibration.predict_trace + test_steps * calibration.predict_step)
    first = 0
    for phase, epochs in run_phases(config):
        cost = calibration.phases[phase]
        left = max(0, min(epochs, first + epochs - done))
        first += epochs
        if left:
            epoch = (train_steps * cost["step"] + setup["epoch"]
                     + _beyond_steps(calibration, cost, validation_steps, batchnorm_images))
            seconds += cost["trace"] + calibration.predict_trace + left * epoch
    return seconds


def _beyond_steps(calibration: Calibration, cost: dict[str, float], validation_steps: int,
                  batchnorm_images: int) -> float:
    """What the calibration expects of an epoch beyond its training steps: validation,
    the precise-BatchNorm pass and the weight saves."""
    return (validation_steps * calibration.predict_step
            + batchnorm_images * cost["batchnorm_image"] + SAVES_PER_EPOCH * calibration.save)


def schedule(runs: list[PlannedRun], seconds: list[float], places: int) -> float:
    """When the last run ends, with the runs handed out in grid order to the first free
    of ``places`` (a run that transfers from another starts after that one's end)."""
    free = [0.0] * max(1, places)
    ends: dict[str, float] = {}
    for run, duration in zip(runs, seconds, strict=True):
        if not duration:
            ends[run.run_id] = 0.0
            continue
        place = min(range(len(free)), key=free.__getitem__)
        start = max(free[place], ends.get(run.source.run_id, 0.0) if run.source else 0.0)
        free[place] = ends[run.run_id] = start + duration
    return max(ends.values(), default=0.0)


def machine_key() -> str:
    """This machine and the versions (and calibration format) a calibration holds for."""
    import importlib.metadata as metadata

    versions = []
    for package in ("tensorflow", "keras"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} none")
    return (f"{platform.node()}|{_cpu_name()}|{usable_cores()} cores|"
            f"GPUs {','.join(visible_gpus()) or 'none'}|medtransfer {__version__}|"
            f"calibration {CALIBRATION_FORMAT}|" + "|".join(versions))


def _precise_images() -> int:
    from medtransfer.training.batchnorm import PRECISE_BN_IMAGES

    return PRECISE_BN_IMAGES


def _calibrate(config: RunConfig, phases: list[str], known: dict[str, Any] | None,
               startup: float | None) -> dict[str, Any]:
    """Measures a run's costs on random images (see :class:`Calibration`); keeps the phases
    ``known`` holds already, and takes the process start-up measured (``startup``)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from medtransfer.models.classifier import get_backbone
    from medtransfer.models.freezing import freeze_backbone, freeze_bottom_layers
    from medtransfer.models.init import build_model
    from medtransfer.training.batchnorm import PreciseBatchNorm, trainable_batchnorm_layers
    from medtransfer.training.run import build_training_state, compile_model
    from medtransfer.training.strategy import make_strategy, set_precision

    size = int(calibration_key(config).split("|")[1].removesuffix("px"))
    classes = config.num_classes or _classes(config)
    entry = dict(known or {"phases": {}})
    set_precision(config.mixed_precision)
    try:
        strategy = make_strategy(config.strategy)
        replicas = strategy.num_replicas_in_sync
        batch = config.batch_size * replicas
        random = np.random.default_rng(0)
        images = random.random((batch, size, size, 3), dtype=np.float32)
        labels = np.eye(classes, dtype=np.float32)[random.integers(0, classes, batch)]
        train = tf.data.Dataset.from_tensors((images, labels)).repeat()
        started = time.perf_counter()
        with strategy.scope():
            model = build_model(config.net, classes, size, "glorot", seed=0)
        if known is None:
            entry["build"] = time.perf_counter() - started
            entry["startup"] = startup
        backbone = get_backbone(model)
        for phase in phases:
            if phase in entry["phases"]:
                continue
            if phase == "warmup":
                freeze_backbone(backbone)
            else:
                freeze_bottom_layers(backbone, float(phase.removeprefix("f")))
            with strategy.scope():
                compile_model(model, 1e-5)
            # A run builds its training state, then traces: both are the phase's first cost.
            first = _timed(build_training_state, model, train.element_spec) + _timed(
                model.fit, train, steps_per_epoch=WARMUP_STEPS, epochs=1, verbose=0,
                shuffle=False)
            steady = _median_timed(model.fit, train, steps_per_epoch=TIMED_STEPS, epochs=1,
                                   verbose=0, shuffle=False) / TIMED_STEPS
            batchnorm_image, batchnorm_trace = 0.0, 0.0
            if trainable_batchnorm_layers(backbone):
                batchnorm = PreciseBatchNorm(model, tf.data.Dataset.from_tensors(
                    (images[:config.batch_size], labels[:config.batch_size])
                ).repeat(BATCHNORM_BATCHES))
                batchnorm_first = _timed(batchnorm.update)  # traces its probe
                batchnorm_pass = _timed(batchnorm.update)
                batchnorm_image = batchnorm_pass / (BATCHNORM_BATCHES * config.batch_size)
                batchnorm_trace = max(0.0, batchnorm_first - batchnorm_pass)
            entry["phases"][phase] = {
                "step": steady, "batchnorm_image": batchnorm_image,
                "trace": max(0.0, first - WARMUP_STEPS * steady) + batchnorm_trace}
            evaluation = tf.data.Dataset.from_tensors(images).repeat(TIMED_STEPS)
            predict_first = _timed(model.predict, evaluation.take(1), verbose=0)
            predict_step = _median_timed(model.predict, evaluation, verbose=0) / TIMED_STEPS
            entry["predict_step"] = predict_step
            entry["predict_trace"] = max(0.0, predict_first - predict_step)
        with tempfile.TemporaryDirectory(prefix="medtransfer-estimate-") as folder:
            entry["save"] = _timed(model.save_weights,
                                   Path(folder) / "calibration.weights.h5")
        entry["replicas"] = replicas
    finally:
        set_precision(False)
        keras.backend.clear_session()
    return entry


def measure_setup(config: RunConfig, calibration: Calibration) -> dict[str, float]:
    """A run's set-up on ``config``'s dataset (see the module's docstring), in seconds:
    ``epoch``, what the tiny run's second epoch took beyond its training steps less what
    ``calibration`` expects of that (validation, precise BatchNorm, saves); ``once``, the
    tiny run's wall time less what ``calibration`` (without a set-up of that dataset)
    expects of it and less its two epochs' ``epoch``. Both at least 0."""
    with tempfile.TemporaryDirectory(prefix="medtransfer-estimate-") as folder:
        tiny = setup_run_config(config, Path(folder) / "logs", calibration.replicas)
        seconds, history = _run_seconds(tiny)
    sizes = prepared_sizes(tiny)
    ((phase, epochs),) = run_phases(tiny)
    second = history[-1]
    batchnorm_images = min(sizes["train"], _precise_images()) \
        if tiny.bn_stats == "precise" else 0
    epoch = max(0.0, float(second["seconds"]) - float(second["train_seconds"]) - _beyond_steps(
        calibration, calibration.phases[phase],
        math.ceil(sizes["validation"] / (tiny.batch_size * calibration.replicas)),
        batchnorm_images))
    return {"once": max(0.0, seconds - _seconds(tiny, calibration, sizes, 0) - epochs * epoch),
            "epoch": epoch}


def setup_run_config(config: RunConfig, logdir: Path, replicas: int) -> RunConfig:
    """The tiny run that measures ``config``'s set-up: the same net, size and dataset, 0+2
    epochs in its phase 2 (2+0 without one) on one global batch of training images (at
    least one per class), filed under ``logdir``. A run that starts from another run's
    weights starts from random ones: that run is not there before the sweep."""
    sizes = prepared_sizes(config)
    train = min(sizes["train"], max(config.batch_size * replicas, _classes(config)))
    tiny = config.replace(epochs="0+2" if config.finetune_epochs else "2+0",
                          train_size=train, logdir=str(logdir), patience=None)
    if config.init_is_path:
        tiny = tiny.replace(init=RunConfig().init, weights_file=None)
    return tiny


def _run_seconds(config: RunConfig) -> tuple[float, list[dict[str, Any]]]:
    """Trains ``config`` as the sweep does, in its own ``medtransfer run`` process, and
    returns its wall time (start to exit) and its history.csv's rows."""
    started = time.perf_counter()
    child = subprocess.run(run_command(), input=config_text(config), capture_output=True,
                           text=True, errors="replace", env=child_environment())
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        tail = "\n".join(child.stderr.strip().splitlines()[-10:])
        raise MedtransferError(
            f"The estimate times a run's set-up on one tiny real run of {config.net} at "
            f"{config.image_size or 'its default'} px on {config.dataset}, and that run "
            f"failed (exit code {child.returncode}); its last lines:\n{tail}\nThe sweep's "
            "runs would likely fail the same way: run one of them alone with "
            "'medtransfer run' to see why, fix it, and estimate again.")
    return seconds, RunDirectory(config.run_dir).read_history()


def _classes(config: RunConfig) -> int:
    from medtransfer.data.prepared import dataset_spec

    spec = dataset_spec(config.dataset, Path(config.data_dir))
    if config.classes:
        return len(config.classes)
    # The head's width barely changes a step's time: 2 when the data decides.
    return spec.num_classes if spec is not None and spec.num_classes else 2


def _timed(call, *args, **kwargs) -> float:
    started = time.perf_counter()
    call(*args, **kwargs)
    return time.perf_counter() - started


def _median_timed(call, *args, **kwargs) -> float:
    return statistics.median(_timed(call, *args, **kwargs) for _ in range(TURNS))


def _startup_seconds() -> float:
    """Starting a run's process: Python, then TensorFlow and medtransfer's training."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import medtransfer.training.run"], check=True,
                   capture_output=True)
    return time.perf_counter() - started


@contextlib.contextmanager
def _one_share(share: dict[str, str]) -> Iterator[None]:
    """Calibrates on one parallel run's share of the machine, when TensorFlow has not
    started yet (its devices and thread pools are fixed once it has); restores this
    process's environment and cores afterwards (a notebook goes on)."""
    if not share or "tensorflow" in sys.modules:
        yield
        return
    environment = dict(os.environ)
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    os.environ.update({key: value for key, value in share.items() if key != CORES_ENV})
    if CORES_ENV in share and cores is not None:
        os.sched_setaffinity(0, {int(core) for core in share[CORES_ENV].split(",")})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(environment)
        if cores is not None:
            os.sched_setaffinity(0, cores)


def recorded_estimates(experiment_dir: str | Path) -> dict[str, float]:
    """run id -> the whole run's expected seconds, as the last ``sweep --estimate`` of
    that experiment recorded them (empty when none was made)."""
    experiment_dir = Path(experiment_dir)
    runs = _read_cache(experiment_dir.parent / CACHE)["runs"].get(experiment_dir.name, {})
    return {run_id: float(entry["seconds"]) for run_id, entry in runs.items()
            if isinstance(entry, dict) and "seconds" in entry}


def _read_cache(path: Path) -> dict[str, Any]:
    """The cache: ``calibrations`` (machine -> calibration key -> :class:`Calibration`'s
    fields) and ``runs`` (experiment -> run id -> the last estimate of the whole run)."""
    try:
        cache = read_json(path)
    except (OSError, ValueError):
        cache = {}
    cache = cache if isinstance(cache, dict) else {}
    for part in ("calibrations", "runs"):
        if not isinstance(cache.get(part), dict):
            cache[part] = {}
    return cache


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _devices_text() -> str:
    gpus = visible_gpus()
    return f"GPUs {','.join(gpus)}" if gpus else f"CPU, {usable_cores()} cores"
