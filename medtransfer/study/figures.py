"""The study's figures as small functions: data in, a matplotlib Figure out.

Figures are built on ``matplotlib.figure.Figure`` (the Agg canvas), never through pyplot,
so nothing depends on a display or on global plotting state. Each function returns the
figure; ``medtransfer.plotting.save_figure`` writes it (PNG, PDF or SVG). A new figure is
one more small function over :func:`panel_figure`.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from medtransfer.plotting import text_inches, wrap

_PANEL_SIZE = (4.2, 3.2)
_LEGEND_WIDTH = 36
_COLUMNS = 3
_MARGIN = 0.3  # inches of a width that a text leaves free
_TITLE_SIZE = 12
_PANEL_TITLE_SIZE = 9
_SMALL = 7


@dataclass
class Series:
    """One line (or set of points) in a panel.

    Attributes:
        label: legend entry.
        x, y: the points.
        error_low, error_high: optional error bar ends (absolute values, not offsets).
        style: matplotlib keyword arguments (color, linestyle, marker, ...).
        tick_labels: on a logarithmic x axis, the tick text of each point (for example
            ``all (717)`` for the whole training split); default the number.
    """

    label: str
    x: list[float]
    y: list[float]
    error_low: list[float] | None = None
    error_high: list[float] | None = None
    style: dict = field(default_factory=dict)
    tick_labels: list[str] | None = None


def panel_figure(panels: dict[str, list[Series]], *, title: str, xlabel: str,
                 ylabel: str, hlines: dict[str, list[tuple[float, str]]] | None = None,
                 integer_x: bool = False, log_x: bool = False) -> Figure:
    """One panel per entry of ``panels`` (title -> its series), in a grid of 3 columns.

    Every text fits the canvas: titles and labels are wrapped to the width they have.
    When a label means the same line (colour, line style, marker) in every panel, the
    legend is one, below the panels, where it hides no data; otherwise each panel has
    its own. A series of a single point is drawn as a marker without a line.

    Args:
        panels: panel title -> the series drawn in it, in order.
        title: the figure's title.
        xlabel, ylabel: axis labels of every panel.
        hlines: panel title -> horizontal reference lines ``(y, label)``, the label
            written on the line.
        integer_x: ticks on whole numbers only (epochs).
        log_x: a logarithmic x axis, ticks labelled with the plain numbers (or the
            series' ``tick_labels``).

    Returns:
        The figure, with exactly one axes per panel.
    """
    count = max(1, len(panels))
    columns = min(_COLUMNS, count)
    rows = math.ceil(count / columns)
    width = _PANEL_SIZE[0] * columns
    entries = _shared_legend(panels)
    legend_columns, legend_rows = _legend_grid(entries, width)
    figure = Figure(figsize=(width, _PANEL_SIZE[1] * rows + 0.6 + 0.2 * legend_rows),
                    layout="constrained")
    figure.suptitle(wrap(title, width - _MARGIN, _TITLE_SIZE), fontsize=_TITLE_SIZE)
    for position, (name, series_list) in enumerate(panels.items(), start=1):
        axes = figure.add_subplot(rows, columns, position)
        for series in series_list:
            _draw_series(axes, series)
        for y, label in (hlines or {}).get(name, []):
            axes.axhline(y, color="grey", linestyle=":", linewidth=1)
            # On the line, at the right: a legend entry would differ in every panel.
            # Below the line at the left: curves rise towards it from the right.
            axes.annotate(wrap(label, _PANEL_SIZE[0] - 1.2, _SMALL), xy=(0, y),
                          xycoords=("axes fraction", "data"), xytext=(3, -2),
                          textcoords="offset points", ha="left", va="top",
                          fontsize=_SMALL, color="dimgrey")
        axes.set_title(wrap(name, _PANEL_SIZE[0] - _MARGIN, _PANEL_TITLE_SIZE),
                       fontsize=_PANEL_TITLE_SIZE)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
        xs = sorted({x for series in series_list for x in series.x})
        if integer_x:
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
            if len(xs) == 1:  # one epoch: an axis around it, not a sliver of 0.1
                axes.set_xlim(xs[0] - 1, xs[0] + 1)
        if log_x:
            # Ticks at the measured points, as plain numbers: decades alone say little
            # when the points are 20, 50, 100, 200 and 717.
            axes.set_xscale("log")
            names = {x: f"{x:g}" for x in xs}
            for series in series_list:
                names.update(zip(series.x, series.tick_labels or [], strict=False))
            axes.set_xticks(xs, [names[x] for x in xs])
            axes.xaxis.set_minor_formatter(NullFormatter())
        if series_list and entries is None:
            axes.legend(fontsize=_SMALL)
    if entries:
        figure.legend(handles=list(entries.values()), loc="outside lower center",
                      ncols=legend_columns, fontsize=_SMALL + 1)
    return figure


def _drawn_style(series: Series) -> dict:
    """The series' style, with a visible marker and no line when it has one point (a line
    through one point draws nothing)."""
    style = dict(series.style)
    if len(series.x) == 1:
        style.update(linestyle="none", marker=style.get("marker") or "o",
                     markersize=max(6, style.get("markersize", 6)))
    return style


def _draw_series(axes, series: Series) -> None:
    label = _legend_text(series.label)
    style = _drawn_style(series)
    if series.error_low is not None and series.error_high is not None:
        below = [y - low for y, low in zip(series.y, series.error_low, strict=True)]
        above = [high - y for y, high in zip(series.y, series.error_high, strict=True)]
        axes.errorbar(series.x, series.y, yerr=[below, above], capsize=3, label=label,
                      **style)
    else:
        axes.plot(series.x, series.y, label=label, **style)


def _shared_legend(panels: dict[str, list[Series]]) -> dict | None:
    """Label -> a legend handle when every label looks the same in every panel (then one
    legend serves them all); None when a label changes look between panels."""
    from matplotlib.lines import Line2D

    looks: dict[str, dict] = {}
    for series_list in panels.values():
        for series in series_list:
            look = _drawn_style(series)
            if repr(looks.setdefault(series.label, look)) != repr(look):
                return None
    return {label: Line2D([], [], label=_legend_text(label), **look)
            for label, look in looks.items()}


def _legend_grid(entries: dict | None, width: float) -> tuple[int, int]:
    """(columns, rows) of a legend below the panels that fits ``width`` inches."""
    if not entries:
        return 1, 0
    longest = max(len(line) for handle in entries.values()
                  for line in handle.get_label().splitlines())
    entry = text_inches(longest, _SMALL + 1) + 0.8  # the text, the handle and gaps
    columns = max(1, min(len(entries), int((width - _MARGIN) // entry)))
    lines = max(handle.get_label().count("\n") + 1 for handle in entries.values())
    return columns, math.ceil(len(entries) / columns) * lines


def _legend_text(label: str) -> str:
    """A long label (a transfer init names its source run) on several short lines, so
    that the legend does not squeeze the panel."""
    return "\n".join(textwrap.wrap(label, _LEGEND_WIDTH, break_on_hyphens=True)) or label


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


def test_auc_against_train_size(panels: dict[str, list[Series]]) -> Figure:
    """Test micro AUC against the number of training images (log axis), one line per
    init, with error bars (a panel per dataset x net): where transfer helps most."""
    return panel_figure(panels, title="Test AUC against the training-set size",
                        xlabel="training images (log scale)", ylabel="test AUC (micro)",
                        log_x=True)
