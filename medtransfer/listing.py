"""What ``medtransfer list`` and ``mt.list_nets`` / ``mt.list_datasets`` show, gathered once.

Registries and ``manifest.json`` files only, as plain rows: neither TensorFlow nor pandas
loads, so ``medtransfer list`` answers at once; the API makes DataFrames of the same rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medtransfer.data.catalog import prepared_datasets
from medtransfer.data.registry import DATASETS
from medtransfer.models import NETS

SPLITS = ("train", "validation", "test")


def net_rows() -> list[dict[str, Any]]:
    """One row per registered net: name, default_input, min_input, imagenet, blocks (what
    ``similarity`` and ``gradcam`` call a block), description."""
    return [{"name": net.name, "default_input": net.default_input_size,
             "min_input": net.min_input_size, "imagenet": net.imagenet,
             "blocks": net.blocks, "description": net.description} for net in NETS]


def dataset_rows(data_dir: str | Path) -> list[dict[str, Any]]:
    """One row per registered dataset, then per other dataset prepared under ``data_dir``.

    Each row: name, layout, classes (None when the data decides), lr (the default
    learning rate), prepared (``bundled``, ``yes`` or ``no``), registered, train,
    validation and test (images per split; None when not prepared), augmentation (the
    default augmentations, or ``none``), description.
    """
    prepared = {summary.name: summary for summary in prepared_datasets(data_dir)}
    layouts = {spec.name: spec for spec in DATASETS}
    rows = []
    for spec in DATASETS:
        summary = prepared.pop(spec.name, None)
        rows.append({
            "name": spec.name, "layout": spec.name,
            "classes": spec.num_classes or (len(summary.class_names) if summary else None),
            "lr": spec.default_lr,
            "prepared": "bundled" if not spec.needs_source else ("yes" if summary else "no"),
            "registered": True, **_split_sizes(summary),
            "augmentation": ", ".join(name for name in ("flips", "noise", "color")
                                      if getattr(spec.augment, name)) or "none",
            "description": spec.description,
        })
    for summary in prepared.values():
        spec = layouts.get(summary.layout)
        rows.append({
            "name": summary.name, "layout": summary.layout,
            "classes": len(summary.class_names), "lr": spec.default_lr if spec else None,
            "prepared": "yes", "registered": False, **_split_sizes(summary),
            "augmentation": None, "description": "classes: " + ", ".join(summary.class_names),
        })
    return rows


def _split_sizes(summary) -> dict[str, int | None]:
    return {split: (summary.totals.get(split, 0) if summary else None) for split in SPLITS}
