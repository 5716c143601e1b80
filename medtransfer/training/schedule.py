"""``--optimizer`` and ``--lr-schedule``: the optimizer and the learning rate of every
epoch of a run.

One schedule runs over the run's epochs 1..W+E as history.csv numbers them; the phase
change does not restart it (phase 2's fresh optimizer starts at the rate the schedule
gives its first epoch). The rate of epoch ``n`` is a pure function of ``n``, the regime
and the training losses of epochs 1..n-1, which history.csv keeps, so a resumed run
sets the rates an uninterrupted one set:

- ``constant``: ``--lr`` throughout (the study).
- ``multistep`` (MedMNIST's baselines, PyTorch's ``MultiStepLR(milestones=[0.5 T,
  0.75 T], gamma=0.1)`` stepped once an epoch, ``T = W + E``): epoch ``n`` runs at
  ``lr * 0.1**k``, ``k`` the number of milestones that ``n - 1`` has reached. At 100
  epochs: epochs 1-50 at ``lr``, 51-75 at ``lr / 10``, 76-100 at ``lr / 100``.
- ``plateau`` (the CBR/CheXpert experiments; Keras' ``ReduceLROnPlateau`` on the
  training loss, factor 0.1): an epoch whose training loss is not below the lowest
  so far is a bad one; after ``--plateau-patience`` bad epochs in a row the rate is
  divided by 10 from the next epoch on, and the count starts again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import tensorflow as tf

MILESTONES = (0.5, 0.75)
"""``multistep``: where the rate drops, as fractions of the W+E epochs."""
FACTOR = 0.1
SGD_MOMENTUM = 0.9


def make_optimizer(name: str, lr: float) -> keras.optimizers.Optimizer:
    """A fresh optimizer: ``adam`` (Keras' Adam with its defaults, as :class:`Adam`
    traces it) or ``sgd`` with momentum 0.9."""
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=SGD_MOMENTUM)
    return Adam(lr)


@keras.saving.register_keras_serializable(package="medtransfer")
class Adam(keras.optimizers.Adam):
    """Keras' Adam, the same float32 operations in the same order, traced in fewer ops.

    Keras' ``update_step`` recomputes the step's bias correction (two powers, a square
    root, a division) for every variable, each through ``keras.ops``. Here the correction
    is computed once per step (per dtype and device) and each variable's update is the
    same operations as TensorFlow ops, so a run's weights come out bit-identical to
    Keras' Adam (``tests/test_optimizer.py`` compares them, also under MirroredStrategy
    and mixed precision). The optimizer variables are Keras', so a weights file saved
    with either resumes with either. ``amsgrad`` takes Keras' own path.

    A phase's first step, which traces the training step, takes about 0.88x (mobilenet)
    and 0.84x (densenet121, 8 CPU-seconds less) of its CPU time with Keras' Adam
    (``python -m benchmarks --only tracing``).
    """

    def apply(self, grads, trainable_variables=None):
        self._corrections = {}  # one step's; built inside this call's trace
        try:
            return super().apply(grads, trainable_variables)
        finally:
            self._corrections = {}

    def update_step(self, gradient, variable, learning_rate):
        corrections = getattr(self, "_corrections", None)
        if self.amsgrad or corrections is None:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        key = (dtype, variable.device)
        if key not in corrections:
            step = tf.cast(self.iterations + 1, dtype)
            beta_1_power = tf.pow(tf.cast(self.beta_1, dtype), step)
            beta_2_power = tf.pow(tf.cast(self.beta_2, dtype), step)
            lr = tf.cast(learning_rate, dtype)
            corrections[key] = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        alpha = corrections[key]
        gradient = tf.cast(gradient, dtype)
        index = self._get_variable_index(variable)
        m = self._momentums[index].value
        v = self._velocities[index].value
        m.assign_add(tf.multiply(tf.subtract(gradient, m), 1 - self.beta_1))
        v.assign_add(tf.multiply(tf.subtract(tf.square(gradient), v), 1 - self.beta_2))
        variable.assign_sub(tf.divide(tf.multiply(m, alpha), tf.add(tf.sqrt(v), self.epsilon)))


def scheduled_lr(lr: float, schedule: str, epoch: int, total_epochs: int,
                 losses: Sequence[float] = (), patience: int = 10) -> float:
    """The learning rate of ``epoch`` under ``schedule`` (see the module docstring).

    Args:
        lr: the initial rate (``--lr``).
        schedule: ``constant``, ``multistep`` or ``plateau``.
        epoch: the epoch, 1-based, counted over both phases.
        total_epochs: W + E.
        losses: the training losses of epochs 1..epoch-1 (``plateau`` reads them).
        patience: ``--plateau-patience``.

    Returns:
        The rate the epoch trains at.
    """
    if schedule == "multistep":
        reached = sum(epoch - 1 >= fraction * total_epochs for fraction in MILESTONES)
        return lr * FACTOR**reached
    if schedule == "plateau":
        best, bad, drops = math.inf, 0, 0
        for loss in losses[:epoch - 1]:
            if loss < best:
                best, bad = loss, 0
            else:
                bad += 1
                if bad >= patience:
                    drops, bad = drops + 1, 0
        return lr * FACTOR**drops
    return lr


class ScheduleLearningRate(keras.callbacks.Callback):
    """Sets the optimizer's rate at the start of every epoch from :func:`scheduled_lr`.

    Args:
        lr, schedule, total_epochs, patience: as :func:`scheduled_lr`.
        rows: the run's history rows (``loss`` per epoch), which the epoch recorder
            appends to at each epoch's end and a resume restores from history.csv.
    """

    def __init__(self, lr: float, schedule: str, total_epochs: int, patience: int,
                 rows: list[dict]):
        super().__init__()
        self.lr, self.schedule, self.total_epochs = lr, schedule, total_epochs
        self.patience, self.rows = patience, rows

    def on_epoch_begin(self, epoch, logs=None):
        losses = [float(row["loss"]) for row in self.rows]
        self.model.optimizer.learning_rate = scheduled_lr(
            self.lr, self.schedule, epoch + 1, self.total_epochs, losses, self.patience)
