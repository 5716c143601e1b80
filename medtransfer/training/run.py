"""``run_experiment(config) -> RunResult``: one configuration of the study, end to end.

Data flows one way: prepared dataset -> tf.data pipeline -> model (net, init) -> the
W+E regime -> the run directory. A killed run started again with the same config resumes
from its last completed epoch; a complete run is not trained again.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from medtransfer.config import RunConfig, save_config
from medtransfer.data.augment import AugmentConfig
from medtransfer.data.pipeline import cached_bytes, make_dataset, select_train_subset
from medtransfer.data.prepared import PreparedDataset
from medtransfer.models.classifier import get_backbone
from medtransfer.models.freezing import (
    FreezeSummary,
    freeze_backbone,
    freeze_bottom_layers,
    freeze_summary,
)
from medtransfer.models.init import build_model
from medtransfer.models.registry import get_net
from medtransfer.progress import notebook_bar
from medtransfer.training.batchnorm import PRECISE_BN_IMAGES, PreciseBatchNorm
from medtransfer.training.callbacks import (
    EpochRecorder,
    EvaluationSet,
    RunDiverged,
    SeedDropoutPerEpoch,
    StopOnDivergence,
    StopOnPlateau,
    TrainingState,
    check_finite_predictions,
    plateaued,
)
from medtransfer.training.class_weights import balanced_class_weights, positive_weights
from medtransfer.training.losses import MaskedBinaryCrossentropy, masked_accuracy
from medtransfer.training.resolve import resolve_config
from medtransfer.training.rundir import (
    HeadChoice,
    ResumeState,
    RunDirectory,
    TensorBoardLog,
    choose_head,
    primary_metric,
)
from medtransfer.training.schedule import ScheduleLearningRate, make_optimizer
from medtransfer.training.strategy import (
    make_strategy,
    op_determinism_enabled,
    set_op_determinism,
    set_precision,
)
from medtransfer.training.task import Task, run_task, task_frame, task_labels
from medtransfer.version import __version__

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


def run_experiment(config: RunConfig, *, overwrite: bool = False,
                   callbacks: Sequence[keras.callbacks.Callback] = ()) -> RunResult:
    """Trains, evaluates and logs one configuration.

    Args:
        config: the run; defaults that depend on dataset and net are filled here.
        overwrite: train afresh, deleting what the run directory holds: a complete run,
            a killed one, or a run of another configuration.
        callbacks: more Keras callbacks for every phase's ``fit``, called after the
            run's own (so an epoch's end sees its validation metrics in ``logs``). The
            time they take at an epoch's end does not count in ``train_seconds``.

    Returns:
        The run directory and its metrics.

    Raises:
        MedtransferError: bad input (before training starts), a run directory holding
            another configuration (without ``overwrite``), or a diverged run
            (:class:`RunDiverged`, after metrics.json records it).
    """
    return run_resolved(*resolve_config(config), overwrite=overwrite, callbacks=callbacks)


def run_resolved(config: RunConfig, dataset: PreparedDataset, *, overwrite: bool = False,
                 callbacks: Sequence[keras.callbacks.Callback] = ()) -> RunResult:
    """``run_experiment`` for a config that ``resolve_config`` returned, with its dataset:
    ``mt.run`` resolves before TensorFlow loads (to answer a complete run at once) and
    does not read the dataset's split a second time."""
    run_dir = RunDirectory(config.run_dir)
    if not overwrite and run_dir.found_complete(config):
        return RunResult(run_dir.path, run_dir.read_metrics() or {}, skipped=True)
    with holding(run_dir, clear=overwrite):
        return _train(config, dataset, run_dir, callbacks)


@contextlib.contextmanager
def holding(run_dir: RunDirectory, *, clear: bool) -> Iterator[None]:
    """Holds ``run_dir``'s lock while a run (or a pretraining) trains in it.

    Creates the folder when needed and empties it when ``clear``; afterwards unlocks it,
    removes it again when nothing was written (an error before the first file, say:
    weights that do not fit the built model leave no folder holding a lone .lock), and
    restores the process-wide precision and op determinism, since a notebook or a sweep
    runs on after us.
    """
    created = run_dir.create()
    run_dir.lock()
    determinism = op_determinism_enabled()
    try:
        if clear:
            run_dir.clear()
        yield
    finally:
        run_dir.unlock()
        if created:
            run_dir.remove_if_empty()
        set_precision(False)
        set_op_determinism(determinism)


