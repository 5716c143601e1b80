"""A child run that dies with the sweep that started it (Linux).

The sweep names itself in the child's environment; the child, first thing, asks the
kernel to kill it when that parent dies (``PR_SET_PDEATHSIG``), even by SIGKILL.
Otherwise a killed sweep would leave its run training alone and holding the run's lock,
and the same command started again could not resume it.

The child does this itself, not in ``subprocess``'s ``preexec_fn``: that runs Python
between fork and exec in a copy of a process with threads, which the keras-tuner
worker's gRPC threads make unsafe (seen: the child aborted with "epoll_wait error: Bad
file descriptor" before it ran).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT_ENV = "MEDTRANSFER_DIE_WITH_PARENT"
_PR_SET_PDEATHSIG = 1


def child_environment() -> dict[str, str]:
    """This process's environment, naming it as the parent its child dies with."""
    return {**os.environ, PARENT_ENV: str(os.getpid())}


def die_with_parent_if_asked() -> None:
    """In a child started with :func:`child_environment`: die when that parent dies.

    The variable is removed, so that this process's own children do not take it for
    theirs.
    """
    parent = os.environ.pop(PARENT_ENV, None)
    if parent is None or sys.platform != "linux":
        return
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(parent):  # the parent died before prctl took effect
        os._exit(1)
