"""A sweep config, read and expanded into the list of runs it stands for.

A sweep file names the ``experiment``, the run options every run shares (``base``) and a
``grid``: every combination of its lists is one run, and a list of grids joins several
(for example glorot at freeze 0 plus imagenet at every freeze level). A grid may carry a
``name``; a later grid transfers from that grid's run with ``init: ["run:NAME"]``, which
becomes the run's directory. The runs come out in file order, so a run's source always
comes before it. Top-level ``published`` and ``expect`` are for ``report``; the sweep
checks ``expect``'s structure (:func:`check_expect`) so that a typo fails before any run.
Top-level ``split_sizes`` gives the images per split of datasets not prepared on this
machine, for ``sweep --estimate``.

Top-level ``pretrain`` names pretraining steps (``medtransfer pretrain``)::

    pretrain:
      ae:                      # the step's name
        method: autoencoder
        epochs: 10             # the pretraining's own options, over what it inherits
    grid:
      seed: [0, 1, 2]
      init: [glorot, "pretrain:ae"]

A run with ``init: "pretrain:NAME"`` starts from that step's pretraining of the run's
own dataset, net, image size, seed, batch size and classes (``plan.INHERITED_FIELDS``),
overridden by the step's options (dataset, image_size, seed, lr, batch_size,
train_size, classes; learning rate and training images are the step's own, 0.001 and
every training image unless it says). Each distinct pretraining is one entry of the
sweep's runs, placed before the first run that uses it, so the sweep trains it first and
``--dry-run`` lists it.

Run directories are ``RunConfig.run_dir``: the sweep never invents its own ids.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medtransfer.config import (
    FIELDS,
    NOT_IDENTITY,
    RunConfig,
    absolute_path,
    config_from_mapping,
)
from medtransfer.errors import MedtransferError, look_up_option
from medtransfer.pretraining.plan import (
    DEFAULT_EPOCHS,
    INHERITED_FIELDS,
    METHODS,
    pretrain_config,
    pretrain_dir,
    pretrain_id,
)

SWEEP_KEYS = ("experiment", "base", "grid", "pretrain", "published", "expect", "split_sizes")
RUN_REFERENCE = "run:"
PRETRAIN_REFERENCE = "pretrain:"
STEP_OPTIONS = ("dataset", "image_size", "seed", "lr", "batch_size", "train_size", "classes")
"""What a pretraining step may set over what it inherits from the run that uses it."""
_STEP_HELP = (
    "A pretraining step is a mapping with 'method' (autoencoder), optionally 'epochs' "
    f"(default {DEFAULT_EPOCHS}) and any of {', '.join(STEP_OPTIONS)}; runs use it as "
    "init: \"pretrain:NAME\"."
)
EXPECT_KEYS = ("text", "checks")
IMPROVEMENT_CHECK_KEYS = ("improvement", "over", "freeze", "where", "sign", "excludes_zero")
METRIC_CHECK_KEYS = ("metric", "init", "freeze", "where", "range")
SIGNS = ("positive", "negative")
_EXPECT_HELP = (
    "expect is a sentence, or a mapping with 'text' (the sentence) and 'checks': a list "
    "of checks report evaluates, each either {improvement: INIT_A, over: INIT_B, sign: "
    "positive|negative, excludes_zero: true, freeze: F, where: {train_size: 10}} or "
    "{metric: test_auc_micro, init: INIT, range: [LOW, HIGH], freeze: F, where: {...}} "
    "(freeze, where and excludes_zero optional); configs/demo.yaml has an example."
)
PUBLISHED_VALUE_KEYS = ("dataset", "net", "init", "freeze", "where", "metric", "value", "label")
_PUBLISHED_HELP = (
    "published is a mapping with 'source' and optionally 'values': a list of "
    "{dataset: D, net: N, init: glorot, metric: test_auc_macro, value: 0.944, label: "
    "\"AUC\", freeze: F, where: {...}} (init, label, freeze and where optional; metric is "
    "the metrics.json key that measures what the paper reports); configs/medmnist_v2.yaml "
    "has an example."
)
# Options that place runs: one experiment folder per sweep, so only top-level or base.
_SWEEP_WIDE = ("experiment", "logdir")


@dataclass(frozen=True)
class PlannedRun:
    """One cell of the grid.

    Attributes:
        config: the run's options (defaults that depend on the dataset are filled when
            it runs).
        grid: the grid's position in the file (0 for a single grid).
        name: the grid's ``name``, if it has one.
        source: the earlier run this one transfers from (``init: run:NAME``), or the
            pretraining it starts from (``init: pretrain:NAME``), if any.
        pretrain: for a pretraining step, its method (``autoencoder``); its config is
            then the pretraining's (``plan.pretrain_config``).
    """

    config: RunConfig
    grid: int
    name: str | None = None
    source: PlannedRun | None = None
    pretrain: str | None = None

    @property
    def run_id(self) -> str:
        """The run id; a pretraining's is ``<method>/<pretrain id>``, its path under the
        experiment."""
        if self.pretrain:
            return f"{self.pretrain}/{pretrain_id(self.config, self.pretrain)}"
        return self.config.run_id

    @property
    def run_dir(self) -> Path:
        return pretrain_dir(self.config, self.pretrain) if self.pretrain else self.config.run_dir


@dataclass(frozen=True)
class Sweep:
    """A sweep file, read and expanded.

    Attributes:
        path: the file.
        text: its content as given (copied to ``<experiment>/sweep.yaml`` when it runs).
        experiment: the experiment's name.
        logdir: the root of the experiments.
        runs: every run, in the order they run.
        split_sizes: dataset -> images per split (train, validation, test), for
            ``sweep --estimate`` on a machine where the dataset is not prepared.
    """

    path: Path
    text: str
    experiment: str
    logdir: Path
    runs: list[PlannedRun]
    split_sizes: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def experiment_dir(self) -> Path:
        return self.logdir / self.experiment


def load_sweep(path: str | Path, logdir: str | Path | None = None) -> Sweep:
    """Reads and expands a sweep file.

    Args:
        path: the YAML sweep file.
        logdir: overrides the root of the experiments (``--logdir``); default: ``base``'s
            ``logdir`` or ``tensorboard_logs``.

    Raises:
        MedtransferError: the file is missing or not YAML, a key is unknown (with a
            did-you-mean), a grid value is not a list, a run option is invalid, a
            ``run:NAME`` names no single earlier run, a ``pretrain:NAME`` no step, or two
            different cells would write the same run directory.
    """
    path = Path(path)
    try:
        text = path.read_text()
        values = yaml.safe_load(text)
    except FileNotFoundError:
        raise MedtransferError(
            f"Sweep file '{path}' does not exist. Give a YAML file with experiment, base and "
            "grid, for example configs/demo.yaml or configs/kierzynka2019.yaml."
        ) from None
    except yaml.YAMLError as error:
        raise MedtransferError(
            f"Sweep file '{path}' is not valid YAML ({' '.join(str(error).split())}). Fix "
            "the syntax and run the same command again."
        ) from None
    if not isinstance(values, dict):
        raise MedtransferError(
            f"Sweep file '{path}' must hold a mapping with the keys experiment, base and grid, "
            f"not a {type(values).__name__}. See configs/demo.yaml for an example."
        )
    runs = expand(values, source=str(path), logdir=logdir)
    config = runs[0].config
    return Sweep(path, text, config.experiment, Path(config.logdir), runs,
                 _split_sizes(values.get("split_sizes") or {}, str(path)))


def _split_sizes(value: Any, source: str) -> dict[str, dict[str, int]]:
    """The sweep file's ``split_sizes``, checked: dataset -> {train, validation, test}."""
    sizes = {}
    for name, counts in _mapping(value, "split_sizes", source).items():
        if not (isinstance(counts, Mapping) and set(counts) == {"train", "validation", "test"}
                and all(isinstance(n, int) and not isinstance(n, bool) and n > 0
                        for n in counts.values())):
            raise MedtransferError(
                f"In {source}: split_sizes: {name} must give the images of each split as "
                f"{{train: N, validation: N, test: N}}, three positive whole numbers, not "
                f"{counts!r}.")
        sizes[str(name)] = dict(counts)
    return sizes


