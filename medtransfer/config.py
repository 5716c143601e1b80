"""The run configuration: one frozen dataclass holds the schema and the defaults.

Precedence, lowest first: the dataclass defaults, a YAML file (``--config``; it holds
only what differs), the command-line flags. ``resolve`` fills what depends on the
dataset and the net (learning rate, input size, augmentation) and makes paths absolute,
and the resolved config is saved as ``config.yaml`` in the run directory, from which
``medtransfer reproduce`` trains the run again from any directory.

A config's identity (every field but :data:`NOT_IDENTITY`) names its run directory
(:func:`run_id`): two configurations never share one.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from medtransfer.errors import MedtransferError, look_up_option
from medtransfer.options import (
    BN_STATS,
    CLASS_WEIGHTS,
    INITS,
    LR_SCHEDULES,
    OPTIMIZERS,
    SCALINGS,
    STRATEGIES,
    check_seed,
)

_EPOCHS = re.compile(r"^\s*(\d+)\s*\+\s*(\d+)\s*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that defines one run. ``None`` means "the dataset's or net's default".

    Attributes:
        dataset: a registered dataset or the name of a prepared folder under data_dir.
        net: a registered net (``medtransfer list``).
        init: ``glorot``, ``imagenet``, ``mean_var``, or a path to a run directory or
            weights file to transfer from.
        freeze: fraction of the backbone's bottom layers frozen in phase 2, in [0, 1].
        epochs: the ``W+E`` regime: W warm-up epochs (backbone frozen), E fine-tuning.
        lr: the (initial) learning rate; default per dataset.
        optimizer: ``adam`` (the study's) or ``sgd`` (momentum 0.9); each phase starts
            it afresh.
        lr_schedule: ``constant`` (the study's), ``plateau`` (x0.1 once the training
            loss has not improved for ``plateau_patience`` epochs) or ``multistep``
            (x0.1 at 50% and 75% of the W+E epochs); one schedule over both phases
            (see ``medtransfer.training.schedule``).
        plateau_patience: epochs without a lower training loss before ``plateau``
            divides the learning rate by 10.
        batch_size: per-replica batch; the global batch is this times the replicas.
        image_size: square input size; default per net.
        seed: seeds weights, shuffling and augmentation (not the prepared split).
        train_size: train on a stratified, seeded subset of this many training images.
        classes: keep only these classes of the dataset (by name), relabelled 0..k-1 in
            this order; every split keeps only their images. None keeps every class.
        findings: on a multi-label dataset, the findings to predict (by name), one sigmoid
            each, in this order; None is the dataset's default (CheXpert: its five
            competition findings; others: every finding). One finding is a binary task.
        any_finding: on a multi-label dataset, the single-label task healthy vs any of
            the findings (two classes, ``healthy`` and ``finding``).
        scaling: ``unit`` (pixels in [0, 1], the study's choice) or ``native`` (the
            net's own ``preprocess_input``).
        augment: master switch for training augmentation.
        flips, noise, color: each augmentation; default per dataset.
        affine: random affine augmentation (rotation, translation, scale, shear; see
            ``medtransfer.data.augment.AugmentConfig``); off unless asked for.
        strategy: ``auto`` (MirroredStrategy when more than one GPU), ``mirrored``,
            ``default``.
        mixed_precision: ``mixed_float16`` compute with a float32 output layer.
        deterministic: deterministic TensorFlow ops (slower; for exact reruns).
        bn_stats: the BatchNorm statistics evaluation uses: ``precise`` (re-estimated
            over fixed training batches before each evaluation) or ``moving`` (Keras'
            moving averages).
        weights_file: a local ImageNet weights file for ``imagenet`` / ``mean_var``.
        head_units, dropout: the classifier head, the same for every net.
        cache_limit: memory for decoded images, e.g. ``4GiB``, given to the splits in the
            order validation, the precise-BatchNorm subset, train, test; a split that
            does not fit whole is read from its shards every epoch.
        class_weight: ``none`` (the study) or ``balanced``: each class's loss weighted by
            ``n_samples / (n_classes * count)`` over the training images used.
        patience: end phase 2 once the validation micro AUC has not improved for this
            many of its epochs; ``None`` trains every epoch (the study).
        num_classes: filled from the dataset; a config that states it must match.
        experiment: the folder under logdir that groups runs.
        logdir: root of all experiments.
        data_dir: root of the prepared datasets.
    """

    dataset: str = "digits"
    net: str = "small_cnn"
    init: str = "glorot"
    freeze: float = 0.0
    epochs: str = "3+50"
    lr: float | None = None
    optimizer: str = "adam"
    lr_schedule: str = "constant"
    plateau_patience: int = 10
    batch_size: int = 32
    image_size: int | None = None
    seed: int = 0
    train_size: int | None = None
    classes: tuple[str, ...] | None = None
    findings: tuple[str, ...] | None = None
    any_finding: bool = False
    scaling: str = "unit"
    augment: bool = True
    flips: bool | None = None
    noise: bool | None = None
    color: bool | None = None
    affine: bool = False
    strategy: str = "auto"
    mixed_precision: bool = False
    deterministic: bool = False
    bn_stats: str = "precise"
    weights_file: str | None = None
    head_units: int = 256
    dropout: float = 0.5
    cache_limit: str = "4GiB"
    class_weight: str = "none"
    patience: int | None = None
    num_classes: int | None = None
    experiment: str = "default"
    logdir: str = "tensorboard_logs"
    data_dir: str = "datasets"

    @property
    def warmup_epochs(self) -> int:
        return parse_epochs(self.epochs)[0]

    @property
    def finetune_epochs(self) -> int:
        return parse_epochs(self.epochs)[1]

    @property
    def total_epochs(self) -> int:
        return sum(parse_epochs(self.epochs))

    @property
    def cache_limit_bytes(self) -> int:
        return parse_size(self.cache_limit, "--cache-limit")

    @property
    def multi_label(self) -> bool:
        """A resolved config's task is multi-label: a sigmoid per finding (its findings
        are filled from the dataset, and it is not ``--any-finding``)."""
        return self.findings is not None and not self.any_finding

    @property
    def init_is_path(self) -> bool:
        return self.init not in INITS

    @property
    def run_id(self) -> str:
        """The run directory's name: one per configuration (see :func:`run_id`)."""
        return run_id(self)

    @property
    def run_dir(self) -> Path:
        return Path(self.logdir) / self.experiment / self.run_id

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


