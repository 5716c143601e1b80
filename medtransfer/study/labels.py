"""How a report names things: tasks, inits, run states, numbers and markdown tables."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

from medtransfer.config import (
    NOT_IDENTITY,
    RUN_ID_BASE,
    RunConfig,
    freeze_text,
    init_folder,
    init_source_name,
    value_text,
)
from medtransfer.study.grid import RUN_REFERENCE
from medtransfer.training.rundir import RunRecord

GLOROT = "glorot"
NAMED_INITS = ("glorot", "imagenet", "mean_var")
MISSING = "—"
# Config fields that cannot change a run's numbers, and a cell's own axes: runs that
# differ only in these are the same task.
NOT_TASK = frozenset(NOT_IDENTITY) | frozenset(RUN_ID_BASE)
# Fields whose default is the net's own (config.resolved_defaults): a resolved config
# holds each net's default, which differs between nets without making another task.
NET_DEFAULTS = ("image_size",)
# Fields a run fills from its dataset or net (training.resolve.resolve_config).
RESOLVED = frozenset({"lr", "image_size", "flips", "noise", "color"})


def task_labels(configs: dict[Any, RunConfig], ignore: tuple[str, ...] = (),
                whole_split: dict[tuple[str, str], int] | None = None) -> dict[Any, str]:
    """Dataset label per config: the dataset, plus what differs between tasks on it.

    Computed per dataset across nets, so that a setting that varies for one net labels
    that dataset's runs of every net alike (one task is one row). A field whose default
    is the net's own (:data:`NET_DEFAULTS`) counts only where it varies within a net: a
    resolved config holds each net's default input size, which is not a task of its own.
    ``ignore`` lists config fields left out of the label. ``whole_split`` gives the
    training images of each (dataset, classes) whole split, so that a run without
    ``train_size`` reads ``train_size=all (N)`` (just ``all`` where N is unknown).
    """
    settings: dict[str, dict[Any, dict[str, Any]]] = defaultdict(dict)
    nets: dict[Any, str] = {}
    for key, config in configs.items():
        values = config.to_dict()
        if values["train_size"] is None and whole_split:
            count = whole_split.get((values["dataset"], repr(values["classes"])))
            values["train_size"] = f"all ({count})" if count else None
        settings[values["dataset"]][key] = {
            name: value for name, value in values.items()
            if name not in NOT_TASK and name not in ignore}
        nets[key] = values["net"]
    labels = {}
    for dataset, by_key in settings.items():
        names = sorted({name for setting in by_key.values() for name in setting})
        varying = [name for name in names
                   if _varies(name, by_key, nets)]
        for key, setting in by_key.items():
            differs = ", ".join(f"{name}={label_value(setting.get(name))}"
                                for name in varying)
            labels[key] = f"{dataset} ({differs})" if differs else dataset
    return labels


def _varies(name: str, by_key: dict[Any, dict[str, Any]], nets: dict[Any, str]) -> bool:
    if name not in NET_DEFAULTS:
        return len({repr(setting.get(name)) for setting in by_key.values()}) > 1
    per_net = defaultdict(set)
    for key, setting in by_key.items():
        per_net[nets[key]].add(repr(setting.get(name)))
    return any(len(values) > 1 for values in per_net.values())


def label_value(value: Any) -> str:
    """A setting in a task label; None (the dataset's whole split, every class) is "all"."""
    return "all" if value is None else value_text(value)


def freeze_label(freeze: float) -> str:
    """A freeze level in a table or legend: ``0``, ``0.5``, ``1``."""
    return freeze_text(freeze, decimals=0)


def status_text(record: RunRecord, *, detail: bool = True) -> str:
    """A run's state in one word (``running``, ``interrupted``, ``complete``, ...), with
    the epoch it reached or diverged in when ``detail``."""
    word = record.status
    if record.status == "in progress":
        word = "running" if record.running else "interrupted"
        if detail:
            return f"{word} (epoch {record.epochs_done}/{record.config.total_epochs})"
    if record.status == "diverged" and detail:
        return f"diverged (epoch {record.metrics.get('diverged_epoch', '?')})"
    return word


def init_label_texts(inits: list[str], sources: dict[str, str], experiment: str) -> dict[str, str]:
    """How each init reads in tables and figures: its name, or ``transfer from <name>``
    with the name of the sweep's grid that trained the source, else the source's
    experiment (when it is another one), else the source run's directory name."""
    labels = {}
    for init in inits:
        if init in NAMED_INITS:
            labels[init] = init
        elif init.startswith(RUN_REFERENCE):
            labels[init] = f"transfer from {init.removeprefix(RUN_REFERENCE)}"
        else:
            labels[init] = f"transfer from {_short_source(init, sources, experiment)}"
    counts = defaultdict(int)
    for label in labels.values():
        counts[label] += 1
    # Two sources with one short name: the full names tell them apart.
    return {init: label if counts[label] == 1 else f"transfer from {init_source_name(init)}"
            for init, label in labels.items()}


def _short_source(init: str, sources: dict[str, str], experiment: str) -> str:
    name = init_source_name(init)
    if name in sources:
        return sources[name]
    run_dir = init_folder(init)
    if run_dir.name == name and run_dir.parent.name and run_dir.parent.name != experiment:
        return run_dir.parent.name
    return name


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); std is NaN for one value."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else math.nan


