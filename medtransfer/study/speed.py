"""Speed-up of convergence: how much sooner one run reaches another's best validation AUC."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class SpeedUp:
    """glorot's best validation AUC (``target``, first at ``glorot_epoch``) and the first
    epoch at which the other run reaches it (None: never)."""
    glorot_epoch: int
    target: float
    epoch: int | None

    @property
    def value(self) -> float | None:
        """``e_glorot / e_A``; None when never reached."""
        return self.glorot_epoch / self.epoch if self.epoch else None


def speed_up(glorot_history: list[dict[str, Any]],
             transfer_history: list[dict[str, Any]]) -> SpeedUp | None:
    """``e_B / e_A`` from two runs' history.csv rows (None when glorot has no epoch).

    ``e_B``: the first epoch at which glorot reaches its best validation micro AUC (the
    run's best epoch). ``e_A``: the first epoch at which the other run's validation
    micro AUC reaches that value; None when it never does.
    """
    curve = validation_curve(glorot_history)
    if not curve:
        return None
    target = max(value for _, value in curve)
    glorot_epoch = next(epoch for epoch, value in curve if value == target)
    reached = next((epoch for epoch, value in validation_curve(transfer_history)
                    if value >= target), None)
    return SpeedUp(glorot_epoch, target, reached)


def validation_curve(history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(epoch, validation AUC) of every history.csv row that has one: the micro AUC, or
    a multi-label run's mean AUC (its primary metric, ``val_auc_mean``)."""
    key = "val_auc_mean" if history and "val_auc_mean" in history[0] else "val_auc_micro"
    return [(int(row["epoch"]), float(row[key])) for row in history
            if isinstance(row.get(key), int | float)]