def expand(values: Mapping[str, Any], *, source: str = "the sweep",
           logdir: str | Path | None = None) -> list[PlannedRun]:
    """Expands a sweep mapping (a sweep file's content) into its runs, in order.

    Args:
        values: ``experiment``, ``base``, ``grid`` (a mapping, or a list of mappings),
            and optionally ``published`` and ``expect``.
        source: where the values come from, for error messages.
        logdir: overrides ``base``'s ``logdir``.

    Returns:
        One :class:`PlannedRun` per distinct run directory, grid by grid, each grid's
        combinations in the order of its keys and values.

    Raises:
        MedtransferError: see :func:`load_sweep`.
    """
    for key in values:
        _look_up(str(key), SWEEP_KEYS, "sweep key", source,
                 "A sweep file has experiment, base and grid (and, for report, published "
                 "and expect).")
    base_values = _mapping(values.get("base") or {}, "base", source)
    if "expect" in values:
        check_expect(values["expect"], source)
    check_published(values.get("published"), source)
    if "experiment" in base_values:
        raise MedtransferError(
            f"In {source}: put 'experiment' at the top level of the sweep file, not in "
            "base: every run of a sweep lands in one experiment folder."
        )
    experiment = values.get("experiment") or Path(source).stem
    base_values = {**base_values, "experiment": str(experiment)}
    if logdir is not None:
        base_values["logdir"] = str(logdir)
    base = _config(base_values, None, f"{source}, base")
    steps = _pretrain_steps(values.get("pretrain") or {}, source)

    grids = values.get("grid")
    if grids is None:
        grids = [{}]  # no grid: the base alone is one run
    if isinstance(grids, Mapping):
        grids = [grids]
    if not isinstance(grids, list) or not grids:
        raise MedtransferError(
            f"In {source}: grid must be a mapping of option lists, or a list of such "
            "mappings (joined), for example grid: {net: [small_cnn, cbr_tiny], freeze: [0, 1]}."
        )

    runs: list[PlannedRun] = []
    names: dict[str, list[PlannedRun]] = {}
    for index, grid in enumerate(grids):
        where = f"{source}, grid {index + 1}"
        grid = dict(_mapping(grid, f"grid {index + 1}", source))
        name = grid.pop("name", None)
        if name is not None and (not isinstance(name, str) or name in names):
            raise MedtransferError(
                f"In {where}: name {name!r} must be a string that no earlier grid uses; "
                "later grids refer to this grid's run as init: [\"run:NAME\"]."
            )
        cells = _cells(grid, where)
        grid_runs = []
        for cell in cells:
            init = cell.get("init", base.init)
            source_run = None
            if isinstance(init, str) and init.startswith(RUN_REFERENCE):
                source_run = _referenced_run(init.removeprefix(RUN_REFERENCE), names, where)
                cell = {**cell, "init": absolute_path(source_run.run_dir)}
            elif isinstance(init, str) and init.startswith(PRETRAIN_REFERENCE):
                source_run = _pretraining(init.removeprefix(PRETRAIN_REFERENCE), steps,
                                          _config({**cell, "init": "glorot"}, base, where),
                                          index, where)
                cell = {**cell, "init": absolute_path(source_run.run_dir)}
                runs.append(source_run)  # before the run: the sweep trains it first
            config = _config(cell, base, where)
            grid_runs.append(PlannedRun(config, index, name, source_run))
            runs.append(grid_runs[-1])
        if name is not None:
            names[name] = grid_runs
    return _without_duplicates(runs, source)


