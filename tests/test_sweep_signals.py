"""Sweeps stopped for real: Ctrl-C on one machine, SIGKILL of a worker on many.

Every run waits after epoch 1 until the test opens a gate (tests/sweep_gate/
sitecustomize.py), so the signal arrives at a known point in the middle of a run instead
of at a moment guessed with sleeps.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweeps import sweep_file

from medtransfer.study.grid import load_sweep

GATE_HOOK = Path(__file__).parent / "sweep_gate"
ROOT = Path(__file__).parent.parent
TIMEOUT = 600


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition, processes, what):
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        for name, process in processes.items():
            assert process.poll() is None, f"{name} ended while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def gone(pid):
    """The process has exited (a zombie holds no file or lock any more)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def history_epochs(run_dir):
    with (run_dir / "history.csv").open() as stream:
        return [int(row["epoch"]) for row in csv.DictReader(stream)]


def gated_env(gate, **variables):
    env = {key: value for key, value in os.environ.items() if not key.startswith("KERASTUNER")}
    return {**env, "SWEEP_TEST_GATE": str(gate),
            "PYTHONPATH": os.pathsep.join([str(GATE_HOOK), str(ROOT)]), **variables}


def waiting_run(gate):
    """The first run held by the gate: its pids and its run directory."""
    waiting = json.loads(sorted(gate.glob("waiting-*.json"))[0].read_text())
    return waiting, Path(waiting["run_dir"])


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_ctrl_c_stops_the_run_and_the_same_command_resumes_it(tmp_path, digits_data_dir):
    gate = tmp_path / "gate"
    gate.mkdir()
    config = sweep_file(tmp_path, digits_data_dir, {"seed": [0, 1]}, "stopped", "0+2")
    command = [sys.executable, "-m", "medtransfer", "sweep", str(config)]
    sweep = subprocess.Popen(command, env=gated_env(gate), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: any(gate.glob("waiting-*.json")), {"sweep": sweep}, "epoch 1")
        waiting, run_dir = waiting_run(gate)
        sweep.send_signal(signal.SIGINT)
        output, _ = sweep.communicate(timeout=TIMEOUT)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 130, output
    assert gone(waiting["pid"])  # the sweep waited for its run to end
    assert "medtransfer sweep: interrupted. The run in progress was stopped" in output
    assert "The same command continues" in output
    assert "Traceback" not in output
    assert history_epochs(run_dir) == [1] and not (run_dir / "metrics.json").exists()
    assert not (run_dir / "error.txt").exists()  # stopped, not failed

    (gate / "open").touch()
    again = subprocess.run(command, env=gated_env(gate), capture_output=True, text=True,
                           timeout=TIMEOUT)
    assert again.returncode == 0, again.stderr
    assert "2 runs: 0 complete, 2 to do" in again.stdout
    assert f"  resume    {run_dir.name}" in again.stdout
    assert f"Resuming {run_dir} after epoch 1 of 2." in again.stdout
    assert history_epochs(run_dir) == [1, 2]
    assert "2 of 2 runs complete." in again.stdout


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc; the sweep uses prctl")
def test_a_chief_and_two_workers_share_the_grid_and_a_killed_worker_resumes(
        tmp_path, digits_data_dir):
    gate = tmp_path / "gate"
    gate.mkdir()
    config = sweep_file(tmp_path, digits_data_dir, {"seed": [0, 1, 2, 3]}, "machines",
                        "0+2")
    run_dirs = [run.run_dir for run in load_sweep(config).runs]
    env = gated_env(gate, KERASTUNER_ORACLE_IP="127.0.0.1",
                    KERASTUNER_ORACLE_PORT=str(free_port()))

    def start(tuner_id, log_name):
        log = (tmp_path / f"{log_name}.log").open("w")
        return subprocess.Popen(
            [sys.executable, "-m", "medtransfer", "sweep", str(config)], cwd=tmp_path,
            env={**env, "KERASTUNER_TUNER_ID": tuner_id}, stdout=log,
            stderr=subprocess.STDOUT)

    processes = {name: start(name, name) for name in ("chief", "tuner0", "tuner1")}
    try:
        # Both workers' first runs stop after epoch 1; take the first one to get there.
        wait_for(lambda: any(gate.glob("waiting-*.json")), processes, "a run after epoch 1")
        waiting, killed_run = waiting_run(gate)
        killed = next(name for name, p in processes.items() if p.pid == waiting["ppid"])
        assert killed_run in run_dirs and history_epochs(killed_run) == [1]

        processes[killed].send_signal(signal.SIGKILL)
        processes[killed].wait()
        # The worker's run dies with it (and releases the run's lock).
        wait_for(lambda: gone(waiting["pid"]), {}, "the killed worker's run to end")
        (gate / "open").touch()
        processes[killed] = start(killed, f"{killed}-again")
        for name, process in processes.items():
            assert process.wait(timeout=TIMEOUT) == 0, (tmp_path / f"{name}.log").read_text()
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()

    chief = (tmp_path / "chief.log").read_text()
    experiment = tmp_path / "logs" / "machines"
    assert sorted(p.name for p in experiment.iterdir()) == sorted(
        [*(run_dir.name for run_dir in run_dirs), "sweep.yaml"])
    for run_dir in run_dirs:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["status"] == "complete"
        assert chief.count(f"{run_dir.name}: complete") == 1
        assert history_epochs(run_dir) == [1, 2]
    logs = {path.stem: path.read_text() for path in tmp_path.glob("*.log")}
    trainings = {run_dir.name: sum(log.count(f"Training {run_dir.name}:") for log in logs.values())
                 for run_dir in run_dirs}
    assert trainings == {run_dir.name: 1 + (run_dir == killed_run) for run_dir in run_dirs}
    again = logs[f"{killed}-again"]
    assert f"Resuming {killed_run} after epoch 1 of 2." in again
    assert "4 of 4 runs complete." in chief


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_two_sweeps_on_one_grid_skip_what_the_other_holds_and_neither_fails(
        tmp_path, digits_data_dir):
    # Each sweep has its own gate, so the test decides which run ends when.
    gates = {name: tmp_path / f"gate-{name}" for name in ("first", "second")}
    for gate in gates.values():
        gate.mkdir()
    config = sweep_file(tmp_path, digits_data_dir, {"seed": [0, 1]}, "twice")
    held_first, held_second = (run.run_dir for run in load_sweep(config).runs)
    logs = {name: tmp_path / f"{name}.log" for name in gates}

    def start(name):
        return subprocess.Popen(
            [sys.executable, "-m", "medtransfer", "sweep", str(config)],
            env=gated_env(gates[name]), stdout=logs[name].open("w"), stderr=subprocess.STDOUT)

    processes = {"first": start("first")}
    try:
        # The first sweep trains seed 0 and holds it at the gate ...
        wait_for(lambda: any(gates["first"].glob("waiting-*.json")), processes, "run 1")
        assert waiting_run(gates["first"])[1] == held_first
        # ... so the second skips seed 0 and trains seed 1, held at its own gate.
        processes["second"] = start("second")
        wait_for(lambda: any(gates["second"].glob("waiting-*.json")), processes, "run 2")
        assert waiting_run(gates["second"])[1] == held_second
        # The first completes seed 0 and finds seed 1 held by the second.
        (gates["first"] / "open").touch()
        assert processes["first"].wait(timeout=TIMEOUT) == 0, logs["first"].read_text()
        (gates["second"] / "open").touch()
        assert processes["second"].wait(timeout=TIMEOUT) == 0, logs["second"].read_text()
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()

    first, second = (logs[name].read_text() for name in ("first", "second"))
    for output, mine, other in ((first, held_first, held_second),
                                (second, held_second, held_first)):
        assert f"{mine.name}: complete in " in output
        assert f"{other.name}: held by another process; skipped" in output
        assert f"{other.name}: complete" not in output
        assert "1 of 2 runs complete, 1 held by another process." in output
        assert f"Held by another process, so not run here: {other.name}." in output
        assert "FAILED" not in output and "Traceback" not in output
    assert "2 runs: 0 complete, 1 to do, 1 held by another process" in second
    assert f"  held      {held_first.name}" in second
    assert "[run 2/2: " in second and "1/2 done (0 complete, 1 held)" in second
    for run_dir in (held_first, held_second):
        assert json.loads((run_dir / "metrics.json").read_text())["status"] == "complete"
        assert not (run_dir / "error.txt").exists()