FIELDS = {field.name: field for field in dataclasses.fields(RunConfig)}
RUN_HELP = "'medtransfer run --help' explains each."
CONFIG_KEYS_HELP = (
    "Each key is a 'medtransfer run' option written with underscores (--batch-size is "
    "batch_size); 'medtransfer run --help' explains them."
)

# Run identity ---------------------------------------------------------------------------
# A run directory holds one configuration: every field that can change a run's numbers is
# part of its identity, so a field added to RunConfig is identity unless it is listed here.
NOT_IDENTITY = {
    "experiment": "where the run is filed, not what it trains (it names the folder above)",
    "logdir": "where the run is filed, not what it trains",
    "data_dir": "where the prepared dataset is read from; the dataset's name identifies it, "
                "and a dataset moved to another disk or machine is the same data",
    "cache_limit": "memory only: the same images reach the model whether cached or not",
    "strategy": "how the run uses the machine, not what it trains; the replicas and the "
                "global batch it led to are recorded in metrics.json",
    "deterministic": "bit-exact reruns of the same configuration, at some speed; without "
                     "it the numbers differ only by floating-point noise",
    "weights_file": "where the published ImageNet file is found (the Keras cache or a "
                    "local copy); init imagenet / mean_var is part of the identity",
    "num_classes": "filled from the dataset, which is part of the identity",
}
RUN_ID_BASE = ("dataset", "net", "init", "freeze", "seed")
"""The fields every run id starts with: ``<dataset>-<net>-<init>-f<freeze>-s<seed>``."""
RUN_ID_ABBREVIATIONS = {
    "epochs": "e", "lr": "lr", "batch_size": "bs", "image_size": "px", "train_size": "ts",
}
"""Short prefixes of the most swept fields; any other field shows as ``name=value``."""
RUN_ID_MAX_LENGTH = 120
_ID_SAFE = re.compile(r"^[A-Za-z0-9_.,+:]*$")
_GENERIC_VALUE_MAX = 24
_HASH_LENGTH = 8
_INIT_NAME_MAX = 48
NATIVE_UPSCALE = 4
"""A default input size is at most this many times the dataset's native image size."""
SMALLEST_DEFAULT_SIZE = 32
"""A default input size is at least this (and at least the net's smallest input)."""
RUN_CONFIG = "config.yaml"
"""A run directory's resolved config (:class:`medtransfer.training.rundir.RunDirectory`
names the rest of its files)."""
RUN_WEIGHTS = "best.weights.h5"
"""A run directory's best weights: what ``--init <run dir>`` starts from."""


