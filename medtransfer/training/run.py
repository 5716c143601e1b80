"""``run_experiment(config) -> RunResult``: one configuration of the study, end to end.

Data flows one way: prepared dataset -> tf.data pipeline -> model (net, init) -> the
W+E regime -> the run directory. A killed run started again with the same config resumes
from its last completed epoch; a complete run is not trained again.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from medtransfer import __version__
from medtransfer.config import RunConfig, absolute_path, save_config, validate
from medtransfer.data.augment import AugmentConfig
from medtransfer.data.pipeline import cached_bytes, make_dataset, select_train_subset
from medtransfer.data.prepared import PreparedDataset, load_prepared
from medtransfer.errors import MedtransferError, look_up_option
from medtransfer.fileio import read_json
from medtransfer.models.classifier import get_backbone
from medtransfer.models.freezing import (
    freeze_backbone,
    freeze_bottom_layers,
    freeze_summary,
)
from medtransfer.models.init import build_model, check_image_size, check_init
from medtransfer.models.registry import get_net
from medtransfer.training.callbacks import (
    EpochRecorder,
    EvaluationSet,
    RunDiverged,
    StopOnDivergence,
    StopOnPlateau,
    TrainingState,
    plateaued,
)
from medtransfer.training.class_weights import balanced_class_weights
from medtransfer.training.metrics import evaluate_predictions
from medtransfer.training.rundir import RunDirectory, TensorBoardLog
from medtransfer.training.strategy import make_strategy, set_precision

ORDINAL_DATASETS = ("retina",)


@dataclass(frozen=True)
class RunResult:
    """What ``run_experiment`` did.

    Attributes:
        run_dir: the run directory.
        metrics: the content of metrics.json.
        skipped: the run was already complete and was not trained again.
    """

    run_dir: Path
    metrics: dict[str, Any]
    skipped: bool = False


def resolve_config(config: RunConfig) -> tuple[RunConfig, PreparedDataset]:
    """Fills the dataset's and net's defaults and checks what depends on them.

    Returns:
        The resolved config (no ``None`` left where a default exists; data_dir, logdir and
        a path init absolute, so that its config.yaml works from any directory) and the
        dataset.

    Raises:
        MedtransferError: unknown dataset or net, a dataset not prepared, a class count
            that does not match, an input size below the net's minimum, an init or
            weights file that cannot work (see ``check_init``).
    """
    validate(config)
    net = get_net(config.net)
    dataset = load_prepared(config.dataset, Path(config.data_dir))
    for name in config.classes or ():
        look_up_option(name, dataset.class_names, "class name", see=(
            f"--classes takes class names of dataset '{config.dataset}', comma-separated."))
    num_classes = len(config.classes) if config.classes else dataset.num_classes
    if config.num_classes is not None and config.num_classes != num_classes:
        raise MedtransferError(
            f"The config says num_classes: {config.num_classes}, but dataset "
            f"'{config.dataset}' has {num_classes} classes"
            f"{' kept by classes' if config.classes else ''}. Remove num_classes from "
            "the config (it is filled from the dataset) or use the dataset it was made for."
        )
    image_size = config.image_size or net.default_input_size
    check_image_size(net, image_size)
    check_init(net, config.init, config.weights_file)
    defaults = dataset.spec.augment
    resolved = config.replace(
        lr=config.lr if config.lr is not None else dataset.spec.default_lr,
        image_size=image_size,
        num_classes=num_classes,
        flips=defaults.flips if config.flips is None else config.flips,
        noise=defaults.noise if config.noise is None else config.noise,
        color=defaults.color if config.color is None else config.color,
        data_dir=absolute_path(config.data_dir),
        logdir=absolute_path(config.logdir),
        init=absolute_path(config.init) if config.init_is_path else config.init,
        weights_file=config.weights_file and absolute_path(config.weights_file),
    )
    return resolved, dataset


def run_experiment(config: RunConfig, *, overwrite: bool = False) -> RunResult:
    """Trains, evaluates and logs one configuration.

    Args:
        config: the run; defaults that depend on dataset and net are filled here.
        overwrite: train afresh, deleting what the run directory holds: a complete run,
            a killed one, or a run of another configuration.

    Returns:
        The run directory and its metrics.

    Raises:
        MedtransferError: bad input (before training starts), a run directory holding
            another configuration (without ``overwrite``), or a diverged run
            (:class:`RunDiverged`, after metrics.json records it).
    """
    config, dataset = resolve_config(config)
    run_dir = RunDirectory(config.run_dir)
    if not overwrite:
        run_dir.check_same_config(config)
    if run_dir.is_complete() and not overwrite:
        print(f"{run_dir.path} already holds a complete run; nothing to do (use --overwrite "
              "to train it again, or 'medtransfer reproduce' on it to train a copy beside it).")
        return RunResult(run_dir.path, run_dir.read_metrics() or {}, skipped=True)
    run_dir.create()
    run_dir.lock()
    try:
        if overwrite:
            run_dir.clear()
        return _train(config, dataset, run_dir)
    finally:
        run_dir.unlock()
        # The precision policy is global to Keras: a notebook or a sweep runs on after us.
        set_precision(False)


def _train(config: RunConfig, dataset: PreparedDataset, run_dir: RunDirectory) -> RunResult:
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    set_precision(config.mixed_precision)
    strategy = make_strategy(config.strategy)
    replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * replicas

    train_frame = training_frame(config, dataset)
    frames = {"train": train_frame,
              **{split: dataset.split_frame(split, config.classes)
                 for split in ("validation", "test")}}
    class_names = run_class_names(config, dataset)
    budgets = _cache_budgets(config, {split: len(frame) for split, frame in frames.items()})
    train = make_training_dataset(config, dataset, train_frame, batch_size=global_batch,
                                  cache_limit_bytes=budgets["train"])
    validation, test = (
        EvaluationSet.from_dataset(make_dataset(
            dataset.shard_paths(split), training=False, include_ids=True,
            num_examples=len(frames[split]), cache_limit_bytes=budgets[split],
            **_input_options(config, dataset, global_batch)))
        for split in ("validation", "test")
    )

    with strategy.scope():
        model = build_run_model(config, len(class_names))
    backbone = get_backbone(model)
    save_config(config, run_dir.config)
    tensorboard = TensorBoardLog(run_dir.path)
    tensorboard.write_hparams(config.to_dict())
    state, done = _restore_progress(run_dir, tensorboard)
    if done:
        print(f"Resuming {run_dir.path} after epoch {done} of {config.total_epochs}.")
    print(
        f"Training {config.run_id}: {len(train_frame)} training images, "
        f"{len(class_names)} classes, {config.image_size}px, global batch {global_batch} "
        f"({replicas} replica{'s' if replicas > 1 else ''}), epochs {config.epochs}, "
        f"lr {config.lr:g}.",
        flush=True,
    )
    kappa = dataset.spec.name in ORDINAL_DATASETS
    class_weights, keras_class_weight = training_class_weights(config, dataset, train_frame)
    stopped_epoch = None
    warmup, total = config.warmup_epochs, config.total_epochs
    phases = [("warmup", 0, warmup, None), ("finetune", warmup, total, config.freeze)]
    summary = freeze_summary(model)
    restore = done > 0
    # Keras' progress bar within each epoch in a terminal (it shows the val_* metrics the
    # recorder adds); in a log file, the recorder's one line per epoch.
    progress_bar = sys.stdout.isatty()
    try:
        for phase, first, last, freeze in phases:
            if last <= first:
                continue
            # The phase's freeze is applied even when a resume skips its epochs, so that
            # the recorded freeze summary is the one training ended with.
            if freeze is None:
                freeze_backbone(backbone)
            else:
                freeze_bottom_layers(backbone, freeze)
            summary = freeze_summary(model)
            if last <= done:
                continue
            if freeze is not None and plateaued(done, state.best_epoch, first, config.patience):
                stopped_epoch = done  # killed after the stopping epoch, before metrics.json
                continue
            plateau = (StopOnPlateau(config.patience, state, first)
                       if freeze is not None and config.patience else None)
            with strategy.scope():
                compile_model(model, config.lr)
                if restore:
                    model.optimizer.build(model.trainable_variables)
                    _load_weights(model, run_dir.resume / "state.weights.h5")
                    restore = False
            model.fit(
                train, epochs=last, initial_epoch=max(first, done), shuffle=False,
                verbose=1 if progress_bar else 0,
                class_weight=keras_class_weight,
                callbacks=[
                    StopOnDivergence(config.lr),
                    EpochRecorder(run_dir, tensorboard, validation, phase, state, kappa,
                                  announce=not progress_bar),
                    *([plateau] if plateau else []),
                ],
            )
            stopped_epoch = plateau.stopped_epoch if plateau else None
            done = last
    except RunDiverged as error:
        tensorboard.close()
        run_dir.write_metrics({
            **_identity(config), "status": "diverged", "diverged_epoch": error.epoch,
            "diverged_batch": error.batch + 1, "loss": str(error.loss),
        })
        raise
    train_seconds = sum(row["seconds"] for row in state.rows)
    tensorboard.close()

    _load_weights(model, run_dir.best_weights)
    probabilities = test.predict(model)
    test_metrics = evaluate_predictions(test.labels, probabilities, kappa=kappa)
    _write_predictions(run_dir.predictions, test, probabilities, class_names)
    metrics = {
        **_identity(config),
        "best_epoch": state.best_epoch,
        "val_auc_micro_best": state.best_auc,
        "class_weight": config.class_weight,
        "class_weights": class_weights,
        "patience": config.patience,
        "stopped_epoch": stopped_epoch,
        **{f"test_{name}": value for name, value in test_metrics.items()},
        **dataclasses.asdict(summary),
        "train_seconds": train_seconds,
        "images_per_second": _steady_images_per_second(state.rows, len(train_frame)),
        "train_images": len(train_frame),
        "validation_images": len(validation.labels),
        "test_images": len(test.labels),
        "replicas": replicas,
        "global_batch_size": global_batch,
        "medtransfer_version": __version__,
        "status": "complete",
    }
    TensorBoardLog(run_dir.path).write_results(metrics)
    run_dir.write_metrics(metrics)
    _remove_resume_state(run_dir)
    return RunResult(run_dir.path, metrics)


def training_frame(config: RunConfig, dataset: PreparedDataset) -> pd.DataFrame:
    """The training images a run of ``config`` trains on: the train split, or its
    stratified ``--train-size`` subset (one row per image, as in split.csv)."""
    frame = dataset.split_frame("train", config.classes)
    if config.train_size is not None:
        frame = select_train_subset(frame, config.train_size, config.seed)
    return frame


def make_training_dataset(config: RunConfig, dataset: PreparedDataset,
                          train_frame: pd.DataFrame, *, batch_size: int,
                          cache_limit_bytes: int) -> tf.data.Dataset:
    """The run's training stream: ``train_frame``'s images, shuffled and augmented as the
    config says, ``batch_size`` (global) images a batch, one pass per iteration."""
    return make_dataset(
        dataset.shard_paths("train"), training=True, seed=config.seed,
        augment=_augment_config(config),
        keep_ids=set(train_frame["id"]) if config.train_size is not None else None,
        num_examples=len(train_frame), cache_limit_bytes=cache_limit_bytes,
        **_input_options(config, dataset, batch_size),
    )


def run_class_names(config: RunConfig, dataset: PreparedDataset) -> list[str]:
    """The classes a run trains on, in label-index order: ``--classes`` or all of them."""
    return list(config.classes or dataset.class_names)


def build_run_model(config: RunConfig, num_classes: int) -> keras.Model:
    """The classifier a run of ``config`` starts from (net, init, head), seeded."""
    return build_model(
        config.net, num_classes, config.image_size, config.init,
        weights_file=config.weights_file, seed=config.seed,
        head_units=config.head_units, dropout=config.dropout,
    )


def training_class_weights(
    config: RunConfig, dataset: PreparedDataset, train_frame: pd.DataFrame,
) -> tuple[dict[str, float] | None, dict[int, float] | None]:
    """``--class-weight``: the weights by class name (for metrics.json) and by label index
    (Keras' ``class_weight``, which weights each example's loss); None for none."""
    if config.class_weight != "balanced":
        return None, None
    weights = balanced_class_weights(train_frame["label"], run_class_names(config, dataset))
    return weights, dict(enumerate(weights.values()))


def compile_model(model: keras.Model, lr: float) -> None:
    """Compiles for one phase of the regime: a fresh Adam at ``lr``, cross-entropy."""
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="categorical_crossentropy",
                  metrics=["accuracy"])


def _input_options(config: RunConfig, dataset: PreparedDataset,
                   batch_size: int) -> dict[str, Any]:
    """What every split's stream shares: classes, input size, batch, pixel scaling."""
    net = get_net(config.net)
    return dict(
        num_classes=len(run_class_names(config, dataset)),
        image_size=config.image_size,
        batch_size=batch_size,
        preprocess=net.preprocess_input if config.scaling == "native" else None,
        keep_labels=dataset.label_indices(config.classes),
    )