def _pretrain_steps(steps: Any, source: str) -> dict[str, dict[str, Any]]:
    """The sweep file's ``pretrain`` steps by name, each checked: its method, epochs and
    options (the options as a run config checks them)."""
    if not isinstance(steps, Mapping):
        raise MedtransferError(f"In {source}: pretrain must be a mapping of step names to "
                               f"steps. {_STEP_HELP}")
    checked = {}
    for name, step in steps.items():
        where = f"{source}, pretrain {name}"
        if not isinstance(step, Mapping) or "method" not in step:
            raise MedtransferError(f"In {where}: the step has no method. {_STEP_HELP}")
        for key in step:
            _look_up(str(key), ["method", "epochs", *STEP_OPTIONS], "pretraining option",
                     where, _STEP_HELP)
        _look_up(str(step["method"]), METHODS, "pretraining method", where, _STEP_HELP)
        options = {key: value for key, value in step.items() if key not in ("method", "epochs")}
        _config(options, None, where)
        try:
            pretrain_config(RunConfig(), step.get("epochs", DEFAULT_EPOCHS))
        except MedtransferError as error:
            raise MedtransferError(f"In {where}: {error}") from None
        checked[str(name)] = dict(step)
    return checked


def _pretraining(name: str, steps: dict[str, dict[str, Any]], run: RunConfig, grid: int,
                 where: str) -> PlannedRun:
    """The pretraining step ``name`` for ``run``: what it inherits from the run, then the
    step's own options."""
    if name not in steps:
        _look_up(name, steps, "pretraining step", where,
                 "init: pretrain:NAME names a step of the sweep file's top-level pretrain "
                 "mapping.")
    step = steps[name]
    values = {**{key: getattr(run, key) for key in INHERITED_FIELDS},
              **{key: value for key, value in step.items() if key not in ("method", "epochs")}}
    config = pretrain_config(_config(values, None, f"{where}, pretrain {name}"),
                             step.get("epochs", DEFAULT_EPOCHS))
    return PlannedRun(config, grid, source=None, pretrain=step["method"])


