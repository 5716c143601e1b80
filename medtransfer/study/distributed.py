"""One sweep on many machines, on keras-tuner's distributed mode.

Every machine runs the same ``medtransfer sweep CONFIG`` with keras-tuner's variables:
``KERASTUNER_TUNER_ID=chief`` makes it the oracle, which hands out the runs over gRPC
(``KERASTUNER_ORACLE_IP``, ``KERASTUNER_ORACLE_PORT``); any other id (``tuner0``,
``tuner1``, ...) makes it a worker, which asks for a run, trains it in its own process
(:func:`medtransfer.study.launch.launch_run`), reports it and asks again. One keras-tuner
trial is one run; the trial's only hyperparameter is the run id.

What keras-tuner gives: the oracle hands a worker that comes back under the same id its
unfinished trial again (``Oracle.create_trial``), so a killed worker started again
resumes its run where the run directory left it; the chief stops serving once every
trial has ended and every worker has been told to stop (``oracle_chief.exit_chief``).
What this module adds: the order of the grid (a run that transfers from another waits
until that one has ended), runs already complete on the shared file system are not
handed out, a failed run is recorded, not retried, and a run that a process outside the
sweep holds (``held``: a worker's trial ends ``INVALID``) is skipped, not failed.

``serve`` (the chief's gRPC server) and ``run_trials`` (a worker's loop) take any
keras-tuner oracle: ``medtransfer tune-lr`` spreads its search over machines with them too
(:mod:`medtransfer.tune.tune_lr`).

The machines share ``--logdir`` (a shared file system): all runs land in one experiment
folder, and each run directory is locked by the process training it.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

from medtransfer.errors import MedtransferError
from medtransfer.study.grid import PlannedRun, Sweep
from medtransfer.study.launch import (
    COMPLETE,
    FAILED,
    HELD,
    Progress,
    Slot,
    SweepResult,
    finish,
    launch_run,
    print_plan,
    run_in_slots,
    stop_slots,
    write_sweep_copy,
)
from medtransfer.training.rundir import RunDirectory, best_validation_auc

TUNER_ID, ORACLE_IP, ORACLE_PORT = (
    "KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")
OBJECTIVE = "val_auc_micro_best"
# How often a worker asks again while every run left waits for a source run elsewhere,
# and how often the chief checks whether it may stop.
_IDLE_POLL_SECONDS = 2.0
_CHIEF_POLL_SECONDS = 0.2


def is_distributed() -> bool:
    """Whether keras-tuner's variables ask for the distributed mode.

    Raises:
        MedtransferError: some of the three variables are set but not all.
    """
    given = [name for name in (TUNER_ID, ORACLE_IP, ORACLE_PORT) if os.environ.get(name)]
    if not given:
        return False
    if len(given) < 3:
        missing = [name for name in (TUNER_ID, ORACLE_IP, ORACLE_PORT) if name not in given]
        raise MedtransferError(
            f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} set but "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not. To share a "
            f"sweep between machines set all three on every machine ({TUNER_ID}=chief on the "
            f"one that serves the runs, tuner0, tuner1, ... on the others; {ORACLE_IP} and "
            f"{ORACLE_PORT}: the chief's address); to run it here alone, unset them."
        )
    from keras_tuner.src.distribute import utils as dist_utils

    return dist_utils.has_chief_oracle()


def run_distributed(sweep: Sweep, slots: list[Slot] | None = None) -> SweepResult:
    """Serves the sweep's runs (chief) or trains them (worker), by ``KERASTUNER_TUNER_ID``.

    Args:
        sweep: the expanded sweep.
        slots: a worker trains one run in each at once (``sweep --parallel``), asking the
            chief as ``<tuner id>-1``, ``<tuner id>-2``, ...; None: one run at a time as
            ``<tuner id>``. The chief ignores them.

    Returns:
        The chief: every run's outcome; a worker: the runs it trained.

    Raises:
        SweepFailed: any run failed (the chief: of the whole sweep; a worker: of its own).
    """
    from keras_tuner.src.distribute import utils as dist_utils

    if dist_utils.is_chief_oracle():
        return _serve(sweep)
    return _work(sweep, slots)


def next_run(pending: list[PlannedRun], handed_out: dict[str, str],
             ended: tuple[str, ...]) -> PlannedRun | None:
    """The first pending run not handed out yet whose source run (if any, and if this
    sweep runs it) has ended; None while every such run waits for its source.

    Args:
        pending: the runs to hand out, in grid order.
        handed_out: run id -> the status of its trial.
        ended: the trial statuses that count as ended.
    """
    pending_ids = {run.run_id for run in pending}
    for run in pending:
        if run.run_id in handed_out:
            continue
        source = run.source
        if source is None or source.run_id not in pending_ids \
                or handed_out.get(source.run_id) in ended:
            return run
    return None


def record_outcome(result: SweepResult, run: PlannedRun, state: str) -> str:
    """Files an ended trial's run under ``result``; returns the words the chief prints."""
    if state == COMPLETE:
        result.completed.append(run.run_id)
        return "complete"
    if state == HELD:
        result.held.append(run.run_id)
        return "held by another process; skipped"
    # keras-tuner's Trial proto does not carry the message: point at the file.
    error = RunDirectory(run.run_dir).error
    result.failed[run.run_id] = error
    return f"FAILED, see {error}"


