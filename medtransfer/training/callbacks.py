"""The callbacks of a run: the per-epoch recorder, the divergence guard, dropout seeds.

Everything that happens at the end of an epoch happens in one callback, in one fixed
order, because each step depends on the one before: precise BatchNorm statistics (when
on), exact validation metrics (NaN predictions are a divergence), then the best weights
(held back in resume/), then history.csv and TensorBoard, then the resume state (its
weights file, then state.json naming it), and last best.weights.h5, so that a kill at
any point leaves a state from which the run resumes with each epoch logged once, the
weights of the epoch state.json names and the best weights of a kept epoch (see
``medtransfer.training.rundir``). The divergence guard runs first: weights that are not
finite never reach a checkpoint.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from medtransfer.data.pipeline import without_autograph
from medtransfer.errors import MedtransferError
from medtransfer.training.batchnorm import PreciseBatchNorm
from medtransfer.training.metrics import evaluate_multi_label, evaluate_predictions
from medtransfer.training.rundir import RunDirectory, TensorBoardLog, primary_metric

#: A loss above this many times ln(num_classes), the loss of a uniform guess, is a
#: diverged run. Keras computes the cross-entropy from the logits, so an exploding net
#: gives losses of 1e20 rather than NaN; a net that learns anything stays within a few
#: times ln(C) (an untrained one starts near it), and even two classes give a bound of
#: 69 nats, a confidently wrong answer on every image with odds of e^69 to one.
DIVERGENCE_FACTOR = 100.0


class RunDiverged(MedtransferError):
    """Training diverged (see :func:`divergence_bound`); the run stopped at once.

    Attributes:
        epoch: the epoch it happened in (1-based).
        reason: what was found, one sentence.
        batch: the batch (0-based) when a training loss gave it away, else None.
        loss: that loss, else None.
    """

    exit_code = 3

    def __init__(self, epoch: int, reason: str, lr: float, *, batch: int | None = None,
                 loss: float | None = None):
        self.epoch, self.reason, self.batch, self.loss = epoch, reason, batch, loss
        where = f"epoch {epoch}" + (f", batch {batch + 1}" if batch is not None else "")
        super().__init__(
            f"Training diverged at {where} with learning rate {lr:g}: {reason}. The run "
            "stopped and metrics.json records status 'diverged'. Lower --lr (the study "
            "used 1e-5 to 1e-4 with Adam) or check the data, then run again with --overwrite."
        )

    def record(self) -> dict[str, Any]:
        """The keys metrics.json gets besides the run's identity."""
        record = {"status": "diverged", "diverged_epoch": self.epoch,
                  "diverged_reason": self.reason}
        if self.batch is not None:
            record.update(diverged_batch=self.batch + 1, loss=str(self.loss))
        return record


def divergence_bound(num_classes: int) -> float:
    """The training loss above which a run counts as diverged: 100 x ln(num_classes)."""
    return DIVERGENCE_FACTOR * math.log(num_classes)


class StopOnDivergence(keras.callbacks.Callback):
    """Raises :class:`RunDiverged` at the first batch whose loss is not finite or is
    above :func:`divergence_bound`, and at an epoch's end whose weights are not finite."""

    def __init__(self, lr: float, num_classes: int):
        super().__init__()
        self.lr, self.num_classes = lr, num_classes
        self.bound = divergence_bound(num_classes)
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            raise RunDiverged(self.epoch, f"the training loss became {loss}", self.lr,
                              batch=batch, loss=loss)
        if loss > self.bound:
            raise RunDiverged(
                self.epoch,
                f"the training loss reached {loss:.4g}, above {DIVERGENCE_FACTOR:g} x "
                f"ln({self.num_classes}) = {self.bound:.4g} (a uniform guess scores "
                f"{math.log(self.num_classes):.3g})",
                self.lr, batch=batch, loss=loss,
            )

    def on_epoch_end(self, epoch, logs=None):
        bad = [variable.path for variable in self.model.weights
               if not np.all(np.isfinite(keras.ops.convert_to_numpy(variable)))]
        if bad:
            raise RunDiverged(epoch + 1, f"weights hold NaN or inf ({', '.join(bad[:3])})",
                              self.lr)


def check_finite_predictions(probabilities: np.ndarray, epoch: int, split: str,
                             lr: float) -> None:
    """Raises :class:`RunDiverged` when predictions hold NaN or inf (no metric exists)."""
    if not np.all(np.isfinite(probabilities)):
        rows = int(np.sum(~np.all(np.isfinite(probabilities), axis=1)))
        raise RunDiverged(
            epoch, f"{rows} of {len(probabilities)} {split} predictions are NaN or inf", lr)


