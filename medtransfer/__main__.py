"""``python -m medtransfer`` is the ``medtransfer`` command; the console script calls
:func:`main` here too.

This module imports nothing of medtransfer before its ``try``: Ctrl-C while the command
line is still importing (``medtransfer.cli`` takes about 0.1 s) ends like Ctrl-C at any
other moment, with exit code 130 and no traceback.
"""

import os  # loaded by Python's start-up already, as sys is: instant
import sys

INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command ended by Ctrl-C


def main() -> int:
    """Runs the command line; returns the exit code (130 after Ctrl-C, whenever it came)."""
    try:
        from medtransfer.cli import main as command_line

        return command_line()
    except KeyboardInterrupt:
        # Ctrl-C before the command's own handler was reached (or while it printed).
        _exit_at_ctrl_c()
        print("medtransfer: interrupted.", file=sys.stderr)
        return INTERRUPTED
    finally:
        # From here to the exit (atexit handlers, TensorFlow's teardown) Python runs no
        # code of ours that could catch a KeyboardInterrupt: Ctrl-C then ends at once.
        _exit_at_ctrl_c()


def _exit_at_ctrl_c() -> None:
    import signal  # not at the top: importing it takes long enough to be interrupted

    signal.signal(signal.SIGINT, _exit_interrupted)


def _exit_interrupted(signum, frame) -> None:
    try:
        sys.stdout.flush()
        print("medtransfer: interrupted.", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass  # a closed stream: nothing more can be said
    os._exit(INTERRUPTED)


if __name__ == "__main__":
    raise SystemExit(main())
