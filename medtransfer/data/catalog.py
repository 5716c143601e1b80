"""What is prepared under a data root, read from the ``manifest.json`` files alone.

``medtransfer list`` and the did-you-mean of ``run --dataset`` need only names, layouts,
classes and counts, so this module imports neither TensorFlow nor pandas: ``list`` answers
at once. Loading a prepared dataset for training is :mod:`medtransfer.data.prepared`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtransfer.fileio import read_json

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class PreparedSummary:
    """One prepared folder, as its manifest describes it.

    Attributes:
        name: the folder name, which ``run --dataset`` uses.
        layout: the layout it was prepared from (``cancer``, ``folder``, ...).
        class_names: the classes, in label order.
        totals: images per split (``train``, ``validation``, ``test``).
    """

    name: str
    layout: str
    class_names: list[str]
    totals: dict[str, int]


def prepared_datasets(data_dir: str | Path) -> list[PreparedSummary]:
    """Every folder directly under ``data_dir`` whose ``manifest.json`` reads, by name.

    A manifest that cannot be read is left out here; ``run --dataset`` on that folder
    explains what is wrong with it.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        return []
    found = []
    for folder in sorted(data_dir.iterdir()):
        manifest = _read(folder / MANIFEST)
        if manifest is None:
            continue
        found.append(PreparedSummary(
            name=folder.name,
            layout=str(manifest.get("layout", "?")),
            class_names=[str(name) for name in manifest.get("class_names", [])],
            totals={split: int(count) for split, count in manifest.get("totals", {}).items()
                    if split != "all"},
        ))
    return found


def _read(path: Path) -> dict[str, Any] | None:
    try:
        manifest = read_json(path)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None
