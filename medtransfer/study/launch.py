"""Launching a sweep's runs, one child process each, and accounting for them.

What the local sweep (:mod:`medtransfer.study.sweep`) and the many-machine one
(:mod:`medtransfer.study.distributed`) share: the plan printed first, one run launched
in its own ``python -m medtransfer run`` process (:func:`launch_run`), how it ended
(complete, failed or held by another process), the progress line and the summary.

A failed run leaves ``error.txt`` (exit code, the config, the last lines of its stderr) in
its run directory. A run that another process is training (the same sweep started twice,
or on two machines sharing ``--logdir``) is held by that process: it is skipped and
listed, and it is no failure. :func:`launch_run` sees the run directory's lock before it
starts a child, and a child that finds the lock taken exits with :class:`RunHeld`'s exit
code (75). ``error.txt`` is written only while this process holds the run's lock and the
run is not complete, so never into a run another process holds or has completed.
"""

from __future__ import annotations

import collections
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from medtransfer.config import STDIN, RunConfig
from medtransfer.errors import MedtransferError
from medtransfer.fileio import write_text_atomic
from medtransfer.lifetime import child_environment
from medtransfer.progress import notebook_bar
from medtransfer.study.grid import PlannedRun, Sweep
from medtransfer.training.rundir import RunDirectory, RunHeld

SWEEP_COPY = "sweep.yaml"
STDERR_LINES_KEPT = 30
# How a run ended: trained (or found complete), failed, or held by another process.
COMPLETE, FAILED, HELD = "complete", "failed", "held"


class SweepFailed(MedtransferError):
    """Some runs of the sweep failed; the others completed (``result`` says which)."""

    exit_code = 1

    def __init__(self, message: str, result: SweepResult):
        super().__init__(message)
        self.result = result


@dataclass
class SweepResult:
    """What a sweep did.

    Attributes:
        total: runs in the sweep.
        complete_before: runs already complete when it started.
        completed: run ids completed by this invocation.
        failed: run id -> where its error is recorded (error.txt), for each failed run.
        held: run ids skipped because another process was training them (or their
            source run).
    """

    total: int
    complete_before: int
    completed: list[str] = field(default_factory=list)
    failed: dict[str, Path | str] = field(default_factory=dict)
    held: list[str] = field(default_factory=list)

    def add(self, run_id: str, outcome: RunOutcome) -> None:
        """Files one run's outcome under completed, failed or held."""
        if outcome.state == COMPLETE:
            self.completed.append(run_id)
        elif outcome.state == HELD:
            self.held.append(run_id)
        else:
            self.failed[run_id] = outcome.error


@dataclass(frozen=True)
class RunOutcome:
    """How one run ended.

    Attributes:
        state: ``complete`` (the run directory holds a complete run, trained by this
            call's child or found complete), ``held`` (another process holds the run or
            its source run; not started, or its child refused) or ``failed``.
        exit_code: the child's exit code (negative: killed by that signal); None when no
            child was started.
        seconds: wall time of the child.
        metrics: the run's metrics.json when complete.
        error: when failed, the written error.txt, or why none was written.
        note: when held or found complete, what holds it or who completed it.
    """

    state: str
    exit_code: int | None = None
    seconds: float = 0.0
    metrics: dict[str, Any] | None = None
    error: Path | str | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.state == COMPLETE

    def text(self) -> str:
        """How the run ended, for the line after its output: ``complete in 1:23``."""
        if self.state == COMPLETE:
            return f"complete {self.note}" if self.note else (
                f"complete in {_duration(self.seconds)}")
        if self.state == HELD:
            return f"{self.note}; skipped"
        code = "" if self.exit_code is None else f" (exit code {self.exit_code})"
        where = f"see {self.error}" if isinstance(self.error, Path) else self.error
        return f"FAILED{code}, {where}"


def print_plan(sweep: Sweep) -> set[str]:
    """Prints the plan (totals, then each run with its state); returns the complete ids."""
    complete, states = set(), []
    for run in sweep.runs:
        directory = RunDirectory(run.run_dir)
        if directory.is_complete():
            complete.add(run.run_id)
            state = "complete"
        elif directory.is_locked():
            state = "held"  # another process trains it now; tried again at its turn
        elif directory.history.exists():
            state = "restart" if run.pretrain else "resume"  # a pretraining starts again
        elif directory.error.exists():
            state = "retry"  # failed before
        else:
            state = "to do"
        states.append((state, run))
    total = len(sweep.runs)
    held = sum(state == "held" for state, _ in states)
    print(f"sweep {sweep.path}: experiment '{sweep.experiment}' in {sweep.experiment_dir}")
    pretrainings = sum(run.pretrain is not None for run in sweep.runs)
    of_them = f" ({pretrainings} of them pretraining)" if pretrainings else ""
    print(f"{total} run{'s' if total != 1 else ''}{of_them}: {len(complete)} complete, "
          f"{total - len(complete) - held} to do"
          + (f", {held} held by another process" if held else ""))
    for state, run in states:
        via = f" (transfers from {run.source.run_id})" if run.source else ""
        print(f"  {state:<9} {run.run_id}{via}")
    sys.stdout.flush()
    return complete