@dataclass
class _Inputs:
    """The data of a run, from the pipeline.

    Attributes:
        task: what the run predicts.
        class_names: the model's classes, in the order of its outputs (``--classes``
            keeps a subset of the dataset's; findings for a multi-label task).
        train_images: images in the (possibly subset) train split.
        steps_per_epoch: training batches per epoch.
        train_epochs: ``(first_epoch, epochs) -> dataset`` of those training epochs,
            each a pure function of the seed and its (0-based) number.
        validation, test: the evaluation splits.
        batchnorm_batches: the fixed training batches precise BatchNorm estimates
            over, or None under ``bn_stats: moving``.
        class_weights: class name -> loss weight under ``class_weight: balanced``
            (multi-label: finding -> the weight of its present labels), else None.
    """

    task: Task
    class_names: list[str]
    train_images: int
    steps_per_epoch: int
    train_epochs: Callable[[int, int], tf.data.Dataset]
    validation: EvaluationSet
    test: EvaluationSet
    batchnorm_batches: tf.data.Dataset | None
    class_weights: dict[str, float] | None


def _train(config: RunConfig, dataset: PreparedDataset, run_dir: RunDirectory,
           callbacks: Sequence[keras.callbacks.Callback]) -> RunResult:
    started = time.monotonic()
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        set_op_determinism(True)
    set_precision(config.mixed_precision)
    strategy = make_strategy(config.strategy)
    inputs = _make_inputs(config, dataset, strategy.num_replicas_in_sync)
    with strategy.scope():
        model, head = build_run_model(config, inputs.class_names)
    save_config(config, run_dir.config)
    tensorboard = TensorBoardLog(run_dir.path)
    tensorboard.write_hparams(config.to_dict(), train_images=inputs.train_images)
    state, resume = _restore_progress(run_dir, tensorboard)
    # Earlier sessions of a resumed run count by their epochs (their setup is not kept).
    earlier_seconds = sum(float(row["seconds"]) for row in state.rows)
    done = resume.epoch if resume else 0
    if done:
        print(f"Resuming {run_dir.path} after epoch {done} of {config.total_epochs}.")
    replicas = strategy.num_replicas_in_sync
    print(
        f"Training {config.run_id}: {inputs.train_images} training images, "
        f"{len(inputs.class_names)} {'findings' if inputs.task.multi_label else 'classes'}, "
        f"{config.image_size}px, global batch "
        f"{config.batch_size * replicas} ({replicas} replica{'s' if replicas > 1 else ''}), "
        f"epochs {config.epochs}, lr {config.lr:g}, {config.bn_stats} BatchNorm statistics.",
        flush=True,
    )
    if config.init_is_path:
        print(f"Head: {head.word} ({head.reason}).", flush=True)
    kappa = dataset.spec.name in ORDINAL_DATASETS and not dataset.multi_label
    try:
        summary, stopped_epoch = _run_regime(config, model, strategy, inputs, run_dir,
                                             tensorboard, state, resume, kappa, callbacks)
        test_metrics = _test_best(config, model, inputs.test, run_dir, inputs.class_names,
                                  kappa, state.best_epoch)
    except RunDiverged as error:
        tensorboard.close()
        run_dir.write_metrics({**_identity(config), **error.record()})
        raise
    tensorboard.close()
    metrics = _complete_metrics(config, inputs, state, summary, stopped_epoch, test_metrics,
                                replicas, head)
    metrics["wall_seconds"] = earlier_seconds + time.monotonic() - started
    TensorBoardLog(run_dir.path).write_results(metrics)
    run_dir.write_metrics(metrics)
    run_dir.remove_leftovers()
    return RunResult(run_dir.path, metrics)


def training_frame(config: RunConfig, dataset: PreparedDataset) -> pd.DataFrame:
    """The training images a run of ``config`` trains on: the train split's images of the
    task (see ``task_frame``), or their ``--train-size`` subset (rows as in split.csv):
    stratified by class on a single-label dataset, uniform on a multi-label one."""
    frame = task_frame(run_task(config, dataset), dataset, "train")
    if config.train_size is not None:
        frame = select_train_subset(frame, config.train_size, config.seed,
                                    stratified=not dataset.multi_label)
    return frame


