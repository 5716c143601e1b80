"""Test-only: holds every training run after epoch 1 until the test opens a gate.

Put this folder on PYTHONPATH and set SWEEP_TEST_GATE to a folder: a run whose first
epoch has ended (history.csv and the resume state written) writes
``<gate>/waiting-<pid>.json`` (its pid, its parent's pid and its run directory: the
folder of the run lock it holds, since a sweep's run reads its config on standard input)
and waits until ``<gate>/open`` exists. A test can then kill a worker in the middle of a
run at a known point instead of guessing with sleeps. Python imports ``sitecustomize`` at
start-up; the hook patches ``keras.Model.fit`` once keras is imported, so processes that
never import keras are not touched.
"""

import importlib.abc
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

GATE = os.environ.get("SWEEP_TEST_GATE")


def _patch(keras):
    fit = keras.Model.fit

    class Gate(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch != 0:
                return
            gate = Path(GATE)
            # Written whole under another name, then renamed: a test that sees the file
            # reads all of it, never a file still being written.
            writing = gate / f".waiting-{os.getpid()}.json.part"
            writing.write_text(json.dumps({"pid": os.getpid(), "ppid": os.getppid(),
                                           "run_dir": _held_run_dir()}))
            os.replace(writing, gate / f"waiting-{os.getpid()}.json")
            while not (gate / "open").exists():
                time.sleep(0.05)

    def gated_fit(self, *args, callbacks=None, **kwargs):
        # After the run's own callbacks: the epoch is fully recorded when the gate holds.
        return fit(self, *args, callbacks=[*(callbacks or []), Gate()], **kwargs)

    keras.Model.fit = gated_fit


def _held_run_dir():
    """The run directory whose ``.lock`` this process holds open (Linux: /proc)."""
    locks = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listing's own descriptor, closed since
        if target.endswith("/.lock"):
            locks.add(Path(target).parent)
    (run_dir,) = locks
    return str(run_dir)


class _AfterKerasImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            _patch(module)

        spec.loader.exec_module = exec_module
        return spec


if GATE:
    sys.meta_path.insert(0, _AfterKerasImport())
