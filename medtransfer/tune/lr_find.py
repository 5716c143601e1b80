"""``find_lr(config) -> LrFindResult``: the learning-rate range test (Smith 2017).

One short pass of the run's own training: the pipeline of ``medtransfer run`` (the same
images, ``--train-size`` subset, augmentation, batch, scaling and class weights) and its
model (net, init, head), frozen as in phase 2 of the W+E regime (``--freeze F``), trained with Adam
at a rate that grows exponentially from ``min_lr`` (1e-7) to ``max_lr`` (1) over
``steps`` batches, the training stream cycled when it is shorter. The loss of each batch
is smoothed (exponential moving average with bias correction, as in Adam) and the test
stops early once the smoothed loss exceeds 4 times its minimum: beyond that the rate
only diverges.

Two rates are suggested from the smoothed curve:

- **steepest descent**: the rate where the smoothed loss falls fastest per decade of
  rate, on the falling part of the curve (before its minimum); the one printed as
  ``--lr``;
- **minimum / 10**: a tenth of the rate at the smoothed loss's minimum, the classic
  conservative choice.

Output, by default in ``<logdir>/lr-find/<name>/`` (``<name>`` is the run id of the
configuration without its learning rate and epochs): ``lr_find.csv`` (step, lr, loss,
smoothed_loss), ``lr_find.png`` (smoothed loss against rate, log axis; ``.pdf`` or
``.svg`` under ``--format``) and
``suggestion.json``. The folder has no ``config.yaml`` or ``metrics.json``: it is not a
run directory, and ``sweep``, ``report`` and ``run`` never take it for one (a folder of
``<logdir>/lr-find/`` is not a run, and ``lr-find`` is not an experiment they scan
unless pointed at it, where they find no runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medtransfer.config import RunConfig
from medtransfer.errors import MedtransferError
from medtransfer.fileio import write_json_atomic, write_text_atomic
from medtransfer.inspect.plots import setting_text
from medtransfer.plotting import check_format, save_figure, wrap

DEFAULT_STEPS = 200
MIN_LR, MAX_LR = 1e-7, 1.0
SMOOTHING = 0.98
"""Weight of the past in the moving average of the loss (fastai's and Smith's choice)."""
EXPLODED_FACTOR = 4.0
"""The test stops once the smoothed loss exceeds this many times its minimum."""
OUTPUT_FOLDER = "lr-find"
"""Under ``--logdir``: where the range tests go, beside the experiments."""
_MIN_STEPS = 10
SKIP_START = 10
"""Steps the steepest descent is not looked for in: the moving average has seen too few
losses there, and one noisy batch makes a slope (fastai skips as many)."""


@dataclass(frozen=True)
class Suggestion:
    """The rates a range test suggests.

    Attributes:
        steepest: the rate where the smoothed loss falls fastest (per decade of rate)
            before its minimum; None when the loss never fell.
        minimum: the rate at the smoothed loss's minimum.
    """

    steepest: float | None
    minimum: float

    @property
    def minimum_over_10(self) -> float:
        return self.minimum / 10

    @property
    def lr(self) -> float:
        """The one rate to pass as ``--lr``: steepest descent, else minimum / 10."""
        return self.steepest if self.steepest is not None else self.minimum_over_10


@dataclass(frozen=True)
class LrFindResult:
    """What a range test measured.

    Attributes:
        out_dir: where lr_find.csv, lr_find.png and suggestion.json are.
        lrs, losses, smoothed: one entry per step taken.
        suggestion: the suggested rates.
        stopped_early: the smoothed loss exploded before the last step.
    """

    out_dir: Path
    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    suggestion: Suggestion
    stopped_early: bool

    def summary(self) -> str:
        """What the CLI prints: the curve in one line and the suggestion, ready to use."""
        low = int(np.argmin(self.smoothed))
        lines = [
            f"{len(self.lrs)} steps from lr {self.lrs[0]:.1e} to {self.lrs[-1]:.1e}"
            + (" (stopped: the loss exploded)" if self.stopped_early else "")
            + f"; smoothed loss {self.smoothed[0]:.4f} at the start, lowest "
            f"{self.smoothed[low]:.4f} at lr {self.lrs[low]:.1e}, "
            f"{self.smoothed[-1]:.4f} at the end.",
        ]
        steepest = self.suggestion.steepest
        if steepest is None:
            lines.append("The smoothed loss never fell: lower the starting rate (--min-lr) "
                         "or check the data.")
        else:
            lines.append(f"steepest descent:  lr {steepest:.2g}")
        lines.append(f"minimum / 10:      lr {self.suggestion.minimum_over_10:.2g}")
        lines.append(f"suggested: --lr {self.suggestion.lr:.2g}")
        return "\n".join(lines)


def lr_schedule(steps: int, min_lr: float = MIN_LR, max_lr: float = MAX_LR) -> np.ndarray:
    """``steps`` rates growing exponentially from ``min_lr`` to ``max_lr`` (both included)."""
    if steps < 2:
        return np.array([min_lr], dtype=float)[:steps]
    return min_lr * (max_lr / min_lr) ** (np.arange(steps) / (steps - 1))


def smooth_losses(losses: np.ndarray | list[float], beta: float = SMOOTHING) -> np.ndarray:
    """Exponential moving average with bias correction: ``a_i = beta a_{i-1} + (1-beta) l_i``,
    ``s_i = a_i / (1 - beta^(i+1))`` (so the first value is the first loss, not a tenth
    of it)."""
    smoothed, average = [], 0.0
    for step, loss in enumerate(losses):
        average = beta * average + (1 - beta) * float(loss)
        smoothed.append(average / (1 - beta ** (step + 1)))
    return np.array(smoothed, dtype=float)


def exploded(smoothed: np.ndarray, factor: float = EXPLODED_FACTOR) -> bool:
    """Whether the last smoothed loss is not finite or above ``factor`` x the minimum."""
    last = smoothed[-1]
    return not math.isfinite(last) or last > factor * np.nanmin(smoothed)


def suggest_lr(lrs: np.ndarray, smoothed: np.ndarray) -> Suggestion:
    """The rates of steepest descent and of the minimum of the smoothed loss.

    The slope is ``d smoothed / d log10(lr)`` (central differences), searched between
    step :data:`SKIP_START` (the first step on a curve shorter than that) and the
    minimum: only where the loss still falls is a rate worth training at.

    Args:
        lrs: the rate of each step.
        smoothed: the smoothed loss of each step.

    Raises:
        MedtransferError: the very first loss was not finite.
    """
    # The test stops at the first loss that is not finite: at most the last one.
    count = len(smoothed) if np.isfinite(smoothed[-1]) else len(smoothed) - 1
    if count == 0:
        raise MedtransferError(
            f"The loss of the first batch was not finite at lr {lrs[0]:.1e}: nothing can be "
            "suggested. Check the dataset with 'medtransfer run --epochs 0+1' on it; with "
            "--mixed-precision, try without."
        )
    curve, rates = np.asarray(smoothed[:count], float), np.asarray(lrs[:count], float)
    low = int(np.argmin(curve))
    steepest = None
    if low >= 1 and count >= 2:
        slopes = np.gradient(curve, np.log10(rates))
        first = SKIP_START if low - SKIP_START >= 2 else 0
        fastest = first + int(np.argmin(slopes[first: low + 1]))
        if slopes[fastest] < 0:
            steepest = float(rates[fastest])
    return Suggestion(steepest=steepest, minimum=float(rates[low]))


def output_dir(config: RunConfig) -> Path:
    """``<logdir>/lr-find/<run id without lr and epochs>``: one folder per configuration
    a range test can differ in (dataset, net, init, freeze, seed, size, batch, ...)."""
    name = config.replace(lr=None, epochs=RunConfig.epochs).run_id
    return Path(config.logdir) / OUTPUT_FOLDER / name


def find_lr(config: RunConfig, *, steps: int = DEFAULT_STEPS, min_lr: float = MIN_LR,
            max_lr: float = MAX_LR, out: str | Path | None = None,
            figure_format: str = "png") -> LrFindResult:
    """Runs the range test on ``config``'s pipeline and model and writes its files.

    Args:
        config: the run to find a rate for; its ``lr`` and ``epochs`` are ignored.
        steps: training batches at most (the pipeline is cycled when it is shorter).
        min_lr, max_lr: the first and last rate.
        out: where to write; default :func:`output_dir`.
        figure_format: the curve's file format: ``png`` (200 dpi), ``pdf`` or ``svg``.

    Returns:
        The curve and the suggestion.

    Raises:
        MedtransferError: bad options, or anything ``medtransfer run`` would refuse.
    """
    if steps < _MIN_STEPS:
        raise MedtransferError(
            f"--steps {steps} is too few for a range test: the smoothed loss needs at least "
            f"{_MIN_STEPS} steps to show a trend. Use the default {DEFAULT_STEPS}, or 100 for "
            "a quick look."
        )
    if not (0 < min_lr < max_lr and math.isfinite(max_lr)):
        raise MedtransferError(
            f"--min-lr {min_lr:g} and --max-lr {max_lr:g} must be positive with --min-lr "
            f"below --max-lr; the defaults {MIN_LR:g} and {MAX_LR:g} cover every rate Adam "
            "trains at."
        )
    figure_format = check_format(figure_format)
    from medtransfer.training.resolve import resolve_config

    config, dataset = resolve_config(config)
    out_dir = Path(out) if out is not None else output_dir(config)
    lrs, losses = _range_test(config, dataset, lr_schedule(steps, min_lr, max_lr))
    smoothed = smooth_losses(losses)
    result = LrFindResult(
        out_dir=out_dir, lrs=lrs, losses=losses, smoothed=smoothed,
        suggestion=suggest_lr(lrs, smoothed), stopped_early=len(lrs) < steps,
    )
    _write_outputs(result, config, steps, figure_format)
    return result


def _range_test(config: RunConfig, dataset: Any,
                schedule: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trains one batch per rate of ``schedule`` until the smoothed loss explodes."""
    import keras

    from medtransfer.models.classifier import get_backbone
    from medtransfer.models.freezing import freeze_bottom_layers
    from medtransfer.training.run import (
        build_run_model,
        build_training_state,
        compile_model,
        make_training_dataset,
        run_class_names,
        training_class_weights,
        training_frame,
    )
    from medtransfer.training.strategy import make_strategy, set_precision
    from medtransfer.training.task import run_task

    keras.utils.set_random_seed(config.seed)
    set_precision(config.mixed_precision)
    try:
        strategy = make_strategy(config.strategy)
        global_batch = config.batch_size * strategy.num_replicas_in_sync
        frame = training_frame(config, dataset)
        weights, class_weight = training_class_weights(config, dataset, frame)
        batches = make_training_dataset(
            config, dataset, frame, batch_size=global_batch,
            cache_limit_bytes=config.cache_limit_bytes,
        ).repeat().take(len(schedule))
        with strategy.scope():
            model, _ = build_run_model(config, run_class_names(config, dataset))
            freeze_bottom_layers(get_backbone(model), config.freeze)
            # The run's own loss: a multi-label task's masked binary cross-entropy.
            compile_model(model, float(schedule[0]), config.optimizer,
                          run_task(config, dataset), weights)
        build_training_state(model, batches.element_spec)
        print(f"Range test on {config.dataset} / {config.net} / {config.init}, freeze "
              f"{config.freeze:g}: {len(frame)} training images, {config.image_size}px, "
              f"global batch {global_batch}, up to {len(schedule)} steps from lr "
              f"{schedule[0]:.1e} to {schedule[-1]:.1e}.", flush=True)
        losses: list[float] = []
        for lr, (images, labels) in zip(schedule, batches, strict=False):
            model.optimizer.learning_rate.assign(lr)
            logs = model.train_on_batch(images, labels, class_weight=class_weight,
                                        return_dict=True)
            losses.append(float(logs["loss"]))
            if exploded(smooth_losses(losses)):
                break
    finally:
        set_precision(False)
    return schedule[: len(losses)], np.array(losses, dtype=float)


