"""What each figure of a report shows, as data for :mod:`medtransfer.study.figures`."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from medtransfer.study import figures
from medtransfer.study.labels import GLOROT, freeze_label, mean_std, ordered
from medtransfer.study.runs import StudyRun
from medtransfer.study.speed import validation_curve


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def _colours(count: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(index / max(1, count - 1) * 0.9) for index in range(count)]


def _train_images(run: StudyRun) -> int | None:
    """How many images the run trained on: metrics.json's count (the whole split when
    train_size is unset), else its train_size; None when neither says."""
    count = run.record.metrics.get("train_images", run.record.config.train_size)
    return None if count is None else int(count)


class FigurePanels:
    """The figures' data: a panel per dataset (and net), a series per init or freeze
    level (a mixin of :class:`medtransfer.study.report.Study`)."""

    def figures(self) -> list[tuple[str, Any]]:
        """(file name, matplotlib Figure) of every figure, drawn now."""
        return [(name, draw(*arguments)) for name, draw, arguments in self.figure_specs()]

    def figure_specs(self) -> list[tuple[str, Callable, tuple]]:
        """(file name, drawing function, its arguments) of every figure this experiment
        has data for."""
        specs: list[tuple[str, Callable, tuple]] = []
        for init in self.freeze_inits:
            slug, label = _slug(self.init_labels[init]), self.init_labels[init]
            panels = self._freeze_panels(init)
            if panels:
                specs.append((f"val_auc_by_freeze_{slug}.png", figures.validation_by_freeze,
                              (panels, label)))
            if init != GLOROT:
                versus, targets = self._versus_panels(init)
                if versus:
                    specs.append((f"glorot_vs_{slug}.png", figures.glorot_against_transfer,
                                  (versus, label, targets)))
        panels = self._auc_freeze_panels()
        if panels:
            specs.append(("test_auc_vs_freeze.png", figures.test_auc_against_freeze, (panels,)))
        panels = self._auc_size_panels()
        if panels:
            specs.append(("test_auc_vs_train_size.png", figures.test_auc_against_train_size,
                          (panels,)))
        return specs

    def _mean_curve(self, runs: list[StudyRun]) -> tuple[list[float], list[float]]:
        """Validation AUC per epoch, averaged over the runs (epochs all of them logged)."""
        by_epoch = defaultdict(list)
        for run in runs:
            for epoch, value in validation_curve(run.record.history):
                by_epoch[epoch].append(value)
        epochs = sorted(epoch for epoch, values in by_epoch.items() if len(values) == len(runs))
        return epochs, [float(np.mean(by_epoch[epoch])) for epoch in epochs]

    def _series(self, label: str, runs: list[StudyRun], style: dict) -> figures.Series | None:
        x, y = self._mean_curve(runs)
        if not x:
            return None
        suffix = f" (n={len(runs)})" if len(runs) > 1 else ""
        # Markers keep a run with a single epoch so far visible.
        return figures.Series(label + suffix, x, y, style={"marker": "o", "markersize": 3,
                                                           **style})

    def _freeze_panels(self, init: str) -> dict[str, list[figures.Series]]:
        panels = {}
        freezes = self.freezes_of[init]
        colours = _colours(len(freezes))
        for task, net in self.rows:
            series = []
            if init != GLOROT:
                series.append(self._series("glorot, freeze 0",
                                           self.cells.get((task, net, GLOROT, 0.0), []),
                                           {"color": "black", "linestyle": "--"}))
            ours = [self._series(f"freeze {freeze_label(freeze)}",
                                 self.cells.get((task, net, init, freeze), []),
                                 {"color": colour})
                    for freeze, colour in zip(freezes, colours, strict=True)]
            if any(item is not None for item in ours):
                panels[f"{task} · {net}"] = [item for item in series + ours
                                             if item is not None]
        return panels

    def _versus_panels(self, init: str) -> tuple[dict, dict]:
        panels, targets = {}, {}
        for task, net in self.rows:
            glorot = self._series("glorot", self.cells.get((task, net, GLOROT, 0.0), []),
                                  {"color": "black"})
            ours = self._series(self.init_labels[init], self.cells.get((task, net, init, 0.0), []),
                                {"color": "tab:red"})
            if glorot is None or ours is None:
                continue
            name = f"{task} · {net}"
            panels[name] = [glorot, ours]
            best = max(glorot.y)
            of_mean = " of the mean curve" if "(n=" in glorot.label else ""
            targets[name] = [(best, f"glorot's best{of_mean} {best:.4f} (epoch "
                                    f"{glorot.x[glorot.y.index(best)]})")]
        return panels, targets

    def _auc_freeze_panels(self) -> dict[str, list[figures.Series]]:
        """Test AUC against the freeze level, a panel per task, a line per net and init
        with runs at any freeze (glorot at freeze 0 alone is a dashed reference)."""
        panels: dict[str, list[figures.Series]] = {}
        lines = [(net, init) for net in ordered({net for _, net in self.rows},
                                               [net for _, net in self.rows])
                 for init in self.freeze_inits]
        colours = dict(zip(lines, _colours(len(lines)), strict=True))
        for task in dict.fromkeys(task for task, _ in self.rows):
            series = []
            for net, init in lines:
                points = []
                for freeze in self.freezes_of[init]:
                    done = self.complete(task, net, init, freeze)
                    if done:
                        points.append((freeze, *self._auc_with_error(done)))
                if points:
                    label = (net if len(self.freeze_inits) == 1
                             else f"{net}, {self.init_labels[init]}")
                    x, y, low, high = (list(column) for column in zip(*points, strict=True))
                    series.append(figures.Series(label, x, y, low, high,
                                                 {"color": colours[(net, init)], "marker": "o"}))
                    glorot = self.mean_auc(task, net, GLOROT)
                    if (glorot is not None and GLOROT not in self.freeze_inits
                            and init == self.freeze_inits[0]):
                        series.append(figures.Series(
                            f"{net}, glorot", [0.0, 1.0], [glorot, glorot],
                            style={"color": colours[(net, init)], "linestyle": "--"}))
            if series:
                panels[task] = series
        return panels

    def _auc_size_panels(self) -> dict[str, list[figures.Series]]:
        """Test AUC against training images, a panel per task (at any size) and net, a
        line per init (and freeze, when an init has several); only when the experiment
        has more than one ``train_size``."""
        if len(self.train_sizes) < 2:
            return {}
        groups: dict[tuple, dict[tuple, list[StudyRun]]] = defaultdict(lambda: defaultdict(list))
        for run in self.runs:
            if run.complete:
                groups[(run.task_any_size, run.net)][(run.init, run.freeze)].append(run)
        panels = {}
        for (task, net), lines in groups.items():
            freezes = defaultdict(set)
            for init, freeze in lines:
                freezes[init].add(freeze)
            keys = sorted(lines, key=lambda key: (self.inits.index(key[0]), key[1]))
            others = iter(_colours(sum(init != GLOROT for init, _ in keys)))
            series = []
            for init, freeze in keys:
                # glorot in black, as in the other figures.
                colour = "black" if init == GLOROT else next(others)
                by_size = defaultdict(list)
                for run in lines[(init, freeze)]:
                    # A run of the whole split from before metrics.json had train_images
                    # has no place on the axis.
                    if _train_images(run) is not None:
                        by_size[_train_images(run)].append(run)
                if not by_size:
                    continue
                points = sorted((size, *self._auc_with_error(done))
                                for size, done in by_size.items())
                label = self.init_labels[init]
                if len(freezes[init]) > 1:
                    label += f", freeze {freeze_label(freeze)}"
                x, y, low, high = (list(column) for column in zip(*points, strict=True))
                ticks = [f"all ({size})" if any(run.record.config.train_size is None
                                                for run in by_size[size]) else f"{size:g}"
                         for size in x]
                series.append(figures.Series(label, x, y, low, high,
                                             {"color": colour, "marker": "o"}, ticks))
            if any(len(item.x) > 1 for item in series):
                panels[f"{task} · {net}"] = series
        return panels

    def _auc_with_error(self, done: list[StudyRun]) -> tuple[float, float, float]:
        if len(done) == 1:
            interval = self.bootstrap.interval(done[0])
            if interval is None:
                return done[0].auc, done[0].auc, done[0].auc
            # Within the rounding _disagreement allows, the point may sit just outside.
            return done[0].auc, min(interval.low, done[0].auc), max(interval.high,
                                                                    done[0].auc)
        mean, std = mean_std([run.auc for run in done])
        return mean, mean - std, mean + std