def check_expect(expect: Any, source: str = "the sweep") -> None:
    """Checks the structure of a sweep file's ``expect`` (see the README's report section).

    Raises:
        MedtransferError: an unknown key (with a did-you-mean), a missing or mistyped value.
    """
    if isinstance(expect, str) or expect is None:
        return
    where = f"{source}, expect"
    if not isinstance(expect, Mapping):
        raise MedtransferError(f"In {where}: a {type(expect).__name__} is not valid. "
                               f"{_EXPECT_HELP}")
    for key in expect:
        _look_up(str(key), EXPECT_KEYS, "expect key", where, _EXPECT_HELP)
    if not isinstance(expect.get("text", ""), str):
        raise MedtransferError(f"In {where}: text must be a sentence. {_EXPECT_HELP}")
    checks = expect.get("checks", [])
    if not isinstance(checks, list):
        raise MedtransferError(f"In {where}: checks must be a list. {_EXPECT_HELP}")
    for index, check in enumerate(checks, start=1):
        _check_one(check, f"{where}, check {index}")


def _check_one(check: Any, where: str) -> None:
    if not isinstance(check, Mapping) or ("improvement" in check) == ("metric" in check):
        raise MedtransferError(
            f"In {where}: a check is a mapping with either 'improvement' or 'metric'. "
            f"{_EXPECT_HELP}")
    improvement = "improvement" in check
    keys = IMPROVEMENT_CHECK_KEYS if improvement else METRIC_CHECK_KEYS
    for key in check:
        _look_up(str(key), keys, "check key", where, _EXPECT_HELP)
    required = ("improvement", "over", "sign") if improvement else ("metric", "init", "range")
    for key in required:
        if key not in check:
            raise MedtransferError(f"In {where}: '{key}' is missing. {_EXPECT_HELP}")
    for key in ("improvement", "over", "metric", "init"):
        if key in check and not isinstance(check[key], str):
            raise MedtransferError(
                f"In {where}: {key} must be a name written as in the grid (glorot, "
                f"imagenet, \"run:NAME\", test_auc_micro, ...), not {check[key]!r}.")
    if improvement:
        _look_up(str(check["sign"]), SIGNS, "sign", where, _EXPECT_HELP)
        if not isinstance(check.get("excludes_zero", False), bool):
            raise MedtransferError(f"In {where}: excludes_zero must be true or false.")
    else:
        bounds = check["range"]
        if (not isinstance(bounds, list) or len(bounds) != 2
                or not all(_is_number(bound) for bound in bounds) or bounds[0] > bounds[1]):
            raise MedtransferError(
                f"In {where}: range must be [LOW, HIGH], two numbers with LOW <= HIGH, not "
                f"{bounds!r}.")
    _check_selection(check, where)


def _check_selection(entry: Mapping[str, Any], where: str) -> None:
    """The ``freeze`` and ``where`` that select the runs of a check or a published value."""
    freeze = entry.get("freeze", 0.0)
    if not _is_number(freeze) or not 0.0 <= freeze <= 1.0:
        raise MedtransferError(f"In {where}: freeze must be a number in [0, 1], not {freeze!r}.")
    filters = entry.get("where", {})
    if not isinstance(filters, Mapping):
        raise MedtransferError(
            f"In {where}: where must be a mapping of run options to values, for example "
            "where: {train_size: 10}.")
    for key in filters:
        _look_up(str(key), [name for name in FIELDS if name not in NOT_IDENTITY],
                 "run option", where, "where selects runs by options that are part of a "
                 "run's identity, written with underscores.")


