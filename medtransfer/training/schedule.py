"""``--optimizer`` and ``--lr-schedule``: the learning rate of every epoch of a run.

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

MILESTONES = (0.5, 0.75)
"""``multistep``: where the rate drops, as fractions of the W+E epochs."""
FACTOR = 0.1
SGD_MOMENTUM = 0.9


def make_optimizer(name: str, lr: float) -> keras.optimizers.Optimizer:
    """A fresh optimizer: ``adam`` (Keras defaults) or ``sgd`` with momentum 0.9."""
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=SGD_MOMENTUM)
    return keras.optimizers.Adam(lr)


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
