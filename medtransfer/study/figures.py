"""The study's figures as small functions: data in, a matplotlib Figure out.

Figures are built on ``matplotlib.figure.Figure`` (the Agg canvas), never through pyplot,
so nothing depends on a display or on global plotting state. Each function returns the
figure; :func:`save_png` writes it. A new figure is one more small function over
:func:`panel_figure`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

_PANEL_SIZE = (4.2, 3.2)
_COLUMNS = 3


@dataclass
class Series:
    """One line (or set of points) in a panel.

    Attributes:
        label: legend entry.
        x, y: the points.
        error_low, error_high: optional error bar ends (absolute values, not offsets).
        style: matplotlib keyword arguments (color, linestyle, marker, ...).
    """

    label: str
    x: list[float]
    y: list[float]
    error_low: list[float] | None = None
    error_high: list[float] | None = None
    style: dict = field(default_factory=dict)


def panel_figure(panels: dict[str, list[Series]], *, title: str, xlabel: str,
                 ylabel: str, hlines: dict[str, list[tuple[float, str]]] | None = None,
                 integer_x: bool = False) -> Figure:
    """One panel per entry of ``panels`` (title -> its series), in a grid of 3 columns.

    Args:
        panels: panel title -> the series drawn in it, in order.
        title: the figure's title.
        xlabel, ylabel: axis labels of every panel.
        hlines: panel title -> horizontal reference lines ``(y, label)``.
        integer_x: ticks on whole numbers only (epochs).

    Returns:
        The figure, with exactly one axes per panel.
    """
    count = max(1, len(panels))
    columns = min(_COLUMNS, count)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(_PANEL_SIZE[0] * columns, _PANEL_SIZE[1] * rows + 0.6),
                    layout="constrained")
    figure.suptitle(title)
    for position, (name, series_list) in enumerate(panels.items(), start=1):
        axes = figure.add_subplot(rows, columns, position)
        for series in series_list:
            if series.error_low is not None and series.error_high is not None:
                below = [y - low for y, low in zip(series.y, series.error_low, strict=True)]
                above = [high - y for y, high in zip(series.y, series.error_high, strict=True)]
                axes.errorbar(series.x, series.y, yerr=[below, above], capsize=3,
                              label=series.label, **series.style)
            else:
                axes.plot(series.x, series.y, label=series.label, **series.style)
        for y, label in (hlines or {}).get(name, []):
            axes.axhline(y, color="grey", linestyle=":", linewidth=1, label=label)
        axes.set_title(name, fontsize=9)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
        if integer_x:
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if series_list:
            axes.legend(fontsize=7)
    return figure


def validation_by_freeze(panels: dict[str, list[Series]], init_label: str) -> Figure:
    """Validation micro AUC per epoch, one line per freeze level (a panel per dataset x net)."""
    return panel_figure(panels, title=f"Validation AUC per epoch by freeze level: {init_label}",
                        xlabel="epoch", ylabel="validation AUC (micro)", integer_x=True)


def glorot_against_transfer(panels: dict[str, list[Series]], init_label: str,
                            targets: dict[str, list[tuple[float, str]]]) -> Figure:
    """Validation curves of glorot and the transfer init at freeze 0, with glorot's best
    validation AUC as a reference line (where the speed-up is read)."""
    return panel_figure(panels, title=f"glorot against {init_label} (freeze 0)",
                        xlabel="epoch", ylabel="validation AUC (micro)", hlines=targets,
                        integer_x=True)


def test_auc_against_freeze(panels: dict[str, list[Series]]) -> Figure:
    """Test micro AUC against the frozen fraction, with error bars (a panel per dataset)."""
    return panel_figure(panels, title="Test AUC against the frozen fraction of the backbone",
                        xlabel="frozen fraction of the backbone", ylabel="test AUC (micro)")


def save_png(figure: Figure, path: str | Path) -> Path:
    """Writes ``figure`` as a PNG at 110 dpi, whole or not at all; returns the path."""
    path = Path(path)
    staged = path.with_name(f".{path.name}.tmp")
    figure.savefig(staged, format="png", dpi=110)
    os.replace(staged, path)
    return path