def run_class_names(config: RunConfig, dataset: PreparedDataset) -> list[str]:
    """The model's outputs in order: the classes (``--classes`` or all of them), or a
    multi-label task's findings, or ``healthy, finding`` (``--any-finding``)."""
    return run_task(config, dataset).class_names


def make_training_dataset(config: RunConfig, dataset: PreparedDataset,
                          train_frame: pd.DataFrame, *, batch_size: int,
                          cache_limit_bytes: int, first_epoch: int = 0,
                          epochs: int = 1) -> tf.data.Dataset:
    """The run's training stream: ``train_frame``'s images, shuffled and augmented as the
    config says, ``batch_size`` (global) images a batch, epochs ``first_epoch`` to
    ``first_epoch + epochs - 1`` (each a pure function of the seed and its number)."""
    return make_dataset(
        dataset.shard_paths("train"), training=True, seed=config.seed,
        batch_size=batch_size, augment=_augment_config(config),
        keep_ids=(set(train_frame["id"]) if config.train_size is not None or config.any_finding
                  else None),
        num_examples=len(train_frame), cache_limit_bytes=cache_limit_bytes,
        first_epoch=first_epoch, epochs=epochs, **_input_options(config, dataset),
    )


def build_run_model(config: RunConfig,
                    class_names: Sequence[str]) -> tuple[keras.Model, HeadChoice]:
    """The classifier a run of ``config`` starts from (net, init, head), seeded, and
    whether its head came from the path init (the same task) or is new."""
    head = choose_head(config, class_names)
    model = build_model(
        config.net, len(class_names), config.image_size, config.init,
        weights_file=config.weights_file, seed=config.seed,
        head_units=config.head_units, dropout=config.dropout,
        transfer_head=head.transferred, multi_label=config.multi_label,
    )
    return model, head


def compile_model(model: keras.Model, lr: float, optimizer: str = "adam",
                  task: Task | None = None,
                  class_weights: dict[str, float] | None = None) -> None:
    """Compiles for one phase of the regime: a fresh ``optimizer`` (``--optimizer``) at
    ``lr``; categorical cross-entropy, or for a multi-label ``task`` the masked binary
    cross-entropy with ``class_weights`` (finding -> weight of its present labels) as
    positive weights."""
    if task is not None and task.multi_label:
        weights = list(class_weights.values()) if class_weights else None
        model.compile(optimizer=make_optimizer(optimizer, lr),
                      loss=MaskedBinaryCrossentropy(weights), metrics=[masked_accuracy])
        return
    model.compile(optimizer=make_optimizer(optimizer, lr), loss="categorical_crossentropy",
                  metrics=["accuracy"])


def build_training_state(model: keras.Model, batch_spec: Any) -> None:
    """Creates the variables of a compiled model's optimizer, loss and metrics for batches
    like ``batch_spec`` (``(images, targets)``), before its first training step.

    Keras does this itself only for a model built under a distribution strategy; for
    any other it leaves them to the first trace of the training step, and ``tf.function``,
    finding variables created there, traces the whole step a second time: one trace of
    the model's forward and backward pass more in every phase (about half a second for
    small_cnn, several seconds for the ImageNet nets). It builds nothing already built,
    so an optimizer that loaded a resumed phase's state keeps it.
    """
    # Keras' own pre-build from symbolic inputs (Trainer._symbolic_build); no public name.
    with model.distribute_strategy.scope():
        model._symbolic_build(data_batch=batch_spec)


def training_class_weights(
    config: RunConfig, dataset: PreparedDataset, train_frame: pd.DataFrame,
) -> tuple[dict[str, float] | None, dict[int, float] | None]:
    """``--class-weight``: the weights by class name (for metrics.json) and by label index
    (Keras' ``class_weight``, which weights each example's loss); None for none. A
    multi-label task's weights are its findings' positive weights, which its loss applies
    (see ``compile_model``), so the Keras ``class_weight`` is None."""
    if config.class_weight != "balanced":
        return None, None
    task = run_task(config, dataset)
    if task.multi_label:
        return positive_weights(task_labels(task, dataset, train_frame), task.class_names), None
    labels = train_frame["label"]
    if task.any_finding:
        labels = [task.class_names[i] for i in task_labels(task, dataset, train_frame)]
    weights = balanced_class_weights(labels, task.class_names)
    return weights, _keras_class_weight(weights)


