"""What this process may use of the machine, and how its memory allocator behaves."""

from __future__ import annotations

import ctypes
import gc
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from medtransfer.errors import MedtransferError
from medtransfer.importhook import FirstImport, OnFirstUse

# mallopt's parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_MIB = 1024**2


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity: a container's or a job
    scheduler's share), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def keep_freed_memory(mib: int = 64) -> bool:
    """Lets glibc's malloc keep freed memory for reuse instead of handing it back.

    By default glibc returns a freed block of a few MB to the kernel at once, and the
    next block of that size comes back as fresh pages, each one a page fault. Decoding
    a 2000x1500 JPEG allocates 9 MB that way: 2,200 page faults and 6 ms of kernel time
    out of 14 ms (measured with OpenCV here), so ``prepare`` spent a quarter of its time
    in the kernel. With blocks below ``mib`` MiB taken from the heap and up to ``mib``
    MiB of free heap kept (twice that before any is returned), the faults go (68 per
    decode) and ``prepare`` on one core takes 6.0 s instead of 8.2 s for 300 such
    photographs.

    It holds for the rest of the process, in every thread, so the command line sets it
    only in ``medtransfer prepare``, a process that does nothing else.

    Returns:
        True when glibc took the settings; False elsewhere (macOS, Windows, musl).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    settings = ((_M_MMAP_THRESHOLD, mib * _MIB), (_M_TOP_PAD, mib * _MIB),
                (_M_TRIM_THRESHOLD, 2 * mib * _MIB))
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)


# A child run's share of the CPU cores, set by a parallel sweep (see device_shares).
CORES_ENV = "MEDTRANSFER_CORES"


def visible_gpus() -> list[str]:
    """The GPU ids this process may use, without importing TensorFlow.

    ``CUDA_VISIBLE_DEVICES`` when set (CUDA stops at the first ``-1``), else the GPUs
    ``nvidia-smi -L`` lists; none on a machine without NVIDIA's driver.
    """
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        ids = [part.strip() for part in given.split(",") if part.strip()]
        return ids[:ids.index("-1")] if "-1" in ids else ids
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                 timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if listing.returncode != 0:
        return []
    return [str(index) for index, line in enumerate(
        line for line in listing.stdout.splitlines() if line.startswith("GPU "))]


def device_shares(parallel: int | str, gpus_per_run: int = 1) -> list[dict[str, str]]:
    """What each of ``parallel`` runs at once on this machine may use, as the environment
    variables its process gets.

    With GPUs, run ``i`` gets ``CUDA_VISIBLE_DEVICES`` = GPUs ``i*K .. i*K+K-1``
    (``K = gpus_per_run``); ``"auto"`` runs as many as there are groups of K visible GPUs.
    Without GPUs the usable cores are split into ``parallel`` contiguous shares (``auto``:
    one run, on every core): each run is pinned to its share (``MEDTRANSFER_CORES``,
    applied by the child with :func:`use_core_share_if_asked`) and TensorFlow's and
    OpenMP's thread pools are sized to it, so that two runs do not fight over every core.

    Raises:
        MedtransferError: ``parallel`` or ``gpus_per_run`` is not a positive whole number
            (or ``auto``), or the runs need more GPUs than are visible.
    """
    if parallel != "auto" and (not isinstance(parallel, int) or parallel < 1):
        raise MedtransferError(
            f"--parallel {parallel} is not valid: give how many runs train at once, a whole "
            "number from 1, or 'auto' (the visible GPUs divided by --gpus-per-run).")
    if not isinstance(gpus_per_run, int) or gpus_per_run < 1:
        raise MedtransferError(
            f"--gpus-per-run {gpus_per_run} is not valid: give a whole number from 1 (each "
            "run's GPUs, under its MirroredStrategy).")
    gpus = visible_gpus()
    if gpus:
        count = len(gpus) // gpus_per_run if parallel == "auto" else parallel
        if count < 1 or count * gpus_per_run > len(gpus):
            raise MedtransferError(
                f"{count or 1} run(s) at once with {gpus_per_run} GPU(s) each need "
                f"{(count or 1) * gpus_per_run} GPUs, and {len(gpus)} are visible "
                f"({', '.join(gpus)}). Lower --parallel or --gpus-per-run, or make more GPUs "
                "visible (CUDA_VISIBLE_DEVICES).")
        return [{"CUDA_VISIBLE_DEVICES": ",".join(gpus[i * gpus_per_run:(i + 1) * gpus_per_run])}
                for i in range(count)]
    count = 1 if parallel == "auto" else parallel
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        list(range(usable_cores()))
    if count == 1:
        return [{}]  # one run on every core: nothing to share
    # More runs than cores: each gets one core, shared round-robin.
    shares = ([cores[i * len(cores) // count:(i + 1) * len(cores) // count]
               for i in range(count)] if count <= len(cores)
              else [[cores[i % len(cores)]] for i in range(count)])
    return [{CORES_ENV: ",".join(map(str, share)),
             "OMP_NUM_THREADS": str(len(share)),
             "TF_NUM_INTRAOP_THREADS": str(len(share)),
             "TF_NUM_INTEROP_THREADS": str(min(2, len(share)))} for share in shares]


def use_core_share_if_asked() -> None:
    """In a child run of a parallel sweep: keep to the cores ``MEDTRANSFER_CORES`` names.

    Set before TensorFlow starts, so its thread pools and tf.data's autotuning see the
    share; the variable is removed so that this process's own children do not inherit it.
    """
    share = os.environ.pop(CORES_ENV, None)
    if share and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(core) for core in share.split(",")})


# The imports that create most of a command's Python objects.
_HEAVY_IMPORTS = frozenset({"tensorflow", "keras"})


def import_heavy_libraries_without_collecting() -> None:
    """From now on, ``import tensorflow`` and ``import keras`` run with Python's garbage
    collector paused, and what they created is frozen (``gc.freeze``) once they are done.

    The two create about a million Python objects, none of them garbage, and the
    collector's passes over them were a fifth of a ``run``'s imports; frozen, the modules
    stay out of every later pass too. A tiny ``run`` child of a sweep (digits, 16 px, one
    epoch) took 7.5 instead of 9.7 CPU-seconds (three of each, alternated). Whichever
    command or test imports them first, and wherever, gets this; it changes nothing else.
    """
    _CollectLater.install()


# What Keras 3.15 imports with itself for features medtransfer never calls: the
# scikit-learn wrappers (keras.wrappers, which import scikit-learn) and pyplot
# (keras.visualization's plot_image_gallery).
_UNUSED_KERAS_EXTRAS = frozenset({"keras.wrappers", "matplotlib.pyplot"})


def load_unused_keras_extras_on_first_use() -> None:
    """From now on, the modules Keras imports for its scikit-learn wrappers and its image
    gallery are imported without running, and run when first used (never, in a run).

    Keras imports both with itself, whether or not they are used: scikit-learn and pyplot
    were 1.1 of the 4.8 CPU-seconds that importing the training code took (three of each,
    alternated), in every ``run`` process a sweep starts. Whoever does use them (Keras'
    ``SKLearnClassifier``, ``plt.figure()``) gets the real module at that moment.
    """
    _OnFirstUse.install()


class _OnFirstUse(OnFirstUse):
    def names(self) -> frozenset[str]:
        return _UNUSED_KERAS_EXTRAS


class _CollectLater(FirstImport):
    """Runs the first import of each heavy module with the collector paused."""

    def names(self) -> frozenset[str]:
        return _HEAVY_IMPORTS

    @contextmanager
    def around(self, module) -> Iterator[None]:
        enabled = gc.isenabled()  # False inside the other heavy import: it resumes
        gc.disable()
        try:
            yield
        finally:
            if enabled:
                gc.freeze()
                gc.enable()