def absolute_path(path: str | Path) -> str:
    """``path`` made absolute from the working directory, ``~`` expanded, symlinks kept."""
    return os.path.abspath(os.path.expanduser(str(path)))


def resolved_defaults(config: RunConfig) -> RunConfig:
    """The config a run of ``config``'s dataset and net gets when no option is given.

    The learning rate and augmentation are the dataset's (its layout's, for a folder
    prepared under another name), the input size the net's: a run that states them
    explicitly is the same configuration as one that leaves them out.
    """
    from medtransfer.data.prepared import dataset_spec, default_findings

    defaults = RunConfig(dataset=config.dataset, net=config.net)
    spec = dataset_spec(config.dataset, Path(config.data_dir))
    changes: dict[str, Any] = {
        "image_size": default_image_size(config.net, config.dataset, Path(config.data_dir))}
    if spec is not None:
        changes.update(findings=default_findings(config.dataset, Path(config.data_dir)),
                       lr=spec.default_lr, flips=spec.augment.flips,
                       noise=spec.augment.noise, color=spec.augment.color)
    return defaults.replace(**changes)


def default_image_size(net: str, dataset: str, data_dir: Path) -> int:
    """The input size a run of ``net`` on ``dataset`` gets without ``--image-size``.

    The net's own default (inception_v3 299, ...), but at most
    :data:`NATIVE_UPSCALE` times the dataset's native size (the longer side of its
    images, see ``data.prepared.native_image_size``) and at least
    :data:`SMALLEST_DEFAULT_SIZE`, and never below the net's smallest input: enlarging
    8x8 digits to 128 px adds no information and costs 256 times the pixels (4 minutes
    an epoch on 2 cores for small_cnn, against seconds at 32 px). The study's datasets
    (96 px and larger) keep every net's default.
    """
    from medtransfer.data.prepared import native_image_size
    from medtransfer.models.registry import get_net

    spec = get_net(net)
    native = native_image_size(dataset, data_dir)
    size = spec.default_input_size
    if native is not None:
        size = min(size, max(NATIVE_UPSCALE * native, SMALLEST_DEFAULT_SIZE))
    return max(size, spec.min_input_size)


def identity(config: RunConfig, defaults: RunConfig | None = None) -> dict[str, Any]:
    """The values that make a run what it is: every field not in :data:`NOT_IDENTITY`.

    ``None`` (the dataset's or net's default) is replaced by that default, epochs are
    written ``W+E`` and a path init is made absolute, so that two spellings of one
    configuration have one identity.
    """
    defaults = defaults or resolved_defaults(config)
    values = {}
    for name in FIELDS:
        if name in NOT_IDENTITY:
            continue
        value = getattr(config, name)
        if value is None:
            value = getattr(defaults, name)
        if name == "epochs":
            value = "{}+{}".format(*parse_epochs(value))
        elif name == "init" and config.init_is_path:
            value = absolute_path(value)
        values[name] = value
    return values