def _keras_class_weight(weights: dict[str, float] | None) -> dict[int, float] | None:
    # Keras wants label index -> weight; the names are in label-index order.
    return dict(enumerate(weights.values())) if weights else None


def _input_options(config: RunConfig, dataset: PreparedDataset) -> dict[str, Any]:
    """What every split's stream shares: the task's labels, input size, pixel scaling."""
    net = get_net(config.net)
    task = run_task(config, dataset)
    return dict(
        num_classes=task.num_outputs,
        image_size=config.image_size,
        preprocess=net.preprocess_input if config.scaling == "native" else None,
        keep_labels=task.keep_labels,
        label_length=task.label_length,
        any_finding=task.any_finding,
    )


def _complete_metrics(config: RunConfig, inputs: _Inputs, state: TrainingState,
                      summary: FreezeSummary, stopped_epoch: int | None,
                      test_metrics: dict[str, float], replicas: int,
                      head: HeadChoice) -> dict[str, Any]:
    """The content of a complete run's metrics.json."""
    return {
        **_identity(config),
        "head": head.word,
        "best_epoch": state.best_epoch,
        f"val_{primary_metric(test_metrics)}_best": state.best_auc,
        **({"task": "multi_label", "primary_metric": primary_metric(test_metrics)}
           if inputs.task.multi_label else {}),
        "class_weight": config.class_weight,
        "class_weights": inputs.class_weights,
        "patience": config.patience,
        "stopped_epoch": stopped_epoch,
        **{f"test_{name}": value for name, value in test_metrics.items()},
        **dataclasses.asdict(summary),
        # One meaning per name, as in history.csv: training steps only, and whole epochs
        # (precise BatchNorm, validation and checkpoints included).
        "train_seconds": sum(row["train_seconds"] for row in state.rows),
        "epoch_seconds": sum(row["seconds"] for row in state.rows),
        "images_per_second": _steady_images_per_second(state.rows, inputs.train_images),
        # Per phase, every epoch of it: what a cost estimate calibrates.
        **{f"images_per_second_{phase}": _phase_images_per_second(
            state.rows, inputs.train_images, phase) for phase in ("warmup", "finetune")},
        "train_images": inputs.train_images,
        "validation_images": len(inputs.validation.labels),
        "test_images": len(inputs.test.labels),
        "replicas": replicas,
        "global_batch_size": config.batch_size * replicas,
        "medtransfer_version": __version__,
        "status": "complete",
    }


def _make_inputs(config: RunConfig, dataset: PreparedDataset, replicas: int) -> _Inputs:
    """The pipeline: training epochs, the precise-BatchNorm batches, validation and test."""
    global_batch = config.batch_size * replicas
    task = run_task(config, dataset)
    class_names = task.class_names
    train_frame = training_frame(config, dataset)
    batchnorm_frame = None
    if config.bn_stats == "precise":
        batchnorm_frame = train_frame if len(train_frame) <= PRECISE_BN_IMAGES else \
            select_train_subset(train_frame, PRECISE_BN_IMAGES, config.seed,
                                stratified=not dataset.multi_label)
    frames = {"train": train_frame, "batchnorm": batchnorm_frame,
              **{split: task_frame(task, dataset, split) for split in ("validation", "test")}}
    budgets = _cache_budgets(config, {split: len(frame) for split, frame in frames.items()
                                      if frame is not None})
    common = _input_options(config, dataset)
    train_shards = dataset.shard_paths("train")

    def train_epochs(first_epoch: int, epochs: int) -> tf.data.Dataset:
        return make_training_dataset(
            config, dataset, train_frame, batch_size=global_batch,
            cache_limit_bytes=budgets["train"], first_epoch=first_epoch, epochs=epochs,
        )

    validation, test = (
        EvaluationSet.from_dataset(make_dataset(
            dataset.shard_paths(split), training=False, include_ids=True,
            batch_size=global_batch, num_examples=len(frames[split]),
            keep_ids=set(frames[split]["id"]) if task.any_finding else None,
            cache_limit_bytes=budgets[split], **common),
            findings=class_names if task.multi_label else None)
        for split in ("validation", "test")
    )
    batchnorm_batches = None
    if batchnorm_frame is not None:
        # Epoch 0 of its own stream, never augmented: the same batches every time, in
        # the per-replica batch size that a training step's BatchNorm sees.
        batchnorm_batches = make_dataset(
            train_shards, training=True, seed=config.seed, batch_size=config.batch_size,
            keep_ids=set(batchnorm_frame["id"]), num_examples=len(batchnorm_frame),
            cache_limit_bytes=budgets["batchnorm"], **common,
        )
    return _Inputs(
        task=task,
        class_names=class_names,
        train_images=len(train_frame),
        steps_per_epoch=math.ceil(len(train_frame) / global_batch),
        train_epochs=train_epochs,
        validation=validation,
        test=test,
        batchnorm_batches=batchnorm_batches,
        class_weights=training_class_weights(config, dataset, train_frame)[0],
    )