def ordered(values: Iterable, preferred: list) -> list:
    """``values`` in the order ``preferred`` gives them, the rest sorted after."""
    values = set(values)
    first = [value for value in dict.fromkeys(preferred) if value in values]
    return first + sorted(values - set(first), key=natural_key)


def natural_key(value: Any) -> list[tuple[int, Any]]:
    """Sorts text with numbers in it by the numbers' values (``train_size=20`` before
    ``train_size=100``), and a number before a word at the same place (``100`` before
    ``all (717)``)."""
    return [(0, float(part)) if index % 2 else (1, part)
            for index, part in enumerate(re.split(r"(\d+(?:\.\d+)?)", str(value)))]


def whole_split_sizes(records: list[RunRecord]) -> dict[tuple[str, str], int]:
    """(dataset, classes) -> the training images of its whole split, from metrics.json
    of a run without train_size (in-progress runs of the same task get it too)."""
    sizes = {}
    for record in records:
        count = record.metrics.get("train_images")
        if record.config.train_size is None and isinstance(count, int):
            sizes[(record.config.dataset, repr(record.config.classes))] = count
    return sizes


def percent_text(value: float) -> str:
    """A relative change as a signed percentage: ``+1.05%``."""
    return f"{100 * value:+.2f}%"


def markdown_table(rows: list[list[str]], header: list[str]) -> str:
    """A markdown table."""
    def line(cells):
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"
    return "\n".join([line(header), line(["---"] * len(header)), *map(line, rows)])


def published_percent(values: Any, key: str) -> str:
    """A published relative change of one dataset (``values[key]``), or ``—``."""
    value = values.get(key) if isinstance(values, dict) else None
    return percent_text(float(value)) if isinstance(value, int | float) else MISSING


def published_overall(values: Any, text) -> str:
    """The published overall value; when it is not the mean of the published per-dataset
    values (more than one of them), the cell says so and gives that mean."""
    overall = values.get("overall") if isinstance(values, dict) else values
    if not isinstance(overall, int | float):
        return MISSING
    cell = text(float(overall))
    per_dataset = [float(value) for key, value in values.items()
                   if key != "overall" and isinstance(value, int | float)] \
        if isinstance(values, dict) else []
    if len(per_dataset) > 1:
        mean = float(np.mean(per_dataset))
        if text(mean) != cell:
            cell += (f" (not the mean of the published per-dataset values, "
                     f"{text(mean)})")
    return cell


def published_ratio(value: Any, key: str) -> str:
    """A published speed-up of one dataset (or the overall number), or ``—``."""
    if isinstance(value, dict):
        value = value.get(key)
    elif key != "overall":
        value = None
    return f"{float(value):g}×" if isinstance(value, int | float) else MISSING
