"""``medtransfer gradcam``: where the network looks, as Grad-CAM heatmaps (Selvaraju et al. 2017).

The gradient of a class score (the output layer's logit, before the softmax) with respect
to the backbone's last feature map, averaged over its positions, weighs the feature map's
channels; their weighted sum, through a ReLU, is the heatmap. It is upsampled (bilinear)
to the input size and divided by its maximum, so it lies in [0, 1]. The backbone is a
model nested in the classifier: the image goes through it, then through the head layers
one by one, all under one gradient tape, so the gradient reaches the backbone's output
exactly as the classifier computes it (BatchNorm and dropout in inference mode).

A heatmap is as coarse as the last feature map: small_cnn and CBR at 32 px end in 2x2,
at 128 px in 8x8. At 1x1 (small_cnn below 32 px) the map has one position: the heatmap
is the same everywhere and says nothing about where the network looks, and the command
says so (on stderr and in the figure's title).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medtransfer.errors import look_up_option
from medtransfer.inspect.plots import describe_runs, note
from medtransfer.inspect.sample import sample_test_images
from medtransfer.plotting import check_format, save_figure, wrap
from medtransfer.training.rundir import open_run

GRID_COLUMNS = 4


@dataclass(frozen=True)
class Heatmaps:
    """Grad-CAM of a batch of images.

    Attributes:
        heatmaps: ``(n, height, width)`` in [0, 1], the input's size.
        logits: ``(n, classes)`` the class scores the gradients start from.
        probabilities: ``(n, classes)`` their softmax, the classifier's output.
        classes: ``(n,)`` the class each heatmap explains.
    """

    heatmaps: np.ndarray
    logits: np.ndarray
    probabilities: np.ndarray
    classes: np.ndarray


def gradcam(classifier, images: np.ndarray, class_index: int | None = None,
            multi_label: bool = False) -> Heatmaps:
    """Grad-CAM heatmaps of ``images`` for one class, or for each image's predicted class.

    Args:
        classifier: a classifier built by ``build_classifier`` (float32).
        images: ``(n, height, width, 3)`` scaled as the classifier expects.
        class_index: the class to explain; ``None``: each image's most probable class.
        multi_label: the classifier has a sigmoid per finding: a class is a finding, its
            probability the sigmoid of its logit.

    Returns:
        The heatmaps (zero everywhere when no position raises the class score) with the
        probabilities and the explained classes.
    """
    import tensorflow as tf

    from medtransfer.models.classifier import get_backbone, head_layers

    backbone = get_backbone(classifier)
    *hidden_layers, output_layer = head_layers(classifier)
    images = tf.convert_to_tensor(images, tf.float32)
    with tf.GradientTape() as tape:
        features = backbone(images, training=False)
        tape.watch(features)
        hidden = features
        for layer in hidden_layers:
            hidden = layer(hidden, training=False)
        logits = tf.matmul(hidden, output_layer.kernel) + output_layer.bias
        probabilities = tf.sigmoid(logits) if multi_label else tf.nn.softmax(logits)
        if class_index is None:
            # From the logits: a barely trained net's probabilities can tie in float32.
            classes = tf.argmax(logits, axis=1, output_type=tf.int32)
        else:
            classes = tf.fill([tf.shape(images)[0]], class_index)
        # Images do not interact in inference mode, so one sum gives each image's gradient.
        score = tf.reduce_sum(tf.gather(logits, classes, axis=1, batch_dims=1))
    gradients = tape.gradient(score, features)
    weights = tf.reduce_mean(gradients, axis=(1, 2))
    cams = tf.nn.relu(tf.einsum("nhwc,nc->nhw", features, weights))
    cams = tf.image.resize(cams[..., None], images.shape[1:3], method="bilinear")[..., 0]
    peaks = tf.reduce_max(cams, axis=(1, 2), keepdims=True)
    cams = tf.math.divide_no_nan(cams, peaks)
    return Heatmaps(np.clip(cams.numpy(), 0.0, 1.0), logits.numpy(), probabilities.numpy(),
                    classes.numpy())


@dataclass(frozen=True)
class GradcamResult:
    """What ``run_gradcam`` wrote: the figure, the heatmaps with their images, the size
    of the last feature map, and what the user was told (a 1x1 map)."""

    figure: Path
    ids: list[str]
    labels: np.ndarray
    heatmaps: Heatmaps
    feature_map: tuple[int, int]
    notes: list[str]


def run_gradcam(run_dir: str | Path, out: str | Path | None = None, images: int = 16,
                class_name: str | None = None, seed: int = 0,
                figure_format: str = "png") -> GradcamResult:
    """Grad-CAM of the best checkpoint on a seeded sample of test images, as a grid.

    Args:
        run_dir: a complete run directory.
        out: folder for ``gradcam.<format>``; default ``<run>/inspect``.
        images: how many test images (a seeded sample).
        class_name: the class to explain in every image; default each image's predicted
            class.
        seed: seeds the sample.
        figure_format: ``png`` (200 dpi), ``pdf`` or ``svg``.

    Returns:
        The figure written and the heatmaps.

    Raises:
        MedtransferError: not a complete run, an unknown class (with the valid ones), or
            fewer than one image asked for.
    """
    figure_format = check_format(figure_format)
    run = open_run(run_dir, "gradcam")
    sample = sample_test_images(run, images, seed)
    class_index = None
    # A multi-label run's outputs are its findings; the sample's classes are one finding's.
    outputs = run.class_names()
    if class_name is not None:
        class_index = outputs.index(look_up_option(
            str(class_name), outputs, "finding" if run.config.multi_label else "class"))
    model = run.model()
    feature_map = _feature_map_size(model)
    notes = []
    if feature_map == (1, 1):
        notes.append(note(
            f"the backbone's last feature map is 1x1 at {run.config.image_size} px: the "
            "heatmap is the same everywhere and carries no location. Train at a larger "
            "--image-size (small_cnn: 32 px or more gives 2x2) to see where the net looks."))
    parts = [gradcam(model, batch, class_index, run.config.multi_label)
             for batch in sample.batches(run)]
    result = Heatmaps(*(np.concatenate([getattr(part, name) for part in parts])
                        for name in Heatmaps.__dataclass_fields__))
    out = Path(out) if out is not None else run.path / "inspect"
    title = f"Grad-CAM: {describe_runs([run.config])[0]}"
    if feature_map == (1, 1):
        title += " (last feature map 1x1: no location)"
    truths = sample.findings or [sample.class_names[label] for label in sample.labels]
    figure = gradcam_figure(sample.images(), truths, outputs, result, title)
    return GradcamResult(save_figure(figure, out / f"gradcam.{figure_format}"), sample.ids,
                         sample.labels, result, feature_map, notes)


def _feature_map_size(classifier) -> tuple[int, int]:
    """Height and width of the backbone's last feature map, the heatmap's resolution."""
    from medtransfer.models.classifier import get_backbone

    height, width = get_backbone(classifier).output.shape[1:3]
    return int(height), int(width)


def gradcam_figure(images: np.ndarray, truths: list[str], class_names: list[str],
                   result: Heatmaps, title: str):
    """The images in a grid (4 a row), each under its heatmap, with its true class (a
    multi-label run: its findings) and the probability of the class explained
    (``class_names``: the model's outputs)."""
    from matplotlib.figure import Figure

    columns = min(GRID_COLUMNS, len(images))
    rows = math.ceil(len(images) / columns)
    figure = Figure(figsize=(2.3 * columns, 2.5 * rows + 0.4), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index >= len(images):
            continue
        explained = int(result.classes[index])
        ax.imshow(images[index], interpolation="nearest")
        ax.imshow(result.heatmaps[index], cmap="jet", alpha=0.45, vmin=0, vmax=1,
                  interpolation="bilinear")
        ax.set_title(wrap(f"true {truths[index] or 'none'}\n"
                          f"p({class_names[explained]}) = "
                          f"{result.probabilities[index, explained]:.2f}", 2.1, 8), fontsize=8)
    figure.suptitle(wrap(title, 2.3 * columns - 0.2, 9), fontsize=9)
    return figure
