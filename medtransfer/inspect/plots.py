"""What the inspect pictures share: class colours, short names for runs, notes to the user."""

from __future__ import annotations

import sys

from medtransfer.config import (
    FIELDS,
    NOT_IDENTITY,
    RunConfig,
    init_folder,
    init_source_name,
    load_config_file,
)
from medtransfer.errors import MedtransferError
from medtransfer.training.rundir import RunDirectory, TrainedRun, primary_metric

# What a run is shown by when the runs side by side share it.
_SHARED_FIRST = ("dataset", "net", "init", "freeze")


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


def describe_runs(configs: list[RunConfig]) -> tuple[str, list[str]]:
    """Short names for runs shown side by side, instead of their run ids.

    Returns:
        What every run shares (``digits · small_cnn · glorot · freeze 0.5``: the
        dataset, net, init and freeze that are the same for all), and for each run the
        settings that tell it apart from the others (``freeze 0.5, epochs 0+2``), in
        config order; empty when nothing does (one run, or the same run twice).
    """
    values = [{name: getattr(config, name) for name in FIELDS if name not in NOT_IDENTITY}
              for config in configs]
    differing = [name for name in values[0]
                 if len({repr(value[name]) for value in values}) > 1]
    shared = " · ".join(setting_text(name, values[0][name]) for name in _SHARED_FIRST
                        if name not in differing)
    return shared, [", ".join(setting_text(name, value[name]) for name in differing)
                    for value in values]


def setting_text(name: str, value) -> str:
    """One config setting as a reader says it: ``freeze 0.5``, ``train size all``,
    ``transfer from digits/small_cnn``; the dataset and net by their names alone."""
    if name in ("dataset", "net"):
        return str(value)
    if name == "init":
        return value if value in ("glorot", "imagenet", "mean_var") else _transfer_text(value)
    if value is None:
        value = "all" if name in ("train_size", "classes") else "default"
    elif isinstance(value, bool):
        value = "on" if value else "off"
    elif isinstance(value, float):
        value = f"{value:g}"
    elif isinstance(value, list | tuple):
        value = ",".join(str(item) for item in value)
    return f"{name.replace('_', ' ')} {value}"


def _transfer_text(path: str) -> str:
    """``transfer from <source dataset> · <net>`` when the source run's config can be read
    (its id is long); else the source's name."""
    try:
        source = load_config_file(RunDirectory(init_folder(path)).config)
    except (MedtransferError, OSError):  # a weights file, or a source since removed
        return f"transfer from {init_source_name(path)}"
    picked = f" ({','.join(source.classes)})" if source.classes else ""
    return f"transfer from {source.dataset}{picked}/{source.net}"


def result_text(run: TrainedRun) -> str:
    """``test AUC 0.999, acc 0.950`` (the micro AUC, or a multi-label run's mean AUC)."""
    metrics = run.metrics
    key = f"test_{primary_metric(metrics)}"
    return (f"test {'mean ' if key == 'test_auc_mean' else ''}AUC "
            f"{metrics.get(key, float('nan')):.3f}, "
            f"acc {metrics.get('test_accuracy', float('nan')):.3f}")


def note(text: str) -> str:
    """Tells the user ``text`` on stderr (what a picture cannot show); returns it."""
    print(f"note: {text}", file=sys.stderr, flush=True)
    return text
