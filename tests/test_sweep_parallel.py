"""``sweep --parallel``: runs at once, each with its share of the machine, stopped and
resumed like the one-at-a-time sweep.

Every run waits after epoch 1 until the test opens a gate (tests/sweep_gate/
sitecustomize.py), so the signals arrive while both runs are at a known point.
"""

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sweeps import sweep_file
from test_sweep_signals import TIMEOUT, gated_env, gone, history_epochs, wait_for

from medtransfer import machine
from medtransfer.errors import MedtransferError
from medtransfer.study.grid import load_sweep
from medtransfer.study.sweep import make_slots


def test_each_run_gets_its_own_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert machine.device_shares("auto", 2) == [{"CUDA_VISIBLE_DEVICES": "0,1"},
                                                {"CUDA_VISIBLE_DEVICES": "2,3"}]
    assert machine.device_shares(3) == [{"CUDA_VISIBLE_DEVICES": gpu} for gpu in "012"]
    with pytest.raises(MedtransferError, match="need 6 GPUs, and 4 are visible"):
        machine.device_shares(3, 2)
    with pytest.raises(MedtransferError, match="--parallel 0 is not valid"):
        machine.device_shares(0)
    assert [slot.label for slot in make_slots("auto", 2)] == ["GPU 0,1", "GPU 2,3"]
    assert [slot.label for slot in make_slots(None, 2)] == ["GPU 0,1"]  # one at a time
    assert make_slots(None) is None  # the plain sweep, in this process's environment


def test_without_gpus_each_run_gets_its_share_of_the_cores(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(machine.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5},
                        raising=False)
    two = machine.device_shares(2)
    assert [share[machine.CORES_ENV] for share in two] == ["0,1,2", "3,4,5"]
    assert [share["TF_NUM_INTRAOP_THREADS"] for share in two] == ["3", "3"]
    assert [share["OMP_NUM_THREADS"] for share in two] == ["3", "3"]
    assert [share[machine.CORES_ENV] for share in machine.device_shares(4)] == [
        "0", "1,2", "3", "4,5"]
    # More runs than cores: one core each, round-robin.
    assert [share[machine.CORES_ENV] for share in machine.device_shares(8)] == [
        "0", "1", "2", "3", "4", "5", "0", "1"]
    assert machine.device_shares("auto") == [{}]  # one run on every core


def test_a_child_keeps_to_the_cores_it_was_given(monkeypatch):
    pinned = []
    monkeypatch.setattr(machine.os, "sched_setaffinity",
                        lambda pid, cores: pinned.append(cores), raising=False)
    monkeypatch.setenv(machine.CORES_ENV, "2,3")
    machine.use_core_share_if_asked()
    assert pinned == [{2, 3}] and machine.CORES_ENV not in os.environ
    machine.use_core_share_if_asked()  # no share: untouched
    assert pinned == [{2, 3}]


