"""Distribution strategy and precision for a run on one machine.

One run never spans machines: ``MultiWorkerMirroredStrategy`` does not work with Keras 3
(keras-team/keras#20585). Many machines share a sweep instead, one run each.
"""

from __future__ import annotations

import functools

import keras
import tensorflow as tf

from medtransfer.errors import look_up_option
from medtransfer.options import STRATEGIES


def make_strategy(name: str) -> tf.distribute.Strategy:
    """Returns the strategy for ``--strategy``.

    Args:
        name: ``auto`` picks MirroredStrategy when more than one GPU is visible, else the
            default strategy; ``mirrored`` always mirrors, over the GPUs or, on a machine
            without GPUs, over the logical CPU devices (how the tests stand in two CPUs
            for two GPUs); ``default`` is one device. Every mirrored run in a process gets
            the same strategy object (see ``_shared_mirrored_strategy``).
    """
    gpus = tf.config.list_logical_devices("GPU")
    if strategy_kind(name, len(gpus)) == "default":
        return tf.distribute.get_strategy()
    cpus = () if gpus else tuple(device.name for device in tf.config.list_logical_devices("CPU"))
    return _shared_mirrored_strategy(cpus)


@functools.cache
def _shared_mirrored_strategy(cpus: tuple[str, ...]) -> tf.distribute.MirroredStrategy:
    """One MirroredStrategy per process, over the GPUs or else over ``cpus``.

    Every new MirroredStrategy numbers its all-reduces from the same collective keys
    (group 1, instance 100), and the TensorFlow runtime keeps what it learnt about each
    key, such as the tensor's shape, for the life of the process. A second strategy
    whose model trains a different set of weights -- the next run of a sweep or a
    notebook, with another ``freeze`` -- reuses the keys with another gradient size and
    aborts with "Shape mismatch in the collective instance 100"
    (tensorflow/tensorflow#62790). One shared strategy keeps numbering on.
    """
    return tf.distribute.MirroredStrategy(devices=list(cpus) or None)


def strategy_kind(name: str, gpu_count: int) -> str:
    """What ``--strategy name`` means with ``gpu_count`` GPUs: ``mirrored`` or ``default``."""
    look_up_option(name, STRATEGIES, "strategy")
    if name == "auto":
        return "mirrored" if gpu_count > 1 else "default"
    return name


def set_precision(mixed: bool) -> None:
    """``mixed_float16`` compute (the head's output layer stays float32) or float32."""
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")


def op_determinism_enabled() -> bool:
    """Whether TensorFlow's deterministic ops are on (process-wide)."""
    from tensorflow.python.framework import config as tf_config

    return tf_config.is_op_determinism_enabled()


def set_op_determinism(enabled: bool) -> None:
    """Turns TensorFlow's deterministic ops on or off for the whole process.

    ``tf.config.experimental`` only turns them on; a run switches them back off when
    it ends, because a notebook or a test session runs on after it, and under
    determinism every unseeded random op raises.
    """
    from tensorflow.python.framework import config as tf_config

    if enabled:
        tf.config.experimental.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()
