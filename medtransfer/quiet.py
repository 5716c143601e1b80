"""TensorFlow's start-up messages, hidden from the command line unless asked for.

On a machine without a GPU, importing TensorFlow 2.21 prints seven lines that tell the user
nothing, and the first device lookup an eighth that looks like a failure:

- ``WARNING: All log messages before absl::InitializeLog() is called are written to
  STDERR``, ``I... port.cc] oneDNN custom operations are on ...`` and ``I...
  cudart_stub.cc] Could not find cuda drivers on your machine ...``, twice (two shared
  libraries each log before absl is initialised). Logged from C++ before any Python code can
  configure logging, they ignore ``TF_CPP_MIN_LOG_LEVEL``; the only way to drop them is to
  filter file descriptor 2 while TensorFlow loads.
- ``E... cuda_platform.cc] failed call to cuInit: ... UNKNOWN ERROR (303)`` when the
  runtime first looks for GPUs. ``TF_CPP_MIN_LOG_LEVEL=3`` would hide it, but with every
  other error TensorFlow logs; so it is filtered too, only on a machine without a GPU.

:func:`quiet_tensorflow_start` arranges that the first ``import tensorflow`` (whichever
subcommand makes it) runs with fd 2 filtered for exactly these lines; every other line,
such as a real warning or error, passes through unchanged, and nothing is filtered after
the import. ``TF_CPP_MIN_LOG_LEVEL`` defaults to 2 (TensorFlow's errors only, after
start-up). ``--verbose``, ``MEDTRANSFER_VERBOSE=1`` or the user's own
``TF_CPP_MIN_LOG_LEVEL`` leave TensorFlow to log exactly as it would by itself.
"""

from __future__ import annotations

import glob
import os
import re
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from medtransfer.importhook import FirstImport

VERBOSE_ENV = "MEDTRANSFER_VERBOSE"
TF_LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
# Marks a TF_CPP_MIN_LOG_LEVEL that medtransfer set, not the user: child processes (a
# sweep's runs) inherit both and stay quiet instead of taking the level as the user's.
_OURS_ENV = "MEDTRANSFER_SET_TF_LOG_LEVEL"

_ABSL_PREAMBLE = re.compile(
    rb"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"
)
# absl's prefix: severity, date, time, thread id, file:line]
_LOG = rb"^%s\d{4} [\d:.]+ +\d+ %s:\d+\] %s"
START_UP_NOISE = (
    _ABSL_PREAMBLE,
    re.compile(_LOG % (b"I", rb"port\.cc", rb"oneDNN custom operations are on\.")),
)
"""Lines dropped on every machine: they describe TensorFlow's build, not a problem."""
NO_GPU_NOISE = (
    re.compile(_LOG % (b"I", rb"cudart_stub\.cc", rb"Could not find cuda drivers on your machine")),
    re.compile(_LOG % (b"E", rb"cuda_[a-z_]+\.cc",
                       rb"failed call to cuInit: .*(UNKNOWN ERROR \(303\)|CUDA_ERROR_NO_DEVICE)")),
)
"""Lines dropped only on a machine with no GPU: there, no CUDA driver is expected."""

_we_set_log_level = False
# Whether quiet_tensorflow_start has decided for this process already.
_decided = False


def wants_tensorflow_messages(verbose: bool = False) -> bool:
    """Whether TensorFlow logs as it would by itself: ``--verbose``, ``MEDTRANSFER_VERBOSE=1``,
    or a ``TF_CPP_MIN_LOG_LEVEL`` the user set."""
    set_by_us = _we_set_log_level or (
        os.environ.get(_OURS_ENV) is not None
        and os.environ.get(_OURS_ENV) == os.environ.get(TF_LOG_LEVEL_ENV))
    own_level = TF_LOG_LEVEL_ENV in os.environ and not set_by_us
    return verbose or os.environ.get(VERBOSE_ENV, "") not in ("", "0") or own_level


def has_gpu_device() -> bool:
    """Whether the machine has a GPU device node (NVIDIA, or WSL's GPU bridge).

    Where one exists a failing cuInit is a real driver problem, so it is never hidden.
    """
    return bool(glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/dxg"))


def quiet_tensorflow_start(verbose: bool = False) -> None:
    """Hides TensorFlow's start-up noise from the first ``import tensorflow`` on.

    Call it before anything imports TensorFlow; it imports nothing itself, so a command
    that never needs TensorFlow (``list``, ``--help``) stays instant.

    The first call decides for the process: the command line calls it with the user's
    ``--verbose`` before the API module (which calls it too, for notebooks) loads.

    Args:
        verbose: ``--verbose``: change nothing.
    """
    global _we_set_log_level, _decided
    if _decided:
        return
    _decided = True
    if wants_tensorflow_messages(verbose) or "tensorflow" in sys.modules:
        return
    os.environ[TF_LOG_LEVEL_ENV] = os.environ[_OURS_ENV] = "2"
    _we_set_log_level = True
    patterns = START_UP_NOISE + (() if has_gpu_device() else NO_GPU_NOISE)
    _QuietImport.install(patterns)


@contextmanager
def filtered_stderr(patterns: Sequence[re.Pattern]) -> Iterator[None]:
    """Drops the lines matching ``patterns`` from file descriptor 2; the rest pass at once.

    File descriptor 2, not ``sys.stderr``: TensorFlow's C++ logging writes there directly.
    A line is held back only until its newline.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    relay = threading.Thread(target=_relay, args=(read_end, saved, patterns), daemon=True)
    relay.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        # fd 2 held the pipe's last write end: the relay reads to the end, then stops.
        os.dup2(saved, 2)
        relay.join()
        os.close(saved)


def _relay(read_end: int, target: int, patterns: Sequence[re.Pattern]) -> None:
    pending = b""
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if not any(pattern.match(line) for pattern in patterns):
                    _write_all(target, line + b"\n")
    if pending and not any(pattern.match(pending) for pattern in patterns):
        _write_all(target, pending)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


class _QuietImport(FirstImport):
    """Runs the first import of ``tensorflow`` inside :func:`filtered_stderr`."""

    def __init__(self, patterns: Sequence[re.Pattern]):
        super().__init__()
        self.patterns = patterns

    def names(self) -> frozenset[str]:
        return frozenset({"tensorflow"})

    @contextmanager
    def around(self, module) -> Iterator[None]:
        with filtered_stderr(self.patterns):
            yield
            # The runtime looks for GPUs here, once, instead of mid-run: the cuInit line.
            module.config.list_physical_devices("GPU")
