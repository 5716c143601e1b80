"""``run_sweep(path)``: every run of a sweep file, each in its own process.

The plan (total, complete, to do) comes first. Complete runs are skipped and interrupted
ones resume (``run_experiment`` resumes from the last completed epoch). Each run is a
``python -m medtransfer run --config FILE`` child process, so that a crash or an
out-of-memory kill ends that run only; a failed run leaves ``error.txt`` (exit code, the
config, the last lines of its stderr) in its run directory and the sweep goes on, then
exits non-zero with a summary. Ctrl-C stops the running child; the same command
continues where it stopped.

A run that another process is training (the same sweep started twice, or on two machines
sharing ``--logdir``) is held by that process: the sweep skips it and lists it in its
summary, and it is no failure (:mod:`medtransfer.study.launch` launches each run and
tells the three endings apart).

With keras-tuner's variables set (``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP``,
``KERASTUNER_ORACLE_PORT``) the same call spreads the runs over machines instead
(:mod:`medtransfer.study.distributed`).

``parallel`` runs that many runs at once on this machine, one child process each, each
with its share of the machine (:func:`medtransfer.machine.device_shares`: its own
``CUDA_VISIBLE_DEVICES``, or on a CPU-only machine its share of the cores): the usual way
to use many GPUs for a grid of nets too small to fill them under one
``MirroredStrategy``. Runs start in grid order, a run that transfers from another only
once that one has ended; one progress line counts them all, and each line a run prints is
tagged with its place in the plan. Ctrl-C stops every run in progress; they resume. On
many machines, each worker trains ``parallel`` runs at once.
"""

from __future__ import annotations

import threading
from pathlib import Path

