"""Test-wide set-up: quiet TensorFlow and two logical CPU devices standing in for two GPUs.

Logical devices can only be configured before TensorFlow initialises its runtime, so it
happens here, once, before any test module is imported (``pytest_configure``): in each
process that runs tests, not in pytest-xdist's main process, which only hands them out.
"""

import json
import os
import signal
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# A process started with SIGINT ignored (a pytest-xdist worker, or a suite started in the
# background by a non-interactive shell) passes that on to every command a test starts,
# and a command that ignores SIGINT cannot show what Ctrl-C does. Tests that press Ctrl-C
# need it to be the default again, so it is, in this process and so in its children.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from medtransfer.machine import (  # noqa: E402
    CORES_ENV,
    device_shares,
    import_heavy_libraries_without_collecting,
    load_unused_keras_extras_on_first_use,
)

# Each pytest-xdist worker sizes TensorFlow's and OpenMP's thread pools to its share of the
# cores, as a run of a parallel sweep does, and so do the commands its tests start: with
# two workers each sizing them to every core, their threads spin against each other (the
# suite on 2 cores, taken in turn: 769 and 739 s that way, 680 and 695 s with pools of one
# each). Not pinned to the share, as a sweep's run is: a test's own processes would then
# share one core (689 s).
if "PYTEST_XDIST_WORKER" in os.environ:
    _shares = device_shares(int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    _share = _shares[int(os.environ["PYTEST_XDIST_WORKER"].removeprefix("gw")) % len(_shares)]
    os.environ.update({name: value for name, value in _share.items() if name != CORES_ENV})

import_heavy_libraries_without_collecting()  # as the command line does
load_unused_keras_extras_on_first_use()

import pytest  # noqa: E402


def pytest_configure(config):
    if not hasattr(config, "workerinput") and config.getoption("numprocesses", None):
        return  # pytest-xdist's main process runs no test: TensorFlow stays unloaded
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])


@pytest.fixture(scope="session")
def digits_data_dir(tmp_path_factory):
    """A data root holding the bundled digits dataset, prepared once per test session."""
    from medtransfer.data.prepared import load_prepared

    root = tmp_path_factory.mktemp("datasets")
    load_prepared("digits", root)
    return root


@pytest.fixture
def rewritten(monkeypatch):
    """The medtransfer functions AutoGraph rewrites meanwhile (module.qualified name):
    none should be (medtransfer.data.pipeline.without_autograph)."""
    from tensorflow.python.autograph.impl import api as autograph_api

    names = []
    convert = autograph_api._convert_actual

    def recording(entity, program_ctx):
        if getattr(entity, "__module__", "").startswith("medtransfer"):
            names.append(f"{entity.__module__}.{entity.__qualname__}")
        return convert(entity, program_ctx)

    monkeypatch.setattr(autograph_api, "_convert_actual", recording)
    return names


# Seconds each test module took in the last full session (setup, call and teardown of its
# tests), kept in pytest's cache to order the next session's modules.
MODULE_SECONDS = "medtransfer/module_seconds"
RECORDED_SECONDS = Path(__file__).parent / "module_seconds.json"
_measured: dict[str, float] = {}


def _module(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config, items):
    """The modules that took longest last time first, each module's tests kept together.

    ``make test`` keeps this order under pytest-xdist (``--no-loadscope-reorder``; its
    default sorts modules by their number of tests, which started the two-minute cost
    benchmark, one test, last, alone on one worker: 12 min 34 s against 9 min 23 s).

    ``make test`` hands whole modules to the pytest-xdist workers (``--dist loadscope``),
    so a module-scoped trained run is built once, not once per worker; starting with the
    heaviest modules lets the many quick ones fill in at the end, so both workers finish
    together instead of one waiting on a long module collected last. Without a previous
    session's times (a clean clone, CI), the times of a clean-clone ``make test`` kept in
    ``tests/module_seconds.json`` order them; a module new since then counts 20 seconds
    per test marked slow (the marker's threshold).
    """
    cache = getattr(config, "cache", None)
    seconds = {**json.loads(RECORDED_SECONDS.read_text()),
               **(cache.get(MODULE_SECONDS, {}) if cache is not None else {})}
    slow_tests = {}
    for item in items:
        module = _module(item.nodeid)
        slow_tests[module] = slow_tests.get(module, 0) + (item.get_closest_marker("slow")
                                                          is not None)
    cost = {module: seconds.get(module, 20.0 * count) for module, count in slow_tests.items()}
    first_seen = {module: index for index, module in enumerate(slow_tests)}
    items.sort(key=lambda item: (-cost[_module(item.nodeid)], first_seen[_module(item.nodeid)]))


def pytest_runtest_logreport(report):
    _measured[_module(report.nodeid)] = _measured.get(_module(report.nodeid), 0.0) + \
        report.duration


def pytest_sessionfinish(session):
    """Keeps this session's module times (the main process only: under pytest-xdist it
    sees every worker's reports, while each worker sees only its own)."""
    cache = getattr(session.config, "cache", None)
    if cache is None or hasattr(session.config, "workerinput") or not _measured:
        return
    cache.set(MODULE_SECONDS, {**cache.get(MODULE_SECONDS, {}), **_measured})
