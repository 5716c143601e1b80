"""Test-only: Ctrl-C at a chosen moment of a command's start-up or exit.

Put this folder on PYTHONPATH and set MEDTRANSFER_TEST_SIGINT_AT: to a module name, and
the process sends itself SIGINT (what Ctrl-C in a terminal sends) when that module is
first imported; to ``exit``, and it does so from its last atexit handler, after the
command has returned. Python imports ``sitecustomize`` at start-up, before any of
medtransfer, so a test interrupts a known moment instead of guessing one with sleeps.
"""

import atexit
import importlib.abc
import os
import signal
import sys

AT = os.environ.get("MEDTRANSFER_TEST_SIGINT_AT")


def _interrupt():
    os.kill(os.getpid(), signal.SIGINT)
    # Python runs its handler for the signal at the next instruction of the main thread.
    for _ in range(1000):
        pass


class _AtImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == AT:
            sys.meta_path.remove(self)
            _interrupt()
        return None


if AT == "exit":
    atexit.register(_interrupt)  # registered first, so it runs last
elif AT:
    sys.meta_path.insert(0, _AtImport())