def run_id(config: RunConfig) -> str:
    """``<dataset>-<net>-<init>-f<freeze>-s<seed>``, then every identity field that differs
    from the resolved defaults, in field order.

    The freeze shows at least two decimals and every digit it has (``f0.50``, ``f0.125``).
    A path init shows as ``from_<name>_<hash>``: the source run's directory name (for a run
    directory or its ``best.weights.h5``) or the file's stem, as many of its leading
    ``-``-separated fields as fit in 48 characters, and 6 hex digits of the absolute path.
    Differing fields follow as ``lr0.0005``, ``e1+3``, ``bs8``, ``px64``, ``ts200``
    (:data:`RUN_ID_ABBREVIATIONS`) or ``name=value`` for any other field; a value
    that is long or not filename-safe shows as ``name~<hash>``, and when the id would
    exceed :data:`RUN_ID_MAX_LENGTH` characters those ``name=value`` parts become one
    ``cfg~<hash>`` of all of them. The defaults alone give the study's ids, for example
    ``cancer-inception_v3-imagenet-f0.50-s0``.
    """
    defaults = resolved_defaults(config)
    values, default_values = identity(config, defaults), identity(defaults, defaults)
    init = _init_label(values["init"]) if config.init_is_path else values["init"]
    base = (f"{values['dataset']}-{values['net']}-{init}-f{freeze_text(values['freeze'])}"
            f"-s{values['seed']}")
    short, generic = [], {}
    for name, value in values.items():
        if name in RUN_ID_BASE or value == default_values[name]:
            continue
        if name in RUN_ID_ABBREVIATIONS:
            short.append(RUN_ID_ABBREVIATIONS[name] + value_text(value))
        else:
            generic[name] = value
    parts = [base, *short, *(_generic_part(name, value) for name, value in generic.items())]
    if len("-".join(parts)) > RUN_ID_MAX_LENGTH and generic:
        parts = [base, *short, "cfg~" + _short_hash(generic)]
    return "-".join(parts)


def identity_differences(saved: RunConfig, current: RunConfig) -> dict[str, tuple[Any, Any]]:
    """The identity fields whose values differ: ``{name: (saved value, current value)}``."""
    before, now = identity(saved), identity(current)
    return {name: (before[name], now[name]) for name in now if before[name] != now[name]}


def freeze_text(freeze: float, decimals: int = 2) -> str:
    """A freeze level with at least ``decimals`` decimals and every digit it has: ``0.50``
    and ``0.125`` in run ids, ``0.5`` and ``1`` in tables (``decimals=0``)."""
    text = f"{freeze:.{decimals}f}"
    if float(text) == freeze:
        return text
    return repr(float(freeze)).removesuffix(".0")


