"""What a run predicts from its dataset's labels: the task.

A single-label dataset gives a single-label task: its classes (or the ``--classes``
kept), a softmax head, categorical cross-entropy, primary metric the micro AUC. A
multi-label dataset gives, by default, a multi-label task: the findings (``--findings``,
else the dataset's default findings), a sigmoid per finding, binary cross-entropy with
unknown labels masked out, primary metric the mean of the findings' AUCs. With
``--any-finding`` it gives the single-label task healthy vs any finding: an image is
``finding`` when any chosen finding is present, ``healthy`` when every chosen finding is
known absent, and left out of the run when none is present but some are unknown (its
class is not known). Two softmax classes rather than one sigmoid, so that it is the same
kind of task as a binary single-label dataset (PneumoniaMNIST's normal / pneumonia): it
has the same metrics, the same head shape to transfer, and its numbers compare.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from medtransfer.config import RunConfig
from medtransfer.data.prepared import PreparedDataset
from medtransfer.errors import MedtransferError, look_up_option
from medtransfer.training.metrics import UNKNOWN

ANY_FINDING_CLASSES = ("healthy", "finding")
"""The classes of ``--any-finding``, in output order."""


@dataclass(frozen=True)
class Task:
    """A run's task on its dataset.

    Attributes:
        multi_label: a sigmoid per output, masked binary cross-entropy, mean AUC.
        class_names: the model's outputs in order: classes, findings, or
            :data:`ANY_FINDING_CLASSES`.
        keep_labels: the dataset's label indices the task reads (``--classes`` of a
            single-label dataset, the findings' columns of a multi-label one); None for all.
        label_length: the number of findings in a multi-label dataset's shards (the
            length of each stored label list); None for a single-label dataset.
        any_finding: ``--any-finding``.
    """

    multi_label: bool
    class_names: list[str]
    keep_labels: list[int] | None
    label_length: int | None
    any_finding: bool = False

    @property
    def num_outputs(self) -> int:
        return len(self.class_names)


def run_task(config: RunConfig, dataset: PreparedDataset) -> Task:
    """The task of a run of ``config`` on ``dataset``.

    Raises:
        MedtransferError: ``--findings`` or ``--any-finding`` on a single-label dataset,
            ``--classes`` on a multi-label one, or a finding the dataset does not have
            (with a did-you-mean).
    """
    if not dataset.multi_label:
        if config.findings or config.any_finding:
            option = "--findings" if config.findings else "--any-finding"
            raise MedtransferError(
                f"{option} needs a multi-label dataset, but '{dataset.name}' is single-label "
                f"(each image one class: {', '.join(dataset.class_names)}). Use --classes to "
                "keep some of its classes, or a multi-label dataset such as digits_pairs."
            )
        return Task(False, list(config.classes or dataset.class_names),
                    dataset.label_indices(config.classes), None)
    if config.classes:
        raise MedtransferError(
            f"--classes keeps classes of a single-label dataset, but '{dataset.name}' is "
            f"multi-label (findings {', '.join(dataset.class_names)}). Use --findings to "
            "choose findings, and --any-finding for healthy vs any finding."
        )
    findings = list(config.findings or _default_findings(dataset))
    for name in findings:
        look_up_option(name, dataset.class_names, "finding", see=(
            f"--findings takes finding names of dataset '{dataset.name}', comma-separated."))
    columns = [dataset.class_names.index(name) for name in findings]
    if config.any_finding:
        return Task(False, list(ANY_FINDING_CLASSES), columns, dataset.num_classes, True)
    return Task(True, findings, columns, dataset.num_classes)


def _default_findings(dataset: PreparedDataset) -> list[str]:
    return list(dataset.spec.default_findings or dataset.class_names)


def task_frame(task: Task, dataset: PreparedDataset, split: str) -> pd.DataFrame:
    """The rows of ``split`` the task uses, in shard order: the kept classes of a
    single-label dataset; every image of a multi-label one, except under
    ``--any-finding`` the images whose class is unknown (no chosen finding present and
    some unknown)."""
    if task.label_length is None:
        names = task.class_names if task.keep_labels is not None else None
        return dataset.split_frame(split, names)
    frame = dataset.split_frame(split)
    if not task.any_finding:
        return frame
    labels = task_labels(task, dataset, frame, keep_unknown=True)
    return frame[labels != UNKNOWN].reset_index(drop=True)


def task_labels(task: Task, dataset: PreparedDataset, frame: pd.DataFrame, *,
                keep_unknown: bool = False) -> np.ndarray:
    """The task's labels of ``frame``'s rows: class indices ``(n,)`` for a single-label
    task, the findings' ``(n, F)`` matrix of 1, 0 and -1 for a multi-label one.

    Under ``--any-finding``, 1 (finding) when any chosen finding is present, 0 (healthy)
    when all are known absent, else -1: only with ``keep_unknown`` (:func:`task_frame`
    has left those rows out).
    """
    if task.label_length is None:
        return frame["label"].map({name: i for i, name in enumerate(task.class_names)}) \
            .to_numpy(dtype=np.int64)
    matrix = dataset.label_matrix(frame)[:, task.keep_labels].astype(np.int64)
    if not task.any_finding:
        return matrix
    labels = np.where((matrix == 1).any(axis=1), 1,
                      np.where((matrix == 0).all(axis=1), 0, UNKNOWN))
    if not keep_unknown and (labels == UNKNOWN).any():
        raise ValueError("rows of unknown class: select them with task_frame first")
    return labels
