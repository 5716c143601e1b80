"""The one way every benchmark measures: alternate the sides, keep each side's best.

The machine these figures come from may be shared: a burst of someone else's work slows
one repetition, not one side of a comparison, when the sides take turns and each keeps
its best rate. Every figure is then a ratio of two rates measured in the same run.

Also here: the Keras callback that times training epochs the way a run does (training
steps only), and the peak resident memory of a command and every process it starts.
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@contextlib.contextmanager
def single_core():
    """Runs the ``with`` body on one CPU core: every thread of this process, and every
    thread or process started meanwhile, which inherit it (Linux; elsewhere a no-op).

    ``os.sched_setaffinity(0, ...)`` would pin the calling thread alone, leaving the
    thread pools TensorFlow and OpenCV already started free to use every core.
    """
    if not (hasattr(os, "sched_setaffinity") and os.path.isdir("/proc/self/task")):
        yield
        return
    saved = {}
    core = min(os.sched_getaffinity(0))
    for task in os.listdir("/proc/self/task"):
        try:
            saved[int(task)] = os.sched_getaffinity(int(task))
            os.sched_setaffinity(int(task), {core})
        except OSError:  # the thread ended meanwhile
            pass
    try:
        yield
    finally:
        for task, cores in saved.items():
            try:
                os.sched_setaffinity(task, cores)
            except OSError:
                pass


def best_rates(
    sides: Mapping[str, Callable[[], float]], repeats: int, warmup: int = 0
) -> dict[str, float]:
    """Calls every side in turn, ``repeats`` rounds, and keeps each side's highest rate.

    Args:
        sides: name -> a function that does the work once and returns its rate (images
            per second, higher is better), for example :func:`rate_of`.
        repeats: timed rounds; each round calls every side once, in the given order.
        warmup: untimed rounds first (tracing, filling caches).

    Returns:
        name -> the best rate of that side.
    """
    for _ in range(warmup):
        for side in sides.values():
            side()
    best = dict.fromkeys(sides, 0.0)
    for _ in range(repeats):
        for name, side in sides.items():
            best[name] = max(best[name], side())
    return best


def rate_of(work: Callable[[], int]) -> float:
    """Times ``work()``, which returns how many images it handled; returns images/s."""
    start = time.perf_counter()
    count = work()
    return count / (time.perf_counter() - start)


def count_images(dataset) -> int:
    """Reads a dataset of ``(images, ...)`` batches once; returns the number of images."""
    return sum(int(element[0].shape[0]) for element in dataset)


def dataset_rate(dataset) -> Callable[[], float]:
    """A side for :func:`best_rates`: one pass over ``dataset``, in images per second."""
    return lambda: rate_of(lambda: count_images(dataset))


def make_epoch_timer():
    """A Keras callback recording each epoch's training time (``.seconds``), as runs do.

    Like ``EpochRecorder`` in a run, it times from the start of the epoch to the end of
    its last training step, so that validation and set-up never count; a ``predict``
    call is timed the same way, from its first batch to its last.
    """
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = self._last_step = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self._last_step = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(self._last_step - self._start)

        def on_predict_begin(self, logs=None):
            self.on_epoch_begin(0)

        def on_predict_batch_end(self, batch, logs=None):
            self._last_step = time.perf_counter()

        def on_predict_end(self, logs=None):
            self.on_epoch_end(0)

    return EpochTimer()


def steady_rate(epoch_seconds: Sequence[float], images_per_epoch: int) -> float:
    """Images/s over the epochs after the first, as ``metrics.json`` images_per_second."""
    steady = list(epoch_seconds[1:]) or list(epoch_seconds)
    return len(steady) * images_per_epoch / sum(steady)


@dataclass(frozen=True)
class CommandUsage:
    """What running one command cost.

    Attributes:
        seconds: wall-clock time.
        peak_bytes: peak resident memory of the command and all its processes together.
    """

    seconds: float
    peak_bytes: int


def run_measured(command: Sequence[str], cwd: Path | None = None,
                 env: Mapping[str, str] | None = None) -> CommandUsage:
    """Runs ``command`` to completion; returns its wall time and peak resident memory.

    The peak is the larger of the command's own high-water mark (``VmHWM``) and the
    highest sum of resident memory over the command and its descendants (worker pools:
    their sum is what the machine must hold, and no single process shows it), both read
    from /proc every 20 ms. (``ru_maxrss`` would not do: after fork and exec, Linux
    reports the parent's size at the fork when that is larger.)

    Raises:
        RuntimeError: the command failed; its stderr is in the message.
    """
    start = time.perf_counter()
    process = subprocess.Popen(
        list(command), cwd=cwd, env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _tree_resident_bytes(process.pid),
                          _high_water_mark(process.pid))
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stderr = process.stderr.read()
    process.wait()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited with {process.returncode}:\n{stderr.decode()[-2000:]}")
    return CommandUsage(seconds, peak[0])


def _high_water_mark(pid: int) -> int:
    """``VmHWM`` of ``pid`` in bytes (0 when unknown)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _tree_resident_bytes(root: int) -> int:
    """Resident memory of ``root`` and its descendants now (Linux /proc; 0 elsewhere)."""
    children: dict[int, list[int]] = {}
    resident: dict[int, int] = {}
    page = resource.getpagesize()
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/statm") as statm:
                resident[int(entry)] = int(statm.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += resident.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total