def _write_outputs(result: LrFindResult, config: RunConfig, steps: int,
                   figure_format: str) -> None:
    result.out_dir.mkdir(parents=True, exist_ok=True)
    rows = ["step,lr,loss,smoothed_loss"] + [
        f"{step},{lr:.8g},{loss:.8g},{smoothed:.8g}"
        for step, (lr, loss, smoothed) in enumerate(
            zip(result.lrs, result.losses, result.smoothed, strict=True), start=1)
    ]
    write_text_atomic(result.out_dir / "lr_find.csv", "\n".join(rows) + "\n")
    save_figure(_plot(result, config), result.out_dir / f"lr_find.{figure_format}")
    suggestion = result.suggestion
    write_json_atomic(result.out_dir / "suggestion.json", {
        "lr": suggestion.lr,
        "steepest": suggestion.steepest,
        "minimum": suggestion.minimum,
        "minimum_over_10": suggestion.minimum_over_10,
        "steps": len(result.lrs),
        "steps_planned": steps,
        "stopped_early": result.stopped_early,
        "min_lr": float(result.lrs[0]),
        "max_lr_reached": float(result.lrs[-1]),
        "config": {key: value for key, value in config.to_dict().items()
                   if key not in ("lr", "epochs", "experiment")},
    })


def _plot(result: LrFindResult, config: RunConfig):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    axes = figure.add_subplot()
    axes.plot(result.lrs, result.losses, color="0.75", linewidth=0.8, label="loss per batch")
    axes.plot(result.lrs, result.smoothed, color="C0", label="smoothed loss")
    suggestion = result.suggestion
    if suggestion.steepest is not None:
        axes.axvline(suggestion.steepest, color="C2", linestyle="--",
                     label=f"steepest descent {suggestion.steepest:.2g}")
    axes.axvline(suggestion.minimum_over_10, color="C1", linestyle=":",
                 label=f"minimum / 10 {suggestion.minimum_over_10:.2g}")
    axes.set_xscale("log")
    # The falling part of the curve is what matters; the exploding tail would squash it.
    smoothed = np.where(np.isfinite(result.smoothed), result.smoothed, np.nan)
    low = int(np.nanargmin(smoothed))
    top = 1.05 * float(np.nanmax(smoothed[: low + 1]))
    bottom = float(np.nanmin(np.concatenate([smoothed, result.losses])))
    if top > bottom:
        axes.set_ylim(max(0.0, bottom - 0.05 * (top - bottom)), top)
    axes.set_xlabel("learning rate (log scale)")
    axes.set_ylabel("training loss")
    axes.set_title(wrap(f"Learning-rate range test: {config.dataset} / {config.net} / "
                        f"{setting_text('init', config.init)}, freeze {config.freeze:g}",
                        6.0, 10), fontsize=10)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8)
    return figure