def _identity(config: RunConfig) -> dict[str, Any]:
    return {
        "run_id": config.run_id,
        "dataset": config.dataset,
        "net": config.net,
        "init": config.init,
        "freeze": config.freeze,
        "seed": config.seed,
        "epochs_warmup": config.warmup_epochs,
        "epochs_finetune": config.finetune_epochs,
        "lr": config.lr,
        "batch_size": config.batch_size,
        "image_size": config.image_size,
        "num_classes": config.num_classes,
        "classes": list(config.classes) if config.classes else None,
    }


def _augment_config(config: RunConfig) -> AugmentConfig | None:
    if not config.augment or not (config.flips or config.noise or config.color):
        return None
    return AugmentConfig(flips=config.flips, noise=config.noise, color=config.color)


def _cache_budgets(config: RunConfig, sizes: dict[str, int]) -> dict[str, int]:
    """Shares --cache-limit between the splits: validation, then train, then test.

    Validation and train are read every epoch, test once after training, so they come
    first; a split that does not fit whole gets no cache (tf.data caches all or nothing).
    """
    left = config.cache_limit_bytes
    budgets = {}
    for split in ("validation", "train", "test"):
        need = cached_bytes(sizes[split], config.image_size)
        budgets[split] = need if need <= left else 0
        left -= budgets[split]
    return budgets