from medtransfer.data.prepared import not_prepared_message
from medtransfer.errors import MedtransferError
from medtransfer.machine import CORES_ENV, device_shares
from medtransfer.study import distributed
from medtransfer.study.estimate import missing_inputs
from medtransfer.study.grid import PlannedRun, Sweep, load_sweep
from medtransfer.study.launch import (
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
from medtransfer.training.rundir import RunDirectory


def run_sweep(path: str | Path, *, logdir: str | Path | None = None,
              dry_run: bool = False, parallel: int | str | None = None,
              gpus_per_run: int = 1) -> SweepResult:
    """Runs every run of a sweep file not yet complete, here or on many machines.

    Args:
        path: the sweep file (``experiment``, ``base``, ``grid``).
        logdir: overrides the root of the experiments.
        dry_run: print the plan and stop.
        parallel: runs at once on this machine, each in its own process with its share of
            the devices, or ``"auto"`` (visible GPUs / ``gpus_per_run``; one run on a
            CPU-only machine); None: one at a time in this process's environment.
        gpus_per_run: GPUs each run of a parallel sweep gets (its MirroredStrategy's).

    Returns:
        What ran; on a dry run, only the counts.

    Raises:
        MedtransferError: a bad sweep file, or a dataset that a run not yet complete
            needs is not prepared (before anything runs; a dry run prints it instead).
        SweepFailed: at the end, when any run failed.
        KeyboardInterrupt: Ctrl-C, after stopping the run in progress (the same call
            continues: complete runs are skipped, the stopped run resumes).
    """
    sweep = load_sweep(path, logdir)
    unprepared = unprepared_datasets(sweep)
    if not dry_run:
        if unprepared:
            raise MedtransferError(unprepared)
        slots = make_slots(parallel, gpus_per_run)
        if distributed.is_distributed():
            if any(run.pretrain for run in sweep.runs):
                raise MedtransferError(
                    f"{sweep.path} has pretraining steps, and a sweep spread over machines "
                    "does not order them before the runs that use them yet. Run it on one "
                    "machine (without the KERASTUNER_* variables), or pretrain first with "
                    "'medtransfer pretrain' and give the runs its directory as init.")
            return distributed.run_distributed(sweep, slots)
    complete = print_plan(sweep)
    result = SweepResult(len(sweep.runs), len(complete))
    if dry_run:
        if unprepared:
            print(f"\n{unprepared}")
        needs = missing_inputs(sweep)
        if needs:
            print(f"\nsweep --estimate: {needs}")
        return result
    write_sweep_copy(sweep)
    to_do = [run for run in sweep.runs if run.run_id not in complete]
    progress = Progress(len(to_do))
    try:
        if slots is None:
            for run in to_do:
                print(f"\n{progress.before(run.run_id)}", flush=True)
                outcome = launch_run(run)
                progress.done(outcome.state)
                result.add(run.run_id, outcome)
                print(f"{run.run_id}: {outcome.text()}", flush=True)
        else:
            _run_in_slots(to_do, slots, progress, result)
    except KeyboardInterrupt:
        print(f"\nStopped after {len(result.completed)} completed run(s).", flush=True)
        raise
    finish(sweep, result)
    return result


def make_slots(parallel: int | str | None, gpus_per_run: int = 1) -> list[Slot] | None:
    """The slots of a parallel sweep (see :func:`medtransfer.machine.device_shares`), or
    None for the plain one-at-a-time sweep (``parallel`` None and one GPU per run;
    ``gpus_per_run`` alone means one run at a time on that many GPUs)."""
    if parallel is None:
        if gpus_per_run == 1:
            return None
        parallel = 1
    slots = []
    for env in device_shares(parallel, gpus_per_run):
        if "CUDA_VISIBLE_DEVICES" in env:
            label = f"GPU {env['CUDA_VISIBLE_DEVICES']}"
        elif CORES_ENV in env:
            label = f"cores {env[CORES_ENV]}"
        else:
            label = "every core"
        slots.append(Slot(env, label))
    print(f"{len(slots)} run(s) at once: {'; '.join(slot.label for slot in slots)}.",
          flush=True)
    return slots


def _run_in_slots(to_do: list[PlannedRun], slots: list[Slot], progress: Progress,
                  result: SweepResult) -> None:
    """Trains ``to_do`` with one thread per slot, each launching one run at a time.

    Raises:
        KeyboardInterrupt: Ctrl-C, after every run in progress has stopped.
    """
    position = {run.run_id: index for index, run in enumerate(to_do, start=1)}
    handed_out: dict[str, str] = {}
    changed = threading.Condition()

    def next_for(slot: Slot) -> PlannedRun | None:
        with changed:
            while not slot.stopping:
                if len(handed_out) == len(to_do):
                    return None
                run = distributed.next_run(to_do, handed_out, ended=(_ENDED,))
                if run is not None:
                    handed_out[run.run_id] = "running"
                    slot.tag = f"{position[run.run_id]}/{len(to_do)}"
                    print(f"\n[run {slot.tag} on {slot.label}: {run.run_id}] "
                          f"{progress.line()}", flush=True)
                    return run
                changed.wait()  # every run left waits for a source run in progress
            return None

    def work(number: int, slot: Slot) -> None:
        while (run := next_for(slot)) is not None:
            outcome = launch_run(run, slot)
            with changed:
                handed_out[run.run_id] = _ENDED
                progress.done(outcome.state)
                result.add(run.run_id, outcome)
                print(f"[{slot.tag}] {run.run_id}: {outcome.text()} ({progress.line()})",
                      flush=True)
                changed.notify_all()

    def stop() -> None:
        stop_slots(slots)
        with changed:
            changed.notify_all()  # a slot waiting for a source run sees it is stopped

    run_in_slots(slots[:len(to_do)], work, stop)


_ENDED = "ended"


def unprepared_datasets(sweep: Sweep) -> str:
    """The datasets that the runs not yet complete need and that are not prepared, each
    with its ``prepare`` command, as one message; "" when every one is ready (or, like
    digits, prepares itself on first use)."""
    needed = dict.fromkeys((run.config.dataset, run.config.data_dir) for run in sweep.runs
                           if not RunDirectory(run.run_dir).is_complete())
    missing = {name: message for name, data_dir in needed
               if (message := not_prepared_message(name, Path(data_dir)))}
    if not missing:
        return ""
    count = f"{len(missing)} dataset{'s' if len(missing) != 1 else ''}"
    return (f"{sweep.path} needs {count} not prepared yet ({', '.join(missing)}), so no run "
            "was started:\n" + "".join(f"- {name}: {message}\n" for name, message in
                                        missing.items())
            + "Prepare them, then run the same command again.")
