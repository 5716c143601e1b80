"""Test-wide set-up: quiet TensorFlow and two logical CPU devices standing in for two GPUs.

Logical devices can only be configured before TensorFlow initialises its runtime, so it
happens here, once, before any test imports a model.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