def waiting_runs(gate, count):
    """The runs held by the gate: (pid, run directory) of each."""
    runs = []
    for path in gate.glob("waiting-*.json"):
        waiting = json.loads(path.read_text())
        runs.append((waiting["pid"], Path(waiting["run_dir"])))
    assert len(runs) == count
    return runs


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc; the sweep uses prctl")
def test_two_at_once_complete_every_run_once_and_resume_after_sigterm_and_ctrl_c(
        tmp_path, digits_data_dir):
    gate = tmp_path / "gate"
    gate.mkdir()
    config = sweep_file(tmp_path, digits_data_dir, {"seed": [0, 1, 2, 3]}, "parallel", "0+2")
    run_dirs = [run.run_dir for run in load_sweep(config).runs]
    command = [sys.executable, "-m", "medtransfer", "sweep", str(config), "--parallel", "2"]
    logs = []
    # The sweep's temp directory: each run reads its config on standard input, so nothing
    # of the sweep's is left there, however it ends.
    temp = tmp_path / "temp"
    temp.mkdir()

    def start():
        logs.append(tmp_path / f"sweep-{len(logs)}.log")
        return subprocess.Popen(command, env=gated_env(gate, TMPDIR=str(temp)),
                                stdout=logs[-1].open("w"), stderr=subprocess.STDOUT)

    def stop_when_two_wait(signal_number):
        sweep = start()
        try:
            wait_for(lambda: len(list(gate.glob("waiting-*.json"))) == 2, {"sweep": sweep},
                     "two runs after epoch 1")
            held = waiting_runs(gate, 2)
            sweep.send_signal(signal_number)
            sweep.wait(timeout=TIMEOUT)
        finally:
            if sweep.poll() is None:
                sweep.kill()
        wait_for(lambda: all(gone(pid) for pid, _ in held), {}, "both runs to end")
        for path in gate.glob("waiting-*.json"):
            path.unlink()
        return sweep.returncode, [run_dir for _, run_dir in held]

    # SIGTERM ends the sweep at once; its runs die with it (their epoch 1 is saved).
    code, first = stop_when_two_wait(signal.SIGTERM)
    assert code == -signal.SIGTERM
    assert sorted(first) == run_dirs[:2]
    assert not list(temp.iterdir())
    # Started again: both resume past the gate (it holds only epoch 1), the next two
    # start and wait; Ctrl-C stops them, as a stop, not a failure.
    code, second = stop_when_two_wait(signal.SIGINT)
    output = logs[-1].read_text()
    assert code == 130, output
    assert sorted(second) == run_dirs[2:]
    assert not list(temp.iterdir())
    assert "medtransfer sweep: interrupted." in output and "Traceback" not in output
    for run_dir in run_dirs[2:]:
        assert history_epochs(run_dir) == [1] and not (run_dir / "error.txt").exists()
    (gate / "open").touch()
    again = subprocess.run(command, env=gated_env(gate), capture_output=True, text=True,
                           timeout=TIMEOUT)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 run(s) at once: " in again.stdout
    assert "4 of 4 runs complete." in again.stdout

    texts = [log.read_text() for log in logs] + [again.stdout]
    for run_dir in run_dirs:
        assert json.loads((run_dir / "metrics.json").read_text())["status"] == "complete"
        assert history_epochs(run_dir) == [1, 2]
        assert not (run_dir / "error.txt").exists()
        # Completed once, by the sweep that resumed it; started once more for each stop.
        assert sum(text.count(f"{run_dir.name}: complete") for text in texts) == 1
        assert sum(f"Resuming {run_dir} after epoch 1 of 2." in text for text in texts) == 1


def test_a_worker_with_slots_trains_that_many_runs_at_once_each_in_its_slot(
        tmp_path, digits_data_dir):
    from medtransfer.study.distributed import OBJECTIVE, _oracle_class, _work_in_slots
    from medtransfer.study.launch import Slot

    sweep = load_sweep(sweep_file(tmp_path, digits_data_dir, {"seed": [0, 1, 2, 3]}))
    oracle = _oracle_class()(sweep, sweep.runs)  # asked directly, as a worker asks the chief
    oracle._set_project_dir(str(tmp_path / "oracle"), "oracle")
    slots = [Slot({"CUDA_VISIBLE_DEVICES": "0"}, "GPU 0"), Slot({"CUDA_VISIBLE_DEVICES": "1"},
                                                                "GPU 1")]
    # Each run waits for another to be training at the same time: two at once, or a
    # BrokenBarrierError fails the test.
    together = threading.Barrier(2, timeout=60)
    trained = []

    def train(trial, slot=None, asker="tuner0"):
        trained.append((trial.hyperparameters.values["run"], asker, slot.env))
        together.wait()
        return {OBJECTIVE: 0.5, "best_epoch": 1}

    _work_in_slots(oracle, "tuner0", slots, train)

    assert sorted(run_id for run_id, _, _ in trained) == sorted(r.run_id for r in sweep.runs)
    assert {(asker, env["CUDA_VISIBLE_DEVICES"]) for _, asker, env in trained} == {
        ("tuner0-1", "0"), ("tuner0-2", "1")}
    assert len(oracle.result.completed) == 4