def _oracle_class():
    """The oracle class, built on first use: importing keras_tuner imports TensorFlow."""
    import keras_tuner
    from keras_tuner.src.engine import trial as trial_module
    from keras_tuner.src.engine.oracle import synchronized

    status = trial_module.TrialStatus

    class SweepOracle(keras_tuner.Oracle):
        """Hands out the sweep's runs in grid order, one trial per run.

        Args:
            sweep: the expanded sweep.
            pending: the runs to hand out (those not complete when the chief started).
        """

        def __init__(self, sweep: Sweep, pending: list[PlannedRun]):
            space = keras_tuner.HyperParameters()
            space.Choice("run", [run.run_id for run in sweep.runs])
            super().__init__(
                objective=keras_tuner.Objective(OBJECTIVE, "max"), hyperparameters=space,
                allow_new_entries=False, tune_new_entries=False, max_retries_per_trial=0,
                # A failed run is recorded and the sweep goes on, whatever the count.
                max_consecutive_failed_trials=None,
            )
            self.verbose = 0
            self.pending = pending
            self.runs = {run.run_id: run for run in sweep.runs}
            self.progress = Progress(len(pending))
            self.result = SweepResult(len(sweep.runs), len(sweep.runs) - len(pending))

        def _run_trials(self):
            return {trial.hyperparameters.values["run"]: trial for trial in self.trials.values()}

        def populate_space(self, trial_id):
            handed_out = {run_id: trial.status for run_id, trial in self._run_trials().items()}
            if all(run.run_id in handed_out for run in self.pending):
                return {"status": status.STOPPED}
            run = next_run(self.pending, handed_out,
                           ended=(status.COMPLETED, status.FAILED, status.INVALID))
            if run is None:
                return {"status": status.IDLE}
            return {"status": status.RUNNING, "values": {"run": run.run_id}}

        def _known(self, trial_id, run_id=None) -> bool:
            """False for a trial of an earlier chief (this one restarted since)."""
            trial = self.trials.get(trial_id)
            known = trial is not None and run_id in (None, trial.hyperparameters.values["run"])
            if not known:
                print(f"ignoring trial {trial_id} ({run_id or '?'}): it was handed out by an "
                      "earlier chief", flush=True)
            return known

        @synchronized
        def create_trial(self, tuner_id):
            again = tuner_id in self.ongoing_trials
            trial = super().create_trial(tuner_id)
            if trial.status == status.RUNNING:
                run_id = trial.hyperparameters.values["run"]
                handed = "back to" if again else "to"
                print(f"{run_id} -> {handed} {tuner_id} ({self.progress.line()})", flush=True)
            return trial

        @synchronized
        def update_trial(self, trial_id, metrics, step=0):
            if not self._known(trial_id):
                return trial_module.Trial(self.get_space(), trial_id, status.RUNNING)
            return super().update_trial(trial_id, metrics, step=step)

        @synchronized
        def end_trial(self, trial):
            run_id = trial.hyperparameters.values.get("run")
            if not self._known(trial.trial_id, run_id):
                return
            # keras-tuner turns an INVALID trial into FAILED once it is not retried.
            held = trial.status == status.INVALID
            super().end_trial(trial)
            state = COMPLETE if self.trials[trial.trial_id].status == status.COMPLETED \
                else HELD if held else FAILED
            outcome = record_outcome(self.result, self.runs[run_id], state)
            self.progress.done(state)
            print(f"{run_id}: {outcome} ({self.progress.line()})", flush=True)

    return SweepOracle


def _serve(sweep: Sweep) -> SweepResult:
    """The chief: serves the runs over gRPC until every trial has ended."""
    complete = print_plan(sweep)
    write_sweep_copy(sweep)
    pending = [run for run in sweep.runs if run.run_id not in complete]
    oracle = _oracle_class()(sweep, pending)
    if not pending:
        finish(sweep, oracle.result)
        return oracle.result
    with tempfile.TemporaryDirectory(prefix="medtransfer-oracle-") as state:
        # keras-tuner saves the oracle's state after every change; the run directories
        # are what this sweep trusts, so it lives for this chief only.
        oracle._set_project_dir(state, "oracle")
        serve(oracle, f"{len(pending)} runs")
    finish(sweep, oracle.result)
    return oracle.result