def value_text(value: Any) -> str:
    """A config value as run ids and report labels write it: booleans and None in lower
    case, the shorter exact spelling of a float, lists joined by commas."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        # The shorter of two exact spellings: 1e+09 rather than 1000000000.0, 0.0005 as is.
        short = f"{value:g}"
        return short if float(short) == value and len(short) < len(repr(value)) else repr(value)
    if isinstance(value, list | tuple):
        return ",".join(value_text(item) for item in value)
    return str(value)


def _generic_part(name: str, value: Any) -> str:
    text = value_text(value)
    if _ID_SAFE.match(text) and len(text) <= _GENERIC_VALUE_MAX:
        return f"{name}={text}"
    return f"{name}~{_short_hash(value)}"


def _short_hash(value: Any, length: int = _HASH_LENGTH) -> str:
    canonical = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def init_source_name(path: str) -> str:
    """The name of a path init's source: the run's directory name for a run directory or
    its ``best.weights.h5``, else the weights file's stem (from the path's text alone:
    the source may be gone by the time a sweep or a report lists the runs)."""
    file = Path(path)
    if file.name == RUN_WEIGHTS:  # a run's checkpoint: name the run
        return file.parent.name
    name = file.name
    for suffix in (".weights.h5", ".h5", ".keras"):
        name = name.removesuffix(suffix)
    return name


def init_folder(path: str | Path) -> Path:
    """The run directory a path init names when it is one: the folder of a run's
    ``best.weights.h5``, or the path itself (a run directory or another weights file)."""
    path = Path(path)
    return path.parent if path.name == RUN_WEIGHTS else path


def _init_label(path: str) -> str:
    """``from_<name>_<hash>`` for an absolute path init.

    A name over :data:`_INIT_NAME_MAX` characters keeps its leading ``-``-separated
    fields that fit (a source run id keeps dataset, net, init, ... and drops the rest,
    never cutting one: ``ts20`` would read as a size of 20); the hash of the whole path
    keeps two sources apart.
    """
    name = re.sub(r"[^A-Za-z0-9_.+=-]+", "_", init_source_name(path))
    fields = name.split("-")
    while len(name) > _INIT_NAME_MAX and fields:
        fields.pop()
        name = "-".join(fields)
    return f"from_{name}_{_short_hash(path, 6)}" if name else f"from_{_short_hash(path, 6)}"


def parse_epochs(text: str) -> tuple[int, int]:
    """Parses the ``W+E`` regime string into ``(W, E)``.

    Raises:
        MedtransferError: not of the form ``W+E`` with whole numbers, or no epoch at all.
    """
    match = _EPOCHS.match(str(text))
    if not match:
        raise MedtransferError(
            f"--epochs '{text}' is not of the form W+E. W is the number of warm-up epochs "
            "(backbone frozen, only the head trains) and E the number of fine-tuning "
            "epochs; both are whole numbers, for example 3+50 (the study's regime) or 0+10 "
            "(no warm-up)."
        )
    warmup, finetune = int(match.group(1)), int(match.group(2))
    if warmup + finetune == 0:
        raise MedtransferError(
            f"--epochs '{text}' trains for no epoch at all. Give at least one epoch, "
            "for example 0+1 or 3+50."
        )
    return warmup, finetune


def parse_size(text: str | int, name: str) -> int:
    """Parses a byte size such as ``4GiB``, ``512MB`` or ``1000000`` (binary units)."""
    match = _SIZE.match(str(text))
    unit = (match.group(2) or "").upper().rstrip("B").rstrip("I") if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise MedtransferError(
            f"{name} '{text}' is not a size. Give a number of bytes with an optional unit "
            "K, M, G or T (binary), for example 4GiB, 512M or 0 to never cache."
        )
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def _type_name(annotation: Any) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if args else annotation
    name = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
            tuple: "a list of names (a YAML list, or comma-separated on the command line)"}
    text = name.get(typing.get_origin(base) or base, str(base))
    return text + " or null" if type(None) in typing.get_args(annotation) else text


@functools.cache
def _field_types() -> dict[str, Any]:
    # Resolving the annotations costs about 2 ms: a sweep of 132 runs coerces hundreds.
    return typing.get_type_hints(RunConfig)


def _coerce(key: str, value: Any) -> Any:
    """Checks one YAML/flag value against the field's type; ints are accepted as floats."""
    annotation = _field_types()[key]
    optional = isinstance(annotation, types.UnionType) and type(None) in annotation.__args__
    base = next(a for a in typing.get_args(annotation) or (annotation,) if a is not type(None))
    if value is None and optional:
        return None
    if typing.get_origin(base) is tuple:
        return _coerce_names(key, value, annotation)
    ok = (
        (base is bool and isinstance(value, bool))
        or (base is int and isinstance(value, int) and not isinstance(value, bool))
        or (base is float and isinstance(value, int | float) and not isinstance(value, bool))
        or (base is str and isinstance(value, str | int | float) and not isinstance(value, bool))
    )
    if not ok:
        raise _wrong_type(key, value, annotation)
    return base(value) if base in (float, str) else value


