"""An experiment's runs on the study's axes, and the runs its sweep file plans."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtransfer.config import (
    FIELDS,
    RUN_ID_BASE,
    RunConfig,
    absolute_path,
    config_from_mapping,
    init_source_name,
    parse_epochs,
)
from medtransfer.errors import MedtransferError
from medtransfer.pretraining.plan import METHODS
from medtransfer.study.grid import PRETRAIN_REFERENCE, RUN_REFERENCE
from medtransfer.study.labels import NAMED_INITS, NOT_TASK, RESOLVED, label_value
from medtransfer.training.rundir import RunRecord, primary_metric


@dataclass
class StudyRun:
    """One run directory with its place on the study's axes (``task``: the dataset label)."""

    record: RunRecord
    task: str
    dataset: str
    net: str
    init: str
    freeze: float
    seed: int
    task_any_size: str = ""  # the task label without the training-set size

    @property
    def complete(self) -> bool:
        """Whether metrics.json says complete."""
        return self.record.status == "complete"

    @property
    def auc(self) -> float:
        """metrics.json's test AUC of the run's primary metric: the micro AUC, or a
        multi-label run's mean of its findings' AUCs."""
        metrics = self.record.metrics
        return float(metrics[f"test_{primary_metric(metrics)}"])


@dataclass(frozen=True)
class PlannedCell:
    """One run the sweep file plans: its config and the keys the file sets explicitly."""

    config: RunConfig
    explicit: tuple[str, ...]
    compared: tuple[str, ...]
    grid_name: str | None = None
    reference: str | None = None  # "run:NAME" for a transfer from a named grid's run


def read_planned(sweep: dict[str, Any]) -> list[PlannedCell]:
    """Every run of the sweep file's grids, as far as the file alone tells (defaults that
    depend on the dataset or the net stay unset); cells with invalid values are left out
    (the sweep itself would have refused them)."""
    cells = []
    for grid in _grids(sweep):
        name = grid.pop("name", [None])[0]
        keys = list(grid)
        for combination in itertools.product(*(grid[key] for key in keys)):
            values = dict(zip(keys, combination, strict=True))
            init = values.get("init")
            if isinstance(init, str) and init.startswith(PRETRAIN_REFERENCE):
                continue  # one init per net and seed: its runs show it once they exist
            reference = init if isinstance(init, str) and init.startswith(RUN_REFERENCE) \
                else None
            try:
                config = config_from_mapping(values, source="sweep.yaml")
            except MedtransferError:
                continue
            explicit = tuple(key for key in keys if key not in NOT_TASK)
            # A field the run fills from its dataset or net compares only when the file
            # sets it; every other field is what the file says, or the default.
            compared = tuple(key for key in FIELDS if key not in NOT_TASK
                             and (key not in RESOLVED or key in keys))
            cells.append(PlannedCell(config, explicit, compared,
                                  name if isinstance(name, str) else None, reference))
    return cells


def _grids(sweep: dict[str, Any]) -> list[dict[str, list]]:
    """Each grid of the sweep config merged over its base, every value as a list."""
    base = sweep.get("base") if isinstance(sweep.get("base"), dict) else {}
    grids = sweep.get("grid", [])
    grids = [grids] if isinstance(grids, dict) else grids if isinstance(grids, list) else []
    merged = []
    for grid in grids:
        if isinstance(grid, dict):
            values = {**base, **grid}
            merged.append({key: value if isinstance(value, list) else [value]
                           for key, value in values.items()})
    return merged


def _same_setting(key: str, planned: Any, actual: Any) -> bool:
    if key == "epochs":
        return parse_epochs(str(planned)) == parse_epochs(str(actual))
    if isinstance(planned, list | tuple) and isinstance(actual, list | tuple):
        return [str(item) for item in planned] == [str(item) for item in actual]
    return planned == actual


def _matches(cell: PlannedCell, config: RunConfig, keys: Iterable[str]) -> bool:
    return all(_same_setting(key, getattr(cell.config, key), getattr(config, key))
               for key in keys)


def planned_tasks(cell: PlannedCell, placed: list[RunRecord], labels: dict[Path, str]) -> list[str]:
    """The task labels of the runs a planned cell belongs with: runs of its dataset that
    agree with every setting the sweep file gives it; a label of its own when none does."""
    found = [labels[record.path] for record in placed
             if record.config.dataset == cell.config.dataset
             and _matches(cell, record.config, cell.compared)]
    if found:
        return list(dict.fromkeys(found))
    settings = ", ".join(f"{key}={label_value(getattr(cell.config, key))}"
                         for key in cell.explicit)
    dataset = cell.config.dataset
    if not any(record.config.dataset == dataset for record in placed) or not settings:
        return [dataset]
    return [f"{dataset} ({settings})"]


def source_names(planned: list[PlannedCell], placed: list[RunRecord]) -> dict[str, str]:
    """Run directory name -> grid name, for each named grid's run present in the
    experiment (a named grid plans exactly one run; the sweep checks it)."""
    names = {}
    for cell in planned:
        if cell.grid_name is None:
            continue
        keys = [*cell.compared, *(key for key in RUN_ID_BASE if key != "init")]
        found = [record for record in placed if _matches(cell, record.config, keys)
                 and (cell.reference is not None or record.config.init == cell.config.init)]
        if len(found) == 1:
            names[found[0].path.name] = cell.grid_name
    return names


def study_init(config: RunConfig) -> str:
    """A run's init as the report groups runs: its ``init``, except that a pretraining
    directory (``<experiment>/<method>/<dataset>-<net>-<method>-s<seed>[-...]``, made for
    this run's net and seed by a sweep's pretraining step) stands for that step's
    pretraining of every net and seed: its path without the run's net and seed. So the
    runs of five seeds from five autoencoders are one init, "transfer from autoencoder"."""
    if not config.init_is_path:
        return config.init
    path = Path(config.init)
    if path.parent.name not in METHODS:
        return config.init
    name = path.name.replace(f"-{config.net}-", "-", 1)
    return str(path.parent / re.sub(rf"-s{config.seed}(?=-|$)", "", name, count=1))


def planned_init(cell: PlannedCell, sources: dict[str, str], placed: list[RunRecord]) -> str:
    """A planned cell's init as its runs record it (see :func:`_reference_init`)."""
    if cell.reference is not None:
        return reference_init(cell.reference, sources, placed)
    init = cell.config.init
    return init if init in NAMED_INITS else absolute_path(init)


def reference_init(reference: str, sources: dict[str, str], records: list[RunRecord]) -> str:
    """``run:NAME`` as runs record it: the absolute path of the named grid's run that
    runs of this experiment start from (``run:NAME`` itself until one exists)."""
    directory = next((name for name, grid in sources.items()
                      if grid == reference.removeprefix(RUN_REFERENCE)), None)
    return next((record.config.init for record in records
                 if record.config is not None and record.config.init_is_path
                 and directory is not None
                 and init_source_name(record.config.init) == directory), reference)


def meets(config: RunConfig, filters: dict[str, Any]) -> bool:
    """Whether a run's config has every value of a check's ``where``."""
    for key, value in filters.items():
        try:
            wanted = getattr(config_from_mapping({key: value}, source="expect"), key)
        except MedtransferError:
            return False
        if not _same_setting(key, wanted, getattr(config, key)):
            return False
    return True