def check_published(published: Any, source: str = "the sweep") -> None:
    """Checks the structure of a sweep file's ``published`` values (see docs/studies.md).

    ``published`` is a mapping: ``source`` (where the numbers come from), optionally the
    study's ``improvement``, ``speedup`` and ``findings``, and ``values``: a list of
    numbers a paper reports for one (dataset, net, init) that ``report`` prints beside
    the same metric of our runs.

    Raises:
        MedtransferError: a value entry with an unknown key (with a did-you-mean), a
            missing or mistyped field.
    """
    if published is None:
        return
    where = f"{source}, published"
    if not isinstance(published, Mapping):
        raise MedtransferError(f"In {where}: a {type(published).__name__} is not valid. "
                               f"{_PUBLISHED_HELP}")
    values = published.get("values", [])
    if not isinstance(values, list):
        raise MedtransferError(f"In {where}: values must be a list. {_PUBLISHED_HELP}")
    for index, entry in enumerate(values, start=1):
        at = f"{where}, value {index}"
        if not isinstance(entry, Mapping):
            raise MedtransferError(f"In {at}: each value is a mapping. {_PUBLISHED_HELP}")
        for key in entry:
            _look_up(str(key), PUBLISHED_VALUE_KEYS, "published value key", at, _PUBLISHED_HELP)
        for key in ("dataset", "net", "metric", "value"):
            if key not in entry:
                raise MedtransferError(f"In {at}: '{key}' is missing. {_PUBLISHED_HELP}")
        for key in ("dataset", "net", "init", "metric", "label"):
            if key in entry and not isinstance(entry[key], str):
                raise MedtransferError(
                    f"In {at}: {key} must be text, not {entry[key]!r}. {_PUBLISHED_HELP}")
        if not _is_number(entry["value"]):
            raise MedtransferError(
                f"In {at}: value must be a number (as a fraction, like our metrics: 0.944, "
                f"not 94.4%), not {entry['value']!r}.")
        _check_selection(entry, at)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cells(grid: dict[str, Any], where: str) -> list[dict[str, Any]]:
    for key, choices in grid.items():
        _look_up(str(key), [*FIELDS, "name"], "run option", where,
                 "Grid keys are run options written with underscores, plus 'name'.")
        if key in _SWEEP_WIDE:
            raise MedtransferError(
                f"In {where}: '{key}' cannot vary within a sweep: every run of a sweep lands in "
                "one experiment folder. Set experiment at the top level and logdir in base."
            )
        if not isinstance(choices, list) or not choices:
            raise MedtransferError(
                f"In {where}: grid key '{key}' must be a non-empty list of values (every "
                f"combination of the lists is one run), for example {key}: [{choices!r}]. A "
                "value every run shares belongs in base."
            )
    keys = list(grid)
    return [dict(zip(keys, combination, strict=True))
            for combination in itertools.product(*(grid[key] for key in keys))]


def _referenced_run(name: str, names: dict[str, list[PlannedRun]], where: str) -> PlannedRun:
    if name not in names:
        _look_up(name, names, "run name", where,
                 "init: run:NAME names a run of an earlier grid of the same file by that "
                 "grid's 'name' key; give the source grid a name and list it first.")
    runs = names[name]
    if len(runs) != 1:
        raise MedtransferError(
            f"In {where}: run:{name} is ambiguous: the grid named '{name}' has {len(runs)} "
            "runs. A grid that others transfer from must expand to exactly one run; split it "
            "into one named grid per run."
        )
    return runs[0]


def _without_duplicates(runs: list[PlannedRun], source: str) -> list[PlannedRun]:
    """Keeps the first of identical cells; two different cells in one run directory fail."""
    kept: dict[Path, PlannedRun] = {}
    for run in runs:
        first = kept.setdefault(run.run_dir, run)
        if first.config != run.config:
            differ = [key for key in FIELDS
                      if getattr(first.config, key) != getattr(run.config, key)]
            raise MedtransferError(
                f"In {source}: grids {first.grid + 1} and {run.grid + 1} both give the run "
                f"{run.run_id}, but they differ in {', '.join(differ)}, which a run id does "
                "not tell apart: they would be one run directory. Make them the same, or put "
                "them in two sweep files with different experiments."
            )
    return list(kept.values())


def _config(values: Mapping[str, Any], base: RunConfig | None, where: str) -> RunConfig:
    """The run options, any error naming the part of the sweep file they come from."""
    try:
        return config_from_mapping(values, base=base, source=where)
    except MedtransferError as error:
        message = str(error)
        raise MedtransferError(
            message if message.startswith("In ") else f"In {where}: {message}") from None


def _mapping(value: Any, what: str, source: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MedtransferError(
            f"In {source}: {what} must be a mapping of run options (key: value), not a "
            f"{type(value).__name__}."
        )
    return value


def _look_up(name: str, choices, kind: str, where: str, see: str) -> None:
    try:
        look_up_option(name, list(choices), kind, see=see)
    except MedtransferError as error:
        raise MedtransferError(f"In {where}: {error}") from None