def write_sweep_copy(sweep: Sweep) -> None:
    """Copies the sweep file, as given, to ``<experiment>/sweep.yaml`` (for ``report``)."""
    sweep.experiment_dir.mkdir(parents=True, exist_ok=True)
    target = sweep.experiment_dir / SWEEP_COPY
    if not target.exists() or target.read_text() != sweep.text:
        write_text_atomic(target, sweep.text)


def finish(sweep: Sweep, result: SweepResult) -> None:
    """Prints the summary; raises :class:`SweepFailed` when any run failed.

    Runs held by another process are listed, and are no failure.
    """
    complete = result.complete_before + len(result.completed)
    print(f"\n{complete} of {result.total} runs complete"
          f"{f', {len(result.failed)} failed' if result.failed else ''}"
          f"{f', {len(result.held)} held by another process' if result.held else ''}.")
    if result.held:
        print(f"Held by another process, so not run here: {', '.join(result.held)}. Once "
              "that process has ended, the same command completes them: a complete run is "
              "skipped, a stopped one resumes.", flush=True)
    if result.failed:
        listing = "; ".join(f"{run_id} ({error})" for run_id, error in result.failed.items())
        raise SweepFailed(
            f"{len(result.failed)} run(s) of {sweep.path} failed: {listing}. Each error file "
            "holds the exit code and the last lines of the run's output. Fix the cause and "
            f"run the same command again: complete runs are skipped.",
            result,
        )
    print(f"report: medtransfer report {sweep.experiment_dir}")


class Progress:
    """Runs done out of the runs to do (complete, failed and held counted apart), elapsed
    time and an ETA from the pace so far; in a notebook also a live bar over the runs."""

    def __init__(self, total: int):
        self.total = total
        self.counts = collections.Counter()
        self.started = time.monotonic()
        self.bar = notebook_bar(total, "sweep", "run")

    @property
    def finished(self) -> int:
        return sum(self.counts.values())

    def done(self, state: str) -> None:
        """Counts one run that ended ``complete``, ``failed`` or ``held``."""
        self.counts[state] += 1
        if self.bar is not None:
            self.bar.set_postfix({name: count for name, count in self.counts.items()})
            self.bar.update()
            if self.finished == self.total:
                self.bar.close()

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        finished = self.finished
        eta = (_duration(elapsed / finished * (self.total - finished))
               if finished else "unknown")
        states = ", ".join(f"{self.counts[state]} {state}" for state in (COMPLETE, FAILED, HELD)
                           if self.counts[state] or state == COMPLETE)
        return (f"{finished}/{self.total} done ({states}), elapsed {_duration(elapsed)}, "
                f"ETA {eta}")

    def before(self, run_id: str) -> str:
        """The line announcing the next run of a sweep that runs one at a time."""
        return f"[run {self.finished + 1}/{self.total}: {run_id}] {self.line()}"


@dataclass
class Slot:
    """One place of a parallel sweep where a run trains: its share of the machine.

    Attributes:
        env: environment variables of its child (its GPUs, or its cores and thread
            limits: :func:`medtransfer.machine.device_shares`).
        label: the share, for the line announcing a run ("GPU 0,1", "cores 2,3").
        tag: put before each line of the child's output, so that the interleaved
            output of runs at once says which run wrote it.
        child: the child process training now, if any.
        stopping: set by the sweep on Ctrl-C: no child starts any more, and one that
            ends is not recorded as failed.
        lock: guards ``child`` and ``stopping`` between the slot's thread and the one
            stopping it.
    """

    env: dict[str, str] = field(default_factory=dict)
    label: str = ""
    tag: str = ""
    child: subprocess.Popen | None = None
    stopping: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stop(self) -> None:
        """Stops the child training in this slot, if any (see :func:`_stop`)."""
        with self.lock:
            self.stopping = True
            child = self.child
        if child is not None:
            _stop(child)