def _wrong_type(key: str, value: Any, annotation: Any) -> MedtransferError:
    return MedtransferError(
        f"Config key '{key}' has the value {value!r} ({type(value).__name__}), but it must "
        f"be {_type_name(annotation)}. Fix it in the config file or on the command line."
    )


def _coerce_names(key: str, value: Any, annotation: Any) -> tuple[str, ...]:
    """A list of names from YAML (``[0, 1]`` or ``["a", "b"]``) or a comma list ``a,b``."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list | tuple) or any(
        isinstance(item, bool) or not isinstance(item, str | int | float) for item in value
    ):
        raise _wrong_type(key, value, annotation)
    return tuple(str(item).strip() for item in value)


def config_from_mapping(values: Mapping[str, Any], *, base: RunConfig | None = None,
                        source: str = "config") -> RunConfig:
    """Builds a config from ``base`` (default: the defaults) updated by ``values``.

    Args:
        values: option names with underscores, as in YAML files and sweep grids.
        base: what ``values`` override.
        source: where the values come from, for error messages.

    Raises:
        MedtransferError: an unknown key (with did-you-mean), a wrong type or a bad value.
    """
    changes = {}
    for key, value in values.items():
        try:
            look_up_option(str(key), FIELDS, "config key", see=CONFIG_KEYS_HELP)
        except MedtransferError as error:
            raise MedtransferError(f"In {source}: {error}") from None
        changes[key] = _coerce(key, value)
    config = dataclasses.replace(base or RunConfig(), **changes)
    validate(config)
    return config


STDIN = "-"
"""The config file name that reads the config from standard input (as a sweep hands a run
its config: no file is left behind, whatever ends the sweep)."""


def load_config_file(path: str | Path, base: RunConfig | None = None) -> RunConfig:
    """Reads a YAML run config (only the keys that differ from the defaults); ``-``
    (:data:`STDIN`) reads it from standard input."""
    path = Path(path)
    stdin = str(path) == STDIN
    source = "standard input" if stdin else str(path)  # where errors say it came from
    named = "The config on standard input" if stdin else f"Config file '{path}'"
    try:
        values = yaml.safe_load(sys.stdin.read() if stdin else path.read_text())
    except FileNotFoundError:
        raise MedtransferError(
            f"{named} does not exist. Give the path of a YAML file with run "
            "options (only what differs from the defaults), for example a run directory's "
            "config.yaml."
        ) from None
    except yaml.YAMLError as error:
        raise MedtransferError(
            f"{named} is not valid YAML ({_yaml_problem(error)}). Fix the "
            "syntax; each line is 'key: value' with run options written with underscores."
        ) from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise MedtransferError(
            f"{named} must hold a mapping of run options (key: value), not a "
            f"{type(values).__name__}."
        )
    if "grid" in values or "base" in values:
        raise MedtransferError(
            f"{named} is a sweep file (it has base or grid), not the options of "
            f"one run. Run it with 'medtransfer sweep {'FILE' if stdin else path}'."
        )
    try:
        return config_from_mapping(values, base=base, source=source)
    except MedtransferError as error:
        # A wrong type or value from the file: say which file, as an unknown key does.
        message = str(error)
        if not message.startswith(f"In {source}:"):
            message = f"In {source}: {message}"
        raise MedtransferError(message) from None


def _yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's error in one line: the problem and where, without its source excerpt."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(error).split())


def validate(config: RunConfig) -> None:
    """Checks the values that do not depend on the dataset or the net.

    Raises:
        MedtransferError: naming the option, the bad value and the valid range.
    """
    parse_epochs(config.epochs)
    parse_size(config.cache_limit, "--cache-limit")
    if not (isinstance(config.freeze, float | int) and 0.0 <= config.freeze <= 1.0):
        raise MedtransferError(
            f"--freeze {config.freeze} is outside [0, 1]. It is the fraction of the "
            "backbone's bottom layers frozen in phase 2: 0 fine-tunes everything, 1 keeps "
            "the backbone fixed; the study used 0, 0.1, 0.2, 0.3, 0.5, 0.75 and 1."
        )
    look_up_option(config.scaling, SCALINGS, "scaling", see=RUN_HELP)
    look_up_option(config.strategy, STRATEGIES, "strategy", see=RUN_HELP)
    look_up_option(config.bn_stats, BN_STATS, "bn_stats", see=RUN_HELP)
    look_up_option(config.optimizer, OPTIMIZERS, "optimizer", see=RUN_HELP)
    look_up_option(config.lr_schedule, LR_SCHEDULES, "lr schedule", see=RUN_HELP)
    check_seed(config.seed, "--seed")
    look_up_option(config.class_weight, CLASS_WEIGHTS, "class weight", see=RUN_HELP)
    _check_positive(config.batch_size, "batch_size")
    _check_positive(config.head_units, "head_units")
    _check_positive(config.plateau_patience, "plateau_patience")
    for name in ("image_size", "train_size", "num_classes", "patience"):
        if getattr(config, name) is not None:
            _check_positive(getattr(config, name), name)
    if config.lr is not None and not (math.isfinite(config.lr) and config.lr > 0):
        raise MedtransferError(
            f"--lr {config.lr} is not a positive number. The study's learning rates were "
            "1e-5 to 1e-4 (Adam); leave it out to use the dataset's default."
        )
    if not 0.0 <= config.dropout < 1.0:
        raise MedtransferError(
            f"--dropout {config.dropout} is outside [0, 1). It is the fraction of the head's "
            "hidden units dropped at each training step; leave it out for the default 0.5."
        )
    if config.classes is not None:
        _check_classes(config.classes)
    if config.findings is not None:
        _check_findings(config.findings)
    for name in ("experiment", "dataset", "net"):
        value = getattr(config, name)
        if not value or "/" in value or value in (".", ".."):
            raise MedtransferError(
                f"{name} '{value}' is not a valid name: it names a folder, so it must be "
                "non-empty and contain no '/'."
            )


def _check_classes(classes: tuple[str, ...]) -> None:
    repeated = sorted({name for name in classes if classes.count(name) > 1})
    if len(classes) < 2 or repeated or "" in classes:
        problem = (f"names {', '.join(repeated)} more than once" if repeated
                   else "has an empty name" if "" in classes else "keeps fewer than two")
        raise MedtransferError(
            f"--classes {','.join(classes)} {problem}. Give at least two different class "
            "names of the dataset, comma-separated (for example --classes 0,4 on retina), or "
            "leave --classes out to keep every class."
        )


def _check_findings(findings: tuple[str, ...]) -> None:
    repeated = sorted({name for name in findings if findings.count(name) > 1})
    if not findings or repeated or "" in findings:
        problem = (f"names {', '.join(repeated)} more than once" if repeated
                   else "has an empty name" if "" in findings else "names no finding")
        raise MedtransferError(
            f"--findings {','.join(findings)} {problem}. Give one or more different finding "
            "names of the dataset, comma-separated (for example --findings Edema or "
            "--findings 3,5 on digits_pairs), or leave --findings out for the dataset's "
            "default findings."
        )


def _check_positive(value: int, name: str) -> None:
    if value < 1:
        raise MedtransferError(f"--{name.replace('_', '-')} {value} must be a whole number ≥ 1.")


def save_config(config: RunConfig, path: str | Path) -> None:
    """Writes the resolved config as YAML, in field order."""
    values = config.to_dict()
    for name in ("classes", "findings"):
        if values[name] is not None:
            values[name] = list(values[name])  # a plain YAML list of names
    Path(path).write_text(yaml.safe_dump(values, sort_keys=False))
