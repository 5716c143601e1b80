"""``tune_lr(config) -> TuneResult``: the learning rate chosen by search, with keras-tuner.

Each trial is one real run (``run_experiment``) of ``config`` at a learning rate drawn
log-uniformly from ``[min_lr, max_lr]`` by a seeded keras-tuner oracle (Bayesian
optimisation by default, or random search), filed as an ordinary run directory under
the search's own experiment, ``tune-lr-<dataset>-<net>`` by default; the best trial is
the one with the highest validation micro AUC (``val_auc_micro_best``). ``report`` on
the experiment shows the search like any grid.

The experiment folder holds, beside the run directories:

- ``tuner/``: the oracle's state (keras-tuner's ``oracle.json`` and one
  ``trial_<id>/trial.json`` per trial), saved after every change. A search killed and
  started again with the same command goes on from it: finished trials are not trained
  again, and the trial that was running is handed out again with the same rate, so its
  run directory resumes from its last completed epoch.
- ``best.yaml``: the best rate with the options of the search, a run config for
  ``medtransfer run --config`` (without the search's short ``epochs``).

Sampled rates are rounded to 3 significant digits so that run ids stay readable
(``lr0.000316``); the oracle records the rounded value. A run that diverges ends its
trial as failed (keras-tuner's FAILED: never the best) and the search goes on.

Many machines, as a sweep (:mod:`medtransfer.study.distributed`, whose ``serve`` and
``run_trials`` this reuses): with keras-tuner's variables set, the machine with
``KERASTUNER_TUNER_ID=chief`` holds the oracle (and its state in ``tuner/``) and serves
the trials over gRPC; every other machine runs the same command as a worker, trains the
trials it is handed into the shared ``--logdir`` and reports their validation AUC. The
chief prints the result and writes ``best.yaml`` once every trial has ended.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medtransfer.config import RunConfig
from medtransfer.errors import MedtransferError, look_up_option
from medtransfer.fileio import write_text_atomic
from medtransfer.study import distributed
from medtransfer.training.rundir import best_validation_auc

OBJECTIVE = "val_auc_micro_best"
ORACLES = ("bayesian", "random")
DEFAULT_TRIALS = 10
MIN_LR, MAX_LR = 1e-6, 1e-1
SEARCH_EPOCHS = "1+5"
"""The regime of each trial when neither ``--epochs`` nor the config file gives one."""
STATE_FOLDER = "tuner"
BEST_FILE = "best.yaml"
_SIGNIFICANT_DIGITS = 3
_ENDED = ("COMPLETED", "FAILED", "INVALID")
# Keys of a run config that describe where the search filed its runs or how long they
# trained, not the configuration the rate was chosen for.
_NOT_IN_BEST = ("epochs", "experiment")


def experiment_name(config: RunConfig) -> str:
    """``tune-lr-<dataset>-<net>``: where a search files its trials by default."""
    return f"tune-lr-{config.dataset}-{config.net}"


@dataclass(frozen=True)
class Trial:
    """One finished trial.

    Attributes:
        trial_id: keras-tuner's trial id.
        lr: the rate it trained at.
        run_dir: its run directory.
        val_auc: its best validation micro AUC; None when it failed.
        status: keras-tuner's status (COMPLETED, FAILED, ...).
    """

    trial_id: str
    lr: float
    run_dir: Path
    val_auc: float | None
    status: str


@dataclass(frozen=True)
class TuneResult:
    """What a search found.

    Attributes:
        experiment_dir: the search's experiment folder.
        trials: every trial handed out, in order.
        best: the trial with the highest validation AUC; None when none completed.
        best_file: ``best.yaml`` (written when a trial completed; by the chief only).
        worker: the worker's tuner id, when this machine only trained some trials of a
            search served by another.
    """

    experiment_dir: Path
    trials: list[Trial]
    best: Trial | None
    best_file: Path | None
    worker: str | None = None

    def summary(self) -> str:
        """The trials, best first, and how to use the best rate."""
        if self.worker is not None:
            lines = [f"{self.worker} trained {len(self.trials)} trials of the search in "
                     f"{self.experiment_dir}; the chief prints the best and writes "
                     f"{BEST_FILE}:"]
        else:
            lines = [f"{len(self.trials)} trials in {self.experiment_dir}:"]
        ranked = sorted(self.trials, key=lambda t: -1.0 if t.val_auc is None else t.val_auc,
                        reverse=True)
        for trial in ranked:
            auc = "failed" if trial.val_auc is None else f"validation AUC {trial.val_auc:.4f}"
            lines.append(f"  lr {trial.lr:<10.3g} {auc:<24} {trial.run_dir.name}")
        if self.worker is not None:
            return "\n".join(lines)  # the chief names the best
        if self.best is None:
            lines.append("No trial completed: see the runs' error messages above.")
        else:
            lines.append(f"best: --lr {self.best.lr:.3g} (validation AUC "
                         f"{self.best.val_auc:.4f}); its config: {self.best_file}")
        return "\n".join(lines)


def round_lr(lr: float) -> float:
    """``lr`` to 3 significant digits (run ids show the rate)."""
    return float(f"{lr:.{_SIGNIFICANT_DIGITS}g}")


def make_oracle(*, trials: int, min_lr: float, max_lr: float, seed: int, oracle: str):
    """The keras-tuner oracle of a search: one log-uniform ``lr``, maximising val AUC.

    Args:
        trials: how many trials it hands out.
        min_lr, max_lr: the range of the rate.
        seed: seeds the draws (keras-tuner reads 0 as "no seed", so it gets ``seed + 1``).
        oracle: ``bayesian`` or ``random``.
    """
    import keras_tuner

    space = keras_tuner.HyperParameters()
    space.Float("lr", min_lr, max_lr, sampling="log")
    options = dict(
        objective=keras_tuner.Objective(OBJECTIVE, "max"), max_trials=trials,
        hyperparameters=space, seed=seed + 1, allow_new_entries=False,
        tune_new_entries=False,
        # A diverged run fails its trial; the search goes on whatever the count.
        max_consecutive_failed_trials=None,
    )
    if oracle == "random":
        return keras_tuner.oracles.RandomSearchOracle(**options)
    return keras_tuner.oracles.BayesianOptimizationOracle(**options)


def tune_lr(config: RunConfig, *, trials: int = DEFAULT_TRIALS, min_lr: float = MIN_LR,
            max_lr: float = MAX_LR, oracle: str = "bayesian",
            train: Callable[[RunConfig], dict[str, Any] | None] | None = None) -> TuneResult:
    """Searches the learning rate of ``config`` with ``trials`` short real runs.

    Args:
        config: the runs' options (``lr`` is searched; ``experiment``, when not the
            default, names the search's folder instead of :func:`experiment_name`).
        trials: how many trials in all, counting those of an earlier, interrupted search.
        min_lr, max_lr: the range searched, log-uniformly.
        oracle: ``bayesian`` (Gaussian-process Bayesian optimisation) or ``random``.
        train: trains one trial's config and returns its metrics, or None when the run
            diverged; default :func:`train_trial` (``run_experiment`` in this process).

    Returns:
        Every trial and the best one.

    Raises:
        MedtransferError: bad options, anything ``medtransfer run`` refuses, or a search
            folder made with another range or oracle.
    """
    look_up_option(oracle, ORACLES, "oracle")
    if trials < 1:
        raise MedtransferError(f"--trials {trials} must be at least 1; 10 to 20 trials "
                               "find a rate within a factor of about 2.")
    if not (0 < min_lr < max_lr and math.isfinite(max_lr)):
        raise MedtransferError(
            f"--min-lr {min_lr:g} and --max-lr {max_lr:g} must be positive with --min-lr "
            f"below --max-lr; the defaults {MIN_LR:g} and {MAX_LR:g} cover every rate Adam "
            "trains at."
        )
    from medtransfer.training.resolve import resolve_config

    resolve_config(config)  # bad options fail before the search starts
    if config.experiment == RunConfig.experiment:
        config = config.replace(experiment=experiment_name(config))
    experiment_dir = Path(config.logdir) / config.experiment
    search = make_oracle(trials=trials, min_lr=min_lr, max_lr=max_lr, seed=config.seed,
                         oracle=oracle)
    train = train or train_trial
    if distributed.is_distributed():
        from keras_tuner.src.distribute import utils

        if not utils.is_chief_oracle():
            return _work(search, config, experiment_dir, train)
    _open_state(search, experiment_dir, min_lr=min_lr, max_lr=max_lr, oracle=oracle)
    search.verbose = 0  # keras-tuner's own trial table repeats what the runs print
    what = (f"{trials} trials of {config.epochs} epochs at learning rates in "
            f"[{min_lr:g}, {max_lr:g}] ({oracle} search)")
    print(f"Searching the learning rate of {config.dataset} / {config.net} in "
          f"{experiment_dir}: {what}.", flush=True)
    if distributed.is_distributed():
        if _trials_left(search, trials):
            distributed.serve(search, what)
    else:
        distributed.run_trials(search, "local", lambda trial: _run_trial(config, trial, train))
    return _result(search, config, experiment_dir)


def _trials_left(search, trials: int) -> bool:
    """Whether the search hands out another trial: a chief with none would wait forever."""
    return len(search.trials) < trials or bool(search._retry_queue)


def _work(search, config: RunConfig, experiment_dir: Path, train) -> TuneResult:
    """A worker: trains the trials the chief hands out; the chief writes best.yaml."""
    from keras_tuner.src.distribute import oracle_client

    client = oracle_client.OracleClient(search)
    done: list[Trial] = []

    def run(trial) -> dict[str, Any] | None:
        metrics = _run_trial(config, trial, train)
        lr = trial.hyperparameters.values["lr"]
        done.append(Trial(trial.trial_id, lr, config.replace(lr=lr).run_dir,
                          None if metrics is None else best_validation_auc(metrics),
                          "FAILED" if metrics is None else "COMPLETED"))
        return metrics

    print(f"{client.tuner_id}: asking the chief for trials of the search in {experiment_dir}",
          flush=True)
    distributed.run_trials(client, client.tuner_id, run)
    finished = [trial for trial in done if trial.val_auc is not None]
    best = max(finished, key=lambda trial: trial.val_auc) if finished else None
    return TuneResult(experiment_dir, done, best, None, worker=client.tuner_id)


def train_trial(config: RunConfig) -> dict[str, Any] | None:
    """Trains one trial in this process: its metrics, or None when it diverged."""
    import keras

    from medtransfer.training.callbacks import RunDiverged
    from medtransfer.training.run import run_experiment

    try:
        return run_experiment(config).metrics
    except RunDiverged as error:
        print(f"lr {config.lr:g} diverged: {error}", flush=True)
        return None
    finally:
        # Trials run one after another in one process: free the last one's graphs.
        keras.backend.clear_session()


def _run_trial(config: RunConfig, trial, train) -> dict[str, Any] | None:
    lr = round_lr(trial.hyperparameters.values["lr"])
    trial.hyperparameters.values["lr"] = lr
    print(f"\ntrial {trial.trial_id}: lr {lr:g}", flush=True)
    return train(config.replace(lr=lr))


def _open_state(search, experiment_dir: Path, **settings: Any) -> None:
    """Points the oracle at ``<experiment>/tuner/`` and reloads an earlier search there.

    The search's range and oracle are kept beside the state: an interrupted search
    resumed with others would mix two searches, so it fails instead. ``--trials`` may
    grow: the same search goes on for more trials.
    """
    state = experiment_dir / STATE_FOLDER
    settings_file = state / "search.yaml"
    if (state / "oracle.json").exists() and settings_file.exists():
        saved = yaml.safe_load(settings_file.read_text())
        if saved != settings:
            differ = ", ".join(f"{key} {saved.get(key)} then, {value} now"
                               for key, value in settings.items() if saved.get(key) != value)
            raise MedtransferError(
                f"{experiment_dir} holds a search with other settings ({differ}). Run it with "
                "its own settings to continue it, or give --experiment another name to start "
                "a new search beside it."
            )
    state.mkdir(parents=True, exist_ok=True)
    search._set_project_dir(str(experiment_dir), STATE_FOLDER)
    if (state / "oracle.json").exists():
        search.reload()
        # keras-tuner saves oracle.json before it drops an ended trial from the ongoing
        # ones, so the last trial to end comes back for a retry: only an unfinished one
        # (killed while training) may run again.
        search._retry_queue = [trial_id for trial_id in search._retry_queue
                               if search.trials[trial_id].status not in _ENDED]
        done = sum(trial.status == "COMPLETED" for trial in search.trials.values())
        print(f"Continuing the search in {experiment_dir}: {done} trial(s) complete.")
    else:
        write_text_atomic(settings_file, yaml.safe_dump(settings, sort_keys=True))


def _result(search, config: RunConfig, experiment_dir: Path) -> TuneResult:
    trials = []
    for trial_id in search.start_order:
        trial = search.trials[trial_id]
        lr = float(trial.hyperparameters.values["lr"])
        completed = trial.status == "COMPLETED"
        trials.append(Trial(
            trial_id=trial_id, lr=lr, run_dir=config.replace(lr=lr).run_dir,
            val_auc=float(trial.score) if completed else None, status=trial.status,
        ))
    done = [trial for trial in trials if trial.val_auc is not None]
    best = max(done, key=lambda trial: trial.val_auc) if done else None
    best_file = None
    if best is not None:
        best_file = experiment_dir / BEST_FILE
        _write_best(best_file, config, best, len(trials))
    return TuneResult(experiment_dir, trials, best, best_file)


def _write_best(path: Path, config: RunConfig, best: Trial, trials: int) -> None:
    """The best rate as a run config: the search's options that differ from the defaults,
    without its short epochs, and the rate."""
    defaults = RunConfig().to_dict()
    options = {key: value for key, value in config.to_dict().items()
               if key not in _NOT_IN_BEST and value != defaults[key] and key != "lr"}
    options = {"dataset": config.dataset, "net": config.net, **options, "lr": best.lr}
    header = (
        f"# Best learning rate of {trials} trials (medtransfer tune-lr): validation AUC "
        f"{best.val_auc:.4f}\n# in {best.run_dir}, after --epochs {config.epochs}.\n"
        f"# Train with it: medtransfer run --config {path} --epochs 3+50\n"
    )
    write_text_atomic(path, header + yaml.safe_dump(options, sort_keys=False))
