"""Reads what TensorBoard reads: TF2 scalar summaries are stored as tensor events."""

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util


def scalar_steps(folder, tag):
    """``[(step, value), ...]`` of one scalar tag in one run folder, in file order."""
    events = EventAccumulator(str(folder), size_guidance={"tensors": 0}).Reload().Tensors(tag)
    return [(event.step, float(tensor_util.make_ndarray(event.tensor_proto))) for event in events]


def tags(folder):
    return set(EventAccumulator(str(folder)).Reload().Tags()["tensors"])