def stop_slots(slots: list[Slot]) -> None:
    """Stops every slot's run at once (each may take a grace period to save its epoch)."""
    stoppers = [threading.Thread(target=slot.stop) for slot in slots]
    for stopper in stoppers:
        stopper.start()
    for stopper in stoppers:
        stopper.join()


def run_in_slots(slots: list[Slot], work: Callable[[int, Slot], None],
                 stop: Callable[[], None]) -> None:
    """Runs ``work(number, slot)`` in a thread per slot (numbered from 1) until all end.

    A slot's thread ends quietly when its slot is stopped (``KeyboardInterrupt`` from
    :func:`launch_run`); an error in one stops every slot (``stop``) and is raised here.

    Raises:
        KeyboardInterrupt: Ctrl-C, after ``stop`` (which stops every slot's child and
            waits for it).
    """
    errors: list[BaseException] = []

    def guarded(number: int, slot: Slot) -> None:
        try:
            work(number, slot)
        except KeyboardInterrupt:
            pass  # the slot was stopped: its run resumes next time
        except BaseException as error:  # noqa: BLE001 - raised again in the caller's thread
            errors.append(error)
            stop()

    # Daemons: once every child has stopped, a thread may still wait for a keras-tuner
    # chief; the command ends without it.
    threads = [threading.Thread(target=guarded, args=(number, slot), daemon=True,
                                name=f"slot-{number}")
               for number, slot in enumerate(slots, start=1)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        stop()
        raise
    if errors:
        raise errors[0]


def launch_run(run: PlannedRun, slot: Slot | None = None) -> RunOutcome:
    """Trains one run in a child process and records how it ended.

    A complete run is not started again, nor one that another process holds (or whose
    source run another process holds): those are ``held``. A run that transfers from an
    unfinished source run fails without starting. A failure writes
    ``<run_dir>/error.txt``, unless another process holds the run or has completed it by
    then; a start removes an old one.

    Args:
        run: the run.
        slot: where it trains in a parallel sweep (its environment and output tag); None:
            in this process's environment, its output passed on as it is.

    Raises:
        KeyboardInterrupt: after stopping the child, when the user pressed Ctrl-C (in a
            parallel sweep: when its slot was stopped).
    """
    directory = RunDirectory(run.run_dir)
    if directory.is_complete():
        return RunOutcome(COMPLETE, metrics=directory.read_metrics(),
                          note="already (by another process)")
    if directory.is_locked():
        return RunOutcome(HELD, note="held by another process")
    if run.source is not None:
        source = RunDirectory(run.source.run_dir)
        if source.is_locked():
            return RunOutcome(HELD, note=f"its source run {run.source.run_id} is held by "
                                         "another process")
        if not source.is_complete():
            return RunOutcome(FAILED, error=_record_failure(
                run, None, [f"It transfers from {run.source.run_dir}, which holds no complete "
                            "run; that run failed or has not run. Fix it first."]))
    directory.error.unlink(missing_ok=True)
    started = time.monotonic()
    exit_code, stderr_tail = _run_child(run, slot)
    seconds = time.monotonic() - started
    if exit_code == RunHeld.exit_code:
        # Another process took the run between the check above and the child's start.
        return RunOutcome(HELD, exit_code, seconds, note="held by another process")
    if directory.is_complete():  # the child held the lock until it ended: its work
        return RunOutcome(COMPLETE, exit_code, seconds, directory.read_metrics())
    if exit_code == 0:
        stderr_tail.append(f"The run exited normally but {directory.path} holds no complete run.")
    return RunOutcome(FAILED, exit_code, seconds,
                      error=_record_failure(run, exit_code, stderr_tail))


def run_command(run: PlannedRun | None = None) -> list[str]:
    """The command line of one child run: ``medtransfer run``, or for a pretraining
    step ``medtransfer pretrain METHOD`` with its epochs; its config comes on standard
    input (:func:`config_text`), so that no file of it is left behind whatever ends the
    sweep."""
    return [sys.executable, "-m", "medtransfer", *_command(run), "--config", STDIN]


def config_text(config: RunConfig) -> str:
    """What a child run reads on standard input: the options of ``config`` that differ
    from the defaults, as a run config file holds them."""
    return yaml.safe_dump(run_options(config), sort_keys=False)


def _command(run: PlannedRun | None) -> list[str]:
    if run is None or not run.pretrain:
        return ["run"]
    return ["pretrain", run.pretrain, "--epochs", str(run.config.total_epochs)]


def _run_child(run: PlannedRun, slot: Slot | None) -> tuple[int, list[str]]:
    """Runs ``medtransfer run`` (or ``pretrain``) on the run's config in a child process.

    Alone, its stdout goes straight to ours; in a slot, each line is passed on behind the
    slot's tag. Its stderr is passed on line by line and the last lines are kept for the
    error file.

    Returns:
        The exit code (negative: the signal that killed it) and the last stderr lines.

    Raises:
        KeyboardInterrupt: Ctrl-C, or the slot was stopped.
    """
    tag = f"[{slot.tag}] " if slot is not None and slot.tag else ""
    # The child dies with us (see medtransfer.lifetime). Linux ties that to the thread
    # that starts it, so a parallel sweep's slot thread outlives its child.
    start = functools.partial(
        subprocess.Popen, run_command(run), stdin=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, errors="replace", stdout=subprocess.PIPE if tag else None,
        env={**child_environment(), **(slot.env if slot is not None else {})})
    if slot is None:
        child = start()
    else:
        with slot.lock:
            if slot.stopping:
                raise KeyboardInterrupt
            child = slot.child = start()
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES_KEPT)
    readers = [threading.Thread(target=_pass_on, args=(child.stderr, sys.stderr, tag, tail),
                                daemon=True)]
    if tag:
        readers.append(threading.Thread(target=_pass_on,
                                        args=(child.stdout, sys.stdout, tag, None),
                                        daemon=True))
    for reader in readers:
        reader.start()
    try:
        _hand_config(child, run.config)  # inside: Ctrl-C while writing stops the child too
        exit_code = child.wait()
    except KeyboardInterrupt:
        _stop(child)
        raise
    finally:
        for reader in readers:
            reader.join(timeout=10)
    if slot is not None:
        with slot.lock:
            slot.child = None
            if slot.stopping:  # stopped by Ctrl-C: resumes, is no failure
                raise KeyboardInterrupt
    return exit_code, list(tail)