def _restore_progress(run_dir: RunDirectory,
                      tensorboard: TensorBoardLog) -> tuple[TrainingState, int]:
    """Reads the resume state a killed run left; drops epochs logged after it."""
    state_file = run_dir.resume / "state.json"
    if not state_file.exists():
        # Nothing completed: whatever a killed first epoch wrote is stale.
        run_dir.history.unlink(missing_ok=True)
        _remove_resume_state(run_dir)
        tensorboard.rewrite([])
        return TrainingState(), 0
    saved = read_json(state_file)
    done = int(saved["epoch"])
    # The kill may have come before the state's best weights were published, or after a
    # newer epoch saved its own: publish the state's and drop any other.
    if saved["best_epoch"]:
        run_dir.publish_best(int(saved["best_epoch"]))
    rows = [row for row in run_dir.read_history() if int(row["epoch"]) <= done]
    run_dir.write_history(rows)
    tensorboard.rewrite(rows)
    return TrainingState(saved["val_auc_micro_best"], saved["best_epoch"], rows), done


def _load_weights(model: keras.Model, path: Path) -> None:
    """Loads model (and, when it matches, optimizer) weights.

    A state saved in the other phase holds the other phase's optimizer; Keras then skips
    the optimizer with a warning, which is what the regime wants: fresh Adam state.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(path)


def _write_predictions(path: Path, split: EvaluationSet, probabilities: np.ndarray,
                       class_names: list[str]) -> None:
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["id", "label", *(f"prob_{name}" for name in class_names)])
        for image_id, label, row in zip(split.ids, split.labels, probabilities, strict=True):
            writer.writerow([image_id, class_names[label], *(f"{p:.8g}" for p in row)])


def _steady_images_per_second(rows: list[dict[str, Any]], train_images: int) -> float:
    """Training images per second over phase-2 epochs after the first (the steady state).

    With fewer phase-2 epochs, falls back to every phase-2 epoch, then to every epoch.
    """
    finetune = [row for row in rows if row["phase"] == "finetune"]
    for candidates in (finetune[1:], finetune, rows):
        seconds = sum(float(row["train_seconds"]) for row in candidates)
        if candidates and seconds > 0:
            return len(candidates) * train_images / seconds
    return math.nan


def _remove_resume_state(run_dir: RunDirectory) -> None:
    shutil.rmtree(run_dir.resume, ignore_errors=True)

