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
"""

from __future__ import annotations

from pathlib import Path

from medtransfer.data.prepared import not_prepared_message
from medtransfer.errors import MedtransferError
from medtransfer.study import distributed
from medtransfer.study.grid import Sweep, load_sweep
from medtransfer.study.launch import (
    Progress,
    SweepResult,
    finish,
    launch_run,
    print_plan,
    write_sweep_copy,
)
from medtransfer.training.rundir import RunDirectory


def run_sweep(path: str | Path, *, logdir: str | Path | None = None,
              dry_run: bool = False) -> SweepResult:
    """Runs every run of a sweep file not yet complete, here or on many machines.

    Args:
        path: the sweep file (``experiment``, ``base``, ``grid``).
        logdir: overrides the root of the experiments.
        dry_run: print the plan and stop.

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
        if distributed.is_distributed():
            if any(run.pretrain for run in sweep.runs):
                raise MedtransferError(
                    f"{sweep.path} has pretraining steps, and a sweep spread over machines "
                    "does not order them before the runs that use them yet. Run it on one "
                    "machine (without the KERASTUNER_* variables), or pretrain first with "
                    "'medtransfer pretrain' and give the runs its directory as init.")
            return distributed.run_distributed(sweep)
    complete = print_plan(sweep)
    result = SweepResult(len(sweep.runs), len(complete))
    if dry_run:
        if unprepared:
            print(f"\n{unprepared}")
        return result
    write_sweep_copy(sweep)
    to_do = [run for run in sweep.runs if run.run_id not in complete]
    progress = Progress(len(to_do))
    try:
        for run in to_do:
            print(f"\n{progress.before(run.run_id)}", flush=True)
            outcome = launch_run(run)
            progress.done(outcome.state)
            result.add(run.run_id, outcome)
            print(f"{run.run_id}: {outcome.text()}", flush=True)
    except KeyboardInterrupt:
        print(f"\nStopped after {len(result.completed)} completed run(s).", flush=True)
        raise
    finish(sweep, result)
    return result


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