class SeedDropoutPerEpoch(keras.callbacks.Callback):
    """Makes every epoch's dropout masks a pure function of ``(seed, epoch)``.

    Keras' dropout draws from a seed generator whose counter advances each step and is
    not saved with the weights, so a resumed run would replay epoch 1's masks. Setting
    each generator's state from ``(seed, epoch, its index)`` at the start of every
    epoch gives a resumed run the masks the uninterrupted run drew.
    """

    def __init__(self, seed: int):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        for index, generator in enumerate(_seed_generators(self.model)):
            start = np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0]
            state = np.array([start % 2**31, 0]).astype(generator.state.dtype)
            generator.state.assign(state)


def _seed_generators(model: keras.Model) -> list:
    # Keras 3 keeps each layer's generators in _seed_generators; no public accessor.
    return [generator for layer in model._flatten_layers(include_self=False)
            for generator in getattr(layer, "_seed_generators", [])]


@dataclass
class EvaluationSet:
    """A split to predict on, with its labels and ids in the dataset's fixed order.

    Attributes:
        images: the batches of images.
        labels: class indices ``(N,)``, or a multi-label task's ``(N, F)`` of 1, 0, -1.
        ids: the image ids.
        findings: a multi-label task's findings (the columns of ``labels``), else None.
    """

    images: tf.data.Dataset
    labels: np.ndarray
    ids: list[str]
    findings: list[str] | None = None

    @classmethod
    def from_dataset(cls, dataset: tf.data.Dataset,
                     findings: list[str] | None = None) -> EvaluationSet:
        """Takes a ``(images, targets, ids)`` evaluation dataset; reads labels once.

        Args:
            dataset: its targets one-hot, or with ``findings`` the findings' 1, 0, -1.
            findings: a multi-label task's findings; None for a single-label one.
        """
        labels, ids = [], []
        for targets, batch_ids in dataset.map(without_autograph(lambda x, y, i: (y, i))):
            targets = targets.numpy()
            labels.append(np.argmax(targets, axis=1) if findings is None
                          else targets.astype(np.int8))
            ids.extend(value.decode() for value in batch_ids.numpy())
        return cls(dataset.map(without_autograph(lambda x, y, i: x)), np.concatenate(labels),
                   ids, findings)

    def predict(self, model: keras.Model) -> np.ndarray:
        _trace_for_any_batch_size(model, self.images.element_spec)
        return np.asarray(model.predict(self.images, verbose=0), dtype=np.float64)

    def evaluate(self, probabilities: np.ndarray, kappa: bool = False) -> dict[str, Any]:
        """The split's metrics (see ``medtransfer.training.metrics``): a single-label
        task's, or a multi-label task's with their per-finding dicts."""
        if self.findings is not None:
            return evaluate_multi_label(self.labels, probabilities, self.findings)
        return evaluate_predictions(self.labels, probabilities, kappa=kappa)


def _trace_for_any_batch_size(model: keras.Model, batch_spec: tf.TensorSpec) -> None:
    """Traces the model's prediction function once for batches of any size.

    Keras traces it for the first batch's exact shape, then again, relaxed, for a last
    batch of another size: two traces of the forward pass in every phase instead of
    one. Traced first for the dataset's own spec (its batch size unknown), every batch
    reuses that trace. Only without a distribution strategy: under one, Keras hands its
    function per-replica values, which a trace for plain tensors would not serve.
    """
    # Keras keeps the strategy a model was built under in _distribute_strategy, and its
    # prediction function takes a list of one batch; neither has a public name.
    if model._distribute_strategy is None:
        model.make_predict_function()
        model.predict_function.get_concrete_function([batch_spec])


def plateaued(epoch: int, best_epoch: int, phase_start: int, patience: int | None) -> bool:
    """Whether phase 2 ends after ``epoch`` under ``--patience``.

    It ends once ``patience`` of its epochs have passed without a new best validation
    micro AUC: counted from the best epoch, or from the end of phase 1 (``phase_start``)
    when the best came before phase 2, so phase 2 always gets ``patience`` epochs. Only
    the epoch numbers count, which history.csv and the resume state keep: a resumed run
    counts on from where it was killed.
    """
    return bool(patience) and epoch - max(best_epoch, phase_start) >= patience


class StopOnPlateau(keras.callbacks.Callback):
    """Ends phase 2 early (``--patience``); runs after the :class:`EpochRecorder`.

    Attributes:
        stopped_epoch: the epoch it stopped after, or None.
    """

    def __init__(self, patience: int, state: TrainingState, phase_start: int):
        super().__init__()
        self.patience, self.state, self.phase_start = patience, state, phase_start
        self.stopped_epoch: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        if plateaued(epoch + 1, self.state.best_epoch, self.phase_start, self.patience):
            self.stopped_epoch = epoch + 1
            self.model.stop_training = True
            name = "mean AUC" if self.state.metric == "auc_mean" else "micro AUC"
            print(f"Stopping after epoch {epoch + 1}: the validation {name} has not "
                  f"improved for {self.patience} epochs (--patience; best epoch "
                  f"{self.state.best_epoch}).", flush=True)