def serve(oracle, what: str) -> None:
    """Serves ``oracle``'s trials over gRPC at ``KERASTUNER_ORACLE_IP:PORT`` until it has
    handed out its last trial, every trial has ended and every worker was told to stop.

    Args:
        oracle: a keras-tuner oracle (the sweep's, or tune-lr's search).
        what: what is served, for the start-up line ("12 runs").

    Raises:
        MedtransferError: the address cannot be listened on.
    """
    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    address = f"{os.environ[ORACLE_IP]}:{os.environ[ORACLE_PORT]}"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    if server.add_insecure_port(address) == 0:
        raise MedtransferError(
            f"The chief cannot listen on {address}: the port is taken or the address is "
            f"not this machine's. Set {ORACLE_IP} to this machine's address and "
            f"{ORACLE_PORT} to a free port, on the chief and every worker alike."
        )
    server.start()
    print(f"chief: serving {what} on {address}; start the workers with "
          f"{TUNER_ID}=tuner0, tuner1, ...", flush=True)
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(oracle)):
            time.sleep(_CHIEF_POLL_SECONDS)
    finally:
        server.stop(grace=5)


def run_trials(oracle, tuner_id: str, run: Callable[[Any], dict[str, Any] | None]) -> None:
    """Asks ``oracle`` for trials and runs them until it has none left: a worker's loop
    (with a keras-tuner ``OracleClient``), or a whole search on one machine (with the
    oracle itself).

    Args:
        oracle: an oracle or an ``OracleClient`` of the chief's.
        tuner_id: who asks (a killed worker asking again under its id gets its unfinished
            trial back).
        run: trains ``trial`` and returns its run's metrics (metrics.json), or None when
            it failed (after setting ``trial.message``, and ``trial.status`` to INVALID
            when it did not run because another process holds it); the oracle gets the
            objective, the best validation AUC (``best_validation_auc``: the micro AUC, a
            multi-label run's mean AUC) under the name ``val_auc_micro_best``.
    """
    from keras_tuner.src.engine import trial as trial_module

    status = trial_module.TrialStatus
    while True:
        trial = oracle.create_trial(tuner_id)
        if trial.status == status.STOPPED:
            return
        if trial.status == status.IDLE:
            # Every trial left waits on one another machine is still running.
            time.sleep(_IDLE_POLL_SECONDS)
            continue
        metrics = run(trial)
        if metrics is None:
            if trial.status != status.INVALID:
                trial.status = status.FAILED
        else:
            oracle.update_trial(trial.trial_id, {OBJECTIVE: best_validation_auc(metrics)},
                                step=int(metrics.get("best_epoch", 0)))
            trial.status = status.COMPLETED
        oracle.end_trial(trial)


def _work_in_slots(client, tuner_id: str, slots: list[Slot],
                   train: Callable[..., dict[str, Any] | None]) -> None:
    """One worker loop per slot, each asking the chief under ``<tuner_id>-<n>``.

    Raises:
        KeyboardInterrupt: Ctrl-C, after every slot's run has stopped.
    """
    def loop(number: int, slot: Slot) -> None:
        asker = f"{tuner_id}-{number}"
        run_trials(client, asker, functools.partial(train, slot=slot, asker=asker))

    run_in_slots(slots, loop, functools.partial(stop_slots, slots))


def _work(sweep: Sweep, slots: list[Slot] | None) -> SweepResult:
    """A worker: asks the chief for a run, trains it, reports it, until told to stop; with
    slots, one such loop per slot, each under its own tuner id (a worker started again
    gets each slot's unfinished run back)."""
    from keras_tuner.src.distribute import oracle_client
    from keras_tuner.src.engine import trial as trial_module

    runs = {run.run_id: run for run in sweep.runs}
    complete = {run.run_id for run in sweep.runs if RunDirectory(run.run_dir).is_complete()}
    # This worker's own runs: the chief holds the sweep's totals.
    result = SweepResult(total=0, complete_before=0)
    if len(complete) == len(runs):
        print(f"{sweep.experiment_dir}: all {len(runs)} runs are complete; nothing to do.")
        return result
    client = oracle_client.OracleClient(_oracle_class()(sweep, []))
    tuner_id = client.tuner_id
    print(f"{tuner_id}: asking the chief at {os.environ[ORACLE_IP]}:{os.environ[ORACLE_PORT]} "
          "for runs", flush=True)

    def train(trial, slot: Slot | None = None, asker: str = tuner_id) -> dict[str, Any] | None:
        run_id = trial.hyperparameters.values["run"]
        run = runs.get(run_id)
        if run is None:
            trial.message = (f"{asker} has no run {run_id} in {sweep.path}: every machine "
                             "must run the same sweep file")
            return None
        if slot is not None:
            slot.tag = asker
        print(f"\n{asker}: {run_id}{f' on {slot.label}' if slot else ''}", flush=True)
        outcome = launch_run(run, slot)
        result.add(run_id, outcome)
        if outcome.state == HELD:
            trial.status = trial_module.TrialStatus.INVALID
        if not outcome.ok:
            print(f"{run_id}: {outcome.text()}", flush=True)
            trial.message = outcome.text()
            return None
        return outcome.metrics or {}

    if slots is None:
        run_trials(client, tuner_id, train)
    else:
        _work_in_slots(client, tuner_id, slots, train)
    print(f"{tuner_id}: the chief has no run left; {len(result.completed)} completed here.")
    if result.failed or result.held:
        result.total = len(result.completed) + len(result.failed) + len(result.held)
        finish(sweep, result)
    return result
