"""Reproduce a run: train its saved configuration again, beside it, and compare the two.

``reproduce_run(<logdir>/<experiment>/<run_id>)`` reads the run's ``config.yaml`` and
trains it into ``<logdir>/<experiment>-repro/<run_id>/``: the same run id (the same
configuration), another experiment, so the original is never touched and a report of the
original experiment never counts the copy. The copy behaves like any run: a killed one
resumes, a complete one is not trained again (``overwrite`` trains it afresh).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtransfer.config import absolute_path
from medtransfer.training.run import RunResult, run_experiment
from medtransfer.training.rundir import find_run

REPRO_SUFFIX = "-repro"
"""Appended to the original's experiment folder to name the copy's."""

COMPARED = (
    ("test_auc_mean", "test AUC mean"),  # a multi-label run's primary metric
    ("test_auc_micro", "test AUC micro"),
    ("test_auc_macro", "test AUC macro"),
    ("test_accuracy", "test accuracy"),
    ("val_auc_micro_best", "best val AUC"),
    ("val_auc_mean_best", "best val mean AUC"),
    ("best_epoch", "best epoch"),
)


@dataclass(frozen=True)
class Reproduction:
    """An original run and its reproduction.

    Attributes:
        original: the original run directory (absolute).
        original_metrics: its metrics.json (empty when it has none).
        copy: what training the copy did.
    """

    original: Path
    original_metrics: dict[str, Any]
    copy: RunResult

    def comparison(self) -> str:
        """The two runs' test metrics side by side, and where each run is."""
        # A multi-label run has mean AUCs and no macro one: each side's own keys.
        compared = [(key, label) for key, label in COMPARED
                    if key in self.original_metrics or key in self.copy.metrics]
        width = max(len(label) for _, label in compared) + 2
        rows = [f"{'':<14}" + "".join(f"{label:>{width}}" for _, label in compared)]
        for name, metrics in (("original", self.original_metrics),
                              ("reproduction", self.copy.metrics)):
            rows.append(f"{name:<14}" + "".join(
                f"{_cell(metrics.get(key)):>{width}}" for key, _ in compared))
        status = self.original_metrics.get("status")
        if status == "complete":
            rows.append(f"{'difference':<14}" + "".join(
                f"{_difference(self.original_metrics, self.copy.metrics, key):>{width}}"
                for key, _ in compared))
        else:
            rows.append(f"(the original has no test metrics: its status is "
                        f"'{status or 'not started'}')")
        rows += [f"original:     {self.original}", f"reproduction: {self.copy.run_dir}"]
        return "\n".join(rows)


def reproduce_run(path: str | Path, *, overwrite: bool = False) -> Reproduction:
    """Trains the configuration saved in a run directory again, beside the original.

    Args:
        path: the run directory, ``<logdir>/<experiment>/<run_id>``, from any working
            directory (its config.yaml holds absolute paths).
        overwrite: train the copy afresh even when it is complete; the original is never
            written.

    Returns:
        The original's location and metrics, and the copy's :class:`RunResult`.

    Raises:
        MedtransferError: ``path`` is not a run directory, or its config cannot be run
            here (a dataset or init path that does not exist on this machine).
    """
    directory = find_run(path, "reproduce")
    original = Path(absolute_path(directory.path))
    # Placed by where the original is now, not by the logdir it recorded: a run copied
    # from another machine is reproduced beside the copy.
    config = directory.read_config().replace(
        experiment=original.parent.name + REPRO_SUFFIX, logdir=str(original.parent.parent))
    copy = run_experiment(config, overwrite=overwrite)
    return Reproduction(original, directory.read_metrics() or {}, copy)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _difference(original: dict[str, Any], copy: dict[str, Any], key: str) -> str:
    before, after = original.get(key), copy.get(key)
    if not isinstance(before, int | float) or not isinstance(after, int | float):
        return "-"
    return f"{after - before:+.4f}" if isinstance(after, float) else f"{after - before:+d}"