@dataclass
class TrainingState:
    """What the recorder knows across both phases (and across a resume)."""

    best_auc: float = -math.inf
    best_epoch: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    metric: str = "auc_micro"  # the primary metric best_auc holds (multi-label: auc_mean)


class EpochRecorder(keras.callbacks.Callback):
    """Evaluates, checkpoints and logs each epoch; keeps the state to resume from.

    Args:
        run_dir: the run directory.
        tensorboard: its TensorBoard log.
        validation: the validation split.
        phase: ``warmup`` or ``finetune``, written into history.csv.
        state: shared by both phases' recorders.
        kappa: also compute the quadratic weighted kappa (ordinal grades).
        announce: print one line per epoch (when Keras shows no progress bar).
        bar: a ``tqdm`` bar over the run's epochs to advance instead (in a notebook).
        batchnorm: re-estimates the BatchNorm statistics before validation (precise
            BatchNorm); None evaluates with Keras' moving averages.
    """

    def __init__(self, run_dir: RunDirectory, tensorboard: TensorBoardLog,
                 validation: EvaluationSet, phase: str, state: TrainingState,
                 kappa: bool = False, announce: bool = True, bar=None,
                 batchnorm: PreciseBatchNorm | None = None):
        super().__init__()
        self.run_dir, self.tensorboard, self.validation = run_dir, tensorboard, validation
        self.phase, self.state, self.kappa, self.announce = phase, state, kappa, announce
        self.bar = bar
        self.batchnorm = batchnorm
        self._started = self._last_step = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = self._last_step = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._last_step = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        # From the epoch's start to the end of its last training step: the training time
        # alone, which images_per_second needs (not the other callbacks' epoch-end work,
        # such as StopOnDivergence's check of every weight, which runs before this one).
        train_seconds = self._last_step - self._started
        number = epoch + 1
        if self.batchnorm is not None:
            self.batchnorm.update()
        probabilities = self.validation.predict(self.model)
        check_finite_predictions(probabilities, number, "validation", self._lr())
        metrics = {name: value for name, value in
                   self.validation.evaluate(probabilities, kappa=self.kappa).items()
                   if not isinstance(value, dict)}  # per-finding values: metrics.json only
        for name, value in metrics.items():
            logs[f"val_{name}"] = value
        primary = self.state.metric = primary_metric(metrics)
        improved = metrics[primary] > self.state.best_auc
        if improved:
            self.state.best_auc, self.state.best_epoch = metrics[primary], number
            self.run_dir.resume.mkdir(exist_ok=True)
            self.model.save_weights(self.run_dir.best_candidate(number))
        row = {
            "epoch": number,
            "phase": self.phase,
            "loss": float(logs.get("loss", float("nan"))),
            "accuracy": float(logs.get("accuracy", logs.get("masked_accuracy", float("nan")))),
            **{f"val_{name}": value for name, value in metrics.items()
               if name != "quadratic_kappa"},
            "lr": self._lr(),
            "seconds": time.perf_counter() - self._started,
            "train_seconds": train_seconds,
        }
        self.state.rows.append(row)
        self.run_dir.write_history(self.state.rows)
        self.tensorboard.write_epoch(row)
        self._save_resume_state(number)
        if improved:
            self.run_dir.publish_best(number)
        if self.bar is not None:
            self.bar.set_postfix(phase=self.phase, loss=f"{row['loss']:.4f}",
                                 **{f"val_{primary}": f"{row[f'val_{primary}']:.4f}"})
            self.bar.update()
        if self.announce:
            print(
                f"epoch {number} ({self.phase}): loss {row['loss']:.4f}, val_{primary} "
                f"{row[f'val_{primary}']:.4f}, val_accuracy {row['val_accuracy']:.4f} "
                f"({row['seconds']:.1f} s)",
                flush=True,
            )

    def _lr(self) -> float:
        return float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def _save_resume_state(self, epoch: int) -> None:
        """Model and optimizer weights and the epoch they belong to, as one unit.

        ``phase`` names the phase whose optimizer state the weights file holds: a run
        resumed in the other phase starts that phase with a fresh Adam instead.
        """
        self.run_dir.save_resume_state(epoch, self.phase, self.state.best_epoch,
                                       self.state.best_auc, self.model.save_weights)
