"""What the inspect pictures share: class colours, a run's panel title, saving a figure."""

from __future__ import annotations

from pathlib import Path

from medtransfer.training.rundir import TrainedRun


def class_colours(count: int) -> list:
    """One distinct colour per class (tab10 up to 10 classes, then tab20, then a ramp)."""
    from matplotlib import colormaps

    if count <= 10:
        return [colormaps["tab10"](index) for index in range(count)]
    if count <= 20:
        return [colormaps["tab20"](index) for index in range(count)]
    ramp = colormaps["turbo"]
    return [ramp(index / (count - 1)) for index in range(count)]


def class_legend_handles(names: list[str]) -> list:
    """Legend entries for every class, also those missing from a panel."""
    from matplotlib.lines import Line2D

    return [Line2D([], [], marker="o", linestyle="", color=colour, label=name)
            for name, colour in zip(names, class_colours(len(names)), strict=True)]


def short_title(run: TrainedRun) -> str:
    """``<run_id>`` over what tells runs apart: freeze, epochs, test AUC and accuracy."""
    config, metrics = run.config, run.metrics
    return (f"{config.run_id}\nfreeze {config.freeze:g}, epochs {config.epochs}, test AUC "
            f"{metrics.get('test_auc_micro', float('nan')):.3f}, "
            f"acc {metrics.get('test_accuracy', float('nan')):.3f}")


def save_figure(figure, path: Path) -> Path:
    """Writes ``figure`` as a PNG at 120 dpi; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path