def _hand_config(child: subprocess.Popen, config: RunConfig) -> None:
    """Writes the run's config to the child's standard input and closes it (a few hundred
    bytes: the pipe takes them whole). A child already gone (killed at once) has closed
    its end; its exit code tells what happened."""
    try:
        child.stdin.write(config_text(config))
        child.stdin.close()
    except BrokenPipeError:
        pass


def run_options(config: RunConfig) -> dict[str, Any]:
    """The options that differ from the defaults, as a run config file holds them."""
    defaults = RunConfig().to_dict()
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in config.to_dict().items() if value != defaults[key]}


def _pass_on(stream, out, tag: str, tail: collections.deque[str] | None) -> None:
    for line in stream:
        # One write per line, so that lines of runs at once do not mix within a line.
        out.write(f"{tag}{line}")
        if tail is not None:
            tail.append(line.rstrip("\n"))
        if tag:
            out.flush()
    out.flush()


def _stop(child: subprocess.Popen) -> None:
    """Ends a child run after Ctrl-C, giving it the chance to stop cleanly.

    From a terminal, the child had the same SIGINT and is ending already; otherwise it
    gets one, then SIGTERM, then SIGKILL. A run stopped any of these ways resumes.
    """
    steps = ((None, 2), (signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, None))
    for stop, grace in steps:
        if stop is not None:
            child.send_signal(stop)
        try:
            child.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _record_failure(run: PlannedRun, exit_code: int | None,
                    stderr_tail: list[str]) -> Path | str:
    """Writes the run's error.txt while holding its lock, so never into a run another
    process holds or has completed.

    Returns:
        The error file, or why none was written.
    """
    if exit_code is None:
        how = "was not started"
    elif exit_code < 0:
        how = f"was killed by signal {signal.Signals(-exit_code).name} (out of memory?)"
    else:
        how = f"exited with code {exit_code}"
    when = datetime.now(UTC).isoformat(timespec="seconds")
    text = (
        f"Run {run.run_id} {how} ({when}, host {os.uname().nodename}).\n"
        f"command: medtransfer {' '.join(_command(run))} --config FILE, with FILE "
        "holding:\n"
        + "".join(f"  {line}\n" for line in
                  config_text(run.config).splitlines())
        + "last lines of its error output:\n"
        + "".join(f"  {line}\n" for line in stderr_tail)
    )
    directory = RunDirectory(run.run_dir)
    directory.path.mkdir(parents=True, exist_ok=True)
    try:
        directory.lock()
    except RunHeld:
        return "not recorded in error.txt: another process holds the run now"
    try:
        if directory.is_complete():
            return "not recorded in error.txt: another process has completed the run since"
        write_text_atomic(directory.error, text)
        return directory.error
    finally:
        directory.unlock()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
