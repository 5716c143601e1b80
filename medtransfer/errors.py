"""Errors a user can fix, and the one way names are looked up.

A :class:`MedtransferError` is bad input: the CLI prints its message as one paragraph
and exits with code 2, without a traceback. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from pathlib import Path


class MedtransferError(Exception):
    """A problem with the user's input or environment, explained in one paragraph.

    The message says what was wrong, what is valid, and what to do next.
    """

    exit_code = 2


LIST_HELP = "Run 'medtransfer list' to see them with their defaults."


def look_up_option(name: str, choices: Iterable[str], kind: str, *, see: str = LIST_HELP) -> str:
    """Returns ``name`` if it is one of ``choices``, else fails with a did-you-mean.

    Args:
        name: what the user asked for.
        choices: the valid names.
        kind: what the names are, for the message ("net", "dataset", ...).
        see: the last sentence: where to read about the valid names.

    Returns:
        ``name`` itself.

    Raises:
        MedtransferError: ``name`` is not one of ``choices``.
    """
    choices = list(choices)
    if name in choices:
        return name
    raise MedtransferError(unknown_name_message(name, choices, kind, see=see))


def unknown_name_message(name: str, choices: Iterable[str], kind: str, *,
                         see: str = LIST_HELP) -> str:
    """The one wording of every unknown name: what was asked, a did-you-mean, the valid ones.

    ``-`` and ``_`` count as the same letter in the did-you-mean, so that ``--image_size``
    (a config file's spelling) finds ``--image-size``.
    """
    choices = list(choices)
    by_spelling = {choice.replace("_", "-"): choice for choice in choices}
    close = difflib.get_close_matches(str(name).replace("_", "-"), by_spelling, n=1, cutoff=0.5)
    hint = f" Did you mean '{by_spelling[close[0]]}'?" if close else ""
    return f"Unknown {kind} '{name}'.{hint} Valid {kind}s: {', '.join(choices)}. {see}".rstrip()


def working_directory_note(path: str | Path) -> str:
    """`` (relative to the working directory /x)`` for a relative path, else ``""``.

    A path from a config file is read from where the command runs, not from where the
    file is: an error about a missing relative path says from where it was read.
    """
    path = Path(os.path.expanduser(str(path)))
    return "" if path.is_absolute() else f" (relative to the working directory {Path.cwd()})"
