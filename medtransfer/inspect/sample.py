"""A fixed, seeded sample of a run's test images, the input of every inspect command."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from medtransfer.errors import MedtransferError, look_up_option
from medtransfer.training.rundir import TrainedRun


@dataclass(frozen=True)
class ImageSample:
    """Test images of one run, in split order.

    Attributes:
        pixels: ``(n, size, size, 3)`` uint8, as the run's pipeline resized them (kept
            as bytes: a thousand 299 px images fit in 270 MB).
        labels: ``(n,)`` class indices.
        ids: the image ids.
        class_names: the dataset's classes; a label is a position in it. For a
            multi-label run, the classes of one finding (see :func:`finding_classes`).
        findings: a multi-label run's findings present in each image, ``|``-joined
            (to write beside it); None for a single-label run.
    """

    pixels: np.ndarray
    labels: np.ndarray
    ids: list[str]
    class_names: list[str]
    findings: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def images(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Images ``start:stop`` as float32 pixels in [0, 1] (to draw them)."""
        return self.pixels[start:stop].astype(np.float32) / 255.0

    def batches(self, run: TrainedRun, batch_size: int = 32) -> Iterator[np.ndarray]:
        """The images scaled as ``run``'s model expects them, ``batch_size`` at a time."""
        for start in range(0, len(self), batch_size):
            yield np.asarray(run.to_model_input(self.images(start, start + batch_size)))


def finding_classes(finding: str) -> list[str]:
    """The classes a multi-label run's images get for one finding: absent, present,
    unknown (a masked label)."""
    return [f"no {finding}", finding, f"{finding} unknown"]


def sample_test_images(run: TrainedRun, max_images: int, seed: int = 0,
                       min_images: int = 1, finding: str | None = None) -> ImageSample:
    """Draws up to ``max_images`` test images of ``run``, uniformly without replacement.

    The draw depends only on the seed and the size of the test split, so runs on the
    same prepared dataset get the same images and their pictures compare.

    Args:
        run: an opened run.
        max_images: how many images at most; the whole split when it is smaller.
        seed: seeds the draw.
        min_images: fewer images than this (a tiny test split) is an error.
        finding: a multi-label run's images are labelled by this finding (absent,
            present or unknown, :func:`finding_classes`); default its first finding.

    Raises:
        MedtransferError: ``max_images`` or the test split is below ``min_images``, or
            an unknown finding (with a did-you-mean), or a finding for a single-label run.
    """
    from medtransfer.training.task import run_task, task_frame

    multi_label = run.config.multi_label
    run_findings = list(run.config.findings or ()) if multi_label else []
    if finding is not None and not multi_label:
        raise MedtransferError(
            f"--finding {finding}: the run '{run.path.name}' is single-label; its images "
            "are labelled by their class. Leave --finding out, or pass a multi-label run.")
    column = run_findings.index(look_up_option(
        finding, run_findings, "finding")) if finding is not None else 0
    if max_images < min_images:
        raise MedtransferError(
            f"The number of images must be at least {min_images}, got {max_images}. "
            "Pass a larger number."
        )
    # The run's own test split: only its classes under --classes, labelled as it saw them.
    dataset = run.dataset()
    total = len(task_frame(run_task(run.config, dataset), dataset, "test"))
    if total < min_images:
        raise MedtransferError(
            f"The run's test split ({run.config.dataset}) holds {total} images; this needs "
            f"at least {min_images}. Inspect a run on a larger dataset."
        )
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(total, size=min(max_images, total), replace=False))
    wanted = set(chosen.tolist())
    pixels, labels, ids, present = [], [], [], []
    position = 0
    for images, targets, batch_ids in run.split("test", scaled=False):
        for index in range(len(batch_ids)):
            if position + index in wanted:
                pixels.append(np.round(images[index].numpy() * 255.0).astype(np.uint8))
                target = targets[index].numpy()
                if multi_label:
                    # Absent 0, present 1, unknown (-1) the third class.
                    labels.append({0: 0, 1: 1}.get(int(target[column]), 2))
                    present.append("|".join(name for name, value
                                            in zip(run_findings, target, strict=True)
                                            if value == 1))
                else:
                    labels.append(int(np.argmax(target)))
                ids.append(batch_ids[index].numpy().decode())
        position += len(batch_ids)
        if position > chosen[-1]:
            break
    if multi_label:
        return ImageSample(np.stack(pixels), np.array(labels), ids,
                           finding_classes(run_findings[column]), present)
    return ImageSample(np.stack(pixels), np.array(labels), ids, run.class_names())


def predict(model, batch: np.ndarray):
    """``model``'s output (a list for several outputs) on ``batch``, computed eagerly.

    Keras' ``predict_on_batch`` traces a ``tf.function`` for every model and every batch
    shape (the last batch is shorter), and TensorFlow warns of "retracing" once five
    traces of its one predict step come within ten calls: an inspect command builds a
    model or two per run. Calling the model eagerly traces nothing, and costs about the
    same (measured in CPU seconds over batches of 32 on a fresh model, trace included:
    small_cnn at 128 px 3.7 against 3.6, mobilenet at 224 px 2.5 against 2.6).
    """
    return model(batch, training=False)
