"""Writes that never leave a half-written file behind.

A reader (``sweep``, ``report``, a second ``prepare``) trusts ``metrics.json`` and
``manifest.json`` by their presence, so they are written to a temporary file in the same
folder and renamed over the target: the rename is atomic on POSIX file systems.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replaces ``path`` with ``text`` in one atomic rename.

    The file gets the permissions a plain ``open(path, "w")`` would give (0666 less the
    umask, so 0644 usually): ``mkstemp`` makes it 0600, which would hide results in a
    shared ``--logdir`` from the rest of the team.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, 0o666 & ~_umask())
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    # The umask can only be read by setting it; set it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Writes ``data`` as indented JSON (non-ASCII kept readable) in one atomic rename."""
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
