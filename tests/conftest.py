"""Test-wide set-up: quiet TensorFlow and two logical CPU devices standing in for two GPUs.

Logical devices can only be configured before TensorFlow initialises its runtime, so it
happens here, once, before any test imports a model.
"""

import os
import signal

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# A process started with SIGINT ignored (a pytest-xdist worker, or a suite started in the
# background by a non-interactive shell) passes that on to every command a test starts,
# and a command that ignores SIGINT cannot show what Ctrl-C does. Tests that press Ctrl-C
# need it to be the default again, so it is, in this process and so in its children.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def digits_data_dir(tmp_path_factory):
    """A data root holding the bundled digits dataset, prepared once per test session."""
    from medtransfer.data.prepared import load_prepared

    root = tmp_path_factory.mktemp("datasets")
    load_prepared("digits", root)
    return root


def pytest_collection_modifyitems(items):
    """Modules with the most slow tests first, each module's tests kept together.

    ``make test`` hands whole modules to the pytest-xdist workers (``--dist loadscope``),
    so a module-scoped trained run is built once, not once per worker; starting with the
    heaviest modules lets the many quick ones fill in at the end, so both workers finish
    together instead of one waiting on a long test collected last.
    """
    slow_tests = {}
    for item in items:
        slow_tests.setdefault(item.module, 0)
        slow_tests[item.module] += item.get_closest_marker("slow") is not None
    first_seen = {module: index for index, module in enumerate(slow_tests)}
    items.sort(key=lambda item: (-slow_tests[item.module], first_seen[item.module]))