def _run_regime(config: RunConfig, model: keras.Model, strategy: tf.distribute.Strategy,
                inputs: _Inputs, run_dir: RunDirectory, tensorboard: TensorBoardLog,
                state: TrainingState, resume: ResumeState | None, kappa: bool,
                callbacks: Sequence[keras.callbacks.Callback]) -> tuple[FreezeSummary, int | None]:
    """The W+E regime from the epoch after ``resume``'s on (from the start without one).

    Returns:
        The freeze summary training ended with, and the epoch ``--patience`` stopped
        phase 2 after (None when every epoch trained).

    Raises:
        RunDiverged: the loss, the weights or the validation predictions diverged.
    """
    backbone = get_backbone(model)
    warmup, total = config.warmup_epochs, config.total_epochs
    phases = [("warmup", 0, warmup, None), ("finetune", warmup, total, config.freeze)]
    summary = freeze_summary(model)
    stopped_epoch = None
    done = resume.epoch if resume else 0
    keras_class_weight = _keras_class_weight(inputs.class_weights)
    batchnorm = PreciseBatchNorm(model, inputs.batchnorm_batches) \
        if inputs.batchnorm_batches is not None else None
    # Keras' progress bar within each epoch in a terminal (it shows the val_* metrics the
    # recorder adds); in a log file, the recorder's one line per epoch; in a notebook, one
    # live bar over the run's epochs.
    epoch_bar = notebook_bar(total, run_dir.path.name, "epoch")
    if epoch_bar is not None:
        epoch_bar.update(done)
    progress_bar = epoch_bar is None and sys.stdout.isatty()
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
            compile_model(model, config.lr, config.optimizer, inputs.task,
                          inputs.class_weights)
            if resume:
                # The optimizer state is only this phase's: resumed at the start of phase
                # 2, the model weights load and the optimizer starts fresh, as in a run
                # that was never interrupted.
                if resume.phase == phase:
                    model.optimizer.build(model.trainable_variables)
                _load_weights(model, resume.weights)
                resume = None
        start = max(first, done)
        train = inputs.train_epochs(start, last - start)
        build_training_state(model, train.element_spec)
        model.fit(
            train, epochs=last, initial_epoch=start,
            steps_per_epoch=inputs.steps_per_epoch, shuffle=False,
            verbose=1 if progress_bar else 0,
            class_weight=keras_class_weight,
            callbacks=[
                ScheduleLearningRate(config.lr, config.lr_schedule, total,
                                     config.plateau_patience, state.rows),
                SeedDropoutPerEpoch(config.seed),
                # A sigmoid's uniform guess scores ln 2 per finding, as two classes do.
                StopOnDivergence(config.lr, 2 if inputs.task.multi_label else config.num_classes),
                EpochRecorder(run_dir, tensorboard, inputs.validation, phase, state, kappa,
                              announce=epoch_bar is None and not progress_bar,
                              bar=epoch_bar, batchnorm=batchnorm),
                *([plateau] if plateau else []),
                *callbacks,
            ],
        )
        stopped_epoch = plateau.stopped_epoch if plateau else None
        done = last
    if epoch_bar is not None:
        epoch_bar.close()
    return summary, stopped_epoch


def _test_best(config: RunConfig, model: keras.Model, test: EvaluationSet,
               run_dir: RunDirectory, class_names: list[str], kappa: bool,
               best_epoch: int) -> dict[str, float]:
    """Test metrics of the best checkpoint; writes predictions_test.csv.

    best.weights.h5 was saved after its epoch's BatchNorm statistics were re-estimated
    (under ``bn_stats: precise``), so the test split is evaluated with those statistics.
    """
    _load_weights(model, run_dir.best_weights)
    probabilities = test.predict(model)
    check_finite_predictions(probabilities, best_epoch, "test", config.lr)
    _write_predictions(run_dir.predictions, test, probabilities, class_names)
    return test.evaluate(probabilities, kappa=kappa)


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
        "bn_stats": config.bn_stats,
        "optimizer": config.optimizer,
        "lr_schedule": config.lr_schedule,
        "plateau_patience": config.plateau_patience,
        "affine": bool(config.augment and config.affine),
    }


def _augment_config(config: RunConfig) -> AugmentConfig | None:
    if not config.augment or not (config.flips or config.noise or config.color
                                  or config.affine):
        return None
    return AugmentConfig(flips=config.flips, noise=config.noise, color=config.color,
                         affine=config.affine)


def _cache_budgets(config: RunConfig, sizes: dict[str, int]) -> dict[str, int]:
    """Shares --cache-limit between the splits: validation, the precise-BatchNorm
    subset, train, then test.

    Validation, the BatchNorm subset and train are read every epoch, test once after
    training, so they come first (the small ones first); a split that does not fit
    whole gets no cache (tf.data caches all or nothing).
    """
    left = config.cache_limit_bytes
    budgets = {}
    for split in ("validation", "batchnorm", "train", "test"):
        if split not in sizes:
            continue
        need = cached_bytes(sizes[split], config.image_size)
        budgets[split] = need if need <= left else 0
        left -= budgets[split]
    return budgets


def _restore_progress(run_dir: RunDirectory, tensorboard: TensorBoardLog,
                      ) -> tuple[TrainingState, ResumeState | None]:
    """Reads the resume state a killed run left (None: start afresh); drops whatever an
    unfinished epoch wrote after it (history rows, TensorBoard scalars, weights)."""
    resume = run_dir.read_resume_state()
    if resume is None:
        # Nothing completed: whatever a killed first epoch wrote is stale.
        run_dir.history.unlink(missing_ok=True)
        tensorboard.rewrite([])
        return TrainingState(), None
    rows = [row for row in run_dir.read_history() if int(row["epoch"]) <= resume.epoch]
    run_dir.write_history(rows)
    tensorboard.rewrite(rows)
    state = TrainingState(resume.best_auc, resume.best_epoch, rows)
    return state, resume


def _load_weights(model: keras.Model, path: Path) -> None:
    """Loads model weights, and optimizer weights when the optimizer is built.

    An optimizer not built has no variables: Keras then skips the file's optimizer state
    with a warning, which is how a new phase starts with fresh Adam state.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(path)


def _write_predictions(path: Path, split: EvaluationSet, probabilities: np.ndarray,
                       class_names: list[str]) -> None:
    """predictions_test.csv: id, label, then ``prob_<class>`` per output. A multi-label
    run's ``label`` is the findings present, ``|``-joined as in split.csv, and a
    ``masked`` column after it holds the findings whose label is unknown."""
    multi_label = split.findings is not None
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["id", "label", *(["masked"] if multi_label else []),
                         *(f"prob_{name}" for name in class_names)])
        for image_id, label, row in zip(split.ids, split.labels, probabilities, strict=True):
            if multi_label:
                known = [_joined(class_names, label == 1), _joined(class_names, label == -1)]
            else:
                known = [class_names[label]]
            writer.writerow([image_id, *known, *(f"{p:.8g}" for p in row)])


def _joined(names: list[str], chosen: np.ndarray) -> str:
    return "|".join(name for name, keep in zip(names, chosen, strict=True) if keep)


def _phase_images_per_second(rows: list[dict[str, Any]], train_images: int,
                             phase: str) -> float | None:
    """Training images per second over the epochs of ``phase``; None when it had none."""
    epochs = [row for row in rows if row["phase"] == phase]
    seconds = sum(float(row["train_seconds"]) for row in epochs)
    return len(epochs) * train_images / seconds if epochs and seconds > 0 else None


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


