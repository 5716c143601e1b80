"""``medtransfer pretrain autoencoder``: the backbone learns to reconstruct images, no labels.

The MedMNIST transfer exercise (``../shared/reference/medmnist-transfer-exercise.txt``)
turns its classifier's convolutional part into the encoder of an autoencoder, trains it
to reproduce the training images, reports the test MSE, PSNR and SSIM, and starts a new
classifier from the encoder. Here:

- encoder: the net's backbone (``init glorot``), exactly as a run builds it, nested as
  ``backbone`` so that ``--init DIR`` loads it into a classifier;
- decoder: the backbone mirrored: from the backbone's output back through the shapes of
  its blocks (``NetSpec.block_outputs``) in reverse, each step a bilinear resize to the
  block's height and width and a 3x3 convolution with the block's channels and ReLU, then
  to the input size and 3 channels with a sigmoid (pixels are in [0, 1]). No BatchNorm in
  the decoder: only the encoder's BatchNorm statistics are re-estimated before each
  evaluation (precise BatchNorm, as runs do), and the decoder is thrown away;
- loss: mean squared error between the image and its reconstruction; Adam;
- images: the training split (``--train-size`` a seeded subset), no augmentation, pixels
  in [0, 1] (``--scaling unit``, the default of runs); labels are never read;
- checkpoint: the epoch with the lowest validation MSE (``best.weights.h5``, the whole
  autoencoder), then test MSE (mean over pixels), PSNR and SSIM (``tf.image.psnr`` and
  ``tf.image.ssim``, maximum value 1, averaged over the test images);
- a killed pretraining starts again from its first epoch (pretrainings are short); a
  complete one is not trained again.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from medtransfer.config import RunConfig, save_config
from medtransfer.data.pipeline import make_dataset, select_train_subset, without_autograph
from medtransfer.fileio import write_text_atomic
from medtransfer.models.classifier import BACKBONE_LAYER
from medtransfer.models.registry import get_net
from medtransfer.plotting import save_figure
from medtransfer.pretraining.plan import (
    DEFAULT_EPOCHS,
    pretrain_config,
    pretrain_dir,
    pretrain_epochs,
)
from medtransfer.training.batchnorm import PRECISE_BN_IMAGES, PreciseBatchNorm
from medtransfer.training.resolve import resolve_config
from medtransfer.training.run import (
    holding,
    make_training_dataset,
    run_class_names,
    training_frame,
)
from medtransfer.training.rundir import RunDirectory
from medtransfer.training.schedule import make_optimizer
from medtransfer.training.strategy import set_op_determinism
from medtransfer.version import __version__

METHOD = "autoencoder"
HISTORY_COLUMNS = ("epoch", "loss", "val_mse", "seconds")
SSIM_FILTER = 11  # tf.image.ssim's default window; smaller for smaller images
SHOWN_IMAGES = 5  # the exercise's figure: the first five test images and their outputs


@dataclass(frozen=True)
class PretrainResult:
    """What ``pretrain_autoencoder`` did.

    Attributes:
        path: the pretraining directory, for ``run --init``.
        metrics: its metrics.json (test_mse, test_psnr, test_ssim, best_epoch, ...).
        figure: ``reconstructions.png``: test images above their reconstructions.
        skipped: it was complete already and was not trained again.
    """

    path: Path
    metrics: dict[str, Any]
    figure: Path
    skipped: bool = False


def build_autoencoder(backbone: keras.Model, net: str) -> keras.Model:
    """The backbone (renamed ``backbone``) under a mirrored decoder: images -> images.

    Args:
        backbone: the encoder, as ``NetSpec.build_backbone`` makes it (4D output).
        net: its registered name (for its blocks).
    """
    backbone.name = BACKBONE_LAYER
    height, width, _ = backbone.input_shape[1:]
    blocks = get_net(net).block_outputs(backbone)
    shapes = [tuple(backbone.get_layer(name).output.shape[1:]) for name in blocks]
    top = tuple(backbone.output.shape[1:])
    # Back through each block below the top one, then to the image.
    targets = [shape for shape in reversed(shapes) if shape != top] + [(height, width, 3)]
    inputs = keras.Input(shape=backbone.input_shape[1:], name="image")
    x = backbone(inputs)
    for index, (rows, columns, channels) in enumerate(targets, start=1):
        last = index == len(targets)
        if tuple(x.shape[1:3]) != (rows, columns):
            x = keras.layers.Resizing(rows, columns, interpolation="bilinear",
                                      name=f"decoder{index}_resize")(x)
        x = keras.layers.Conv2D(channels, 3, padding="same",
                                activation="sigmoid" if last else "relu",
                                name="decoder_output" if last else f"decoder{index}_conv")(x)
    return keras.Model(inputs, x, name="autoencoder")


@without_autograph
def as_target(images, _):
    """An autoencoder's batch: the images are their own target (the labels are dropped)."""
    return images, images


def reconstruction_scores(images, reconstructions) -> dict[str, np.ndarray]:
    """Per image: MSE (mean over its pixels and channels), PSNR and SSIM (``tf.image``,
    maximum value 1) of reconstructions of ``images`` in [0, 1], ``(batch, h, w, c)``.

    SSIM's window is 11 pixels, or the image side when smaller. An image reconstructed
    exactly has an infinite PSNR.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    reconstructions = tf.convert_to_tensor(reconstructions, tf.float32)
    window = min(SSIM_FILTER, int(images.shape[1]), int(images.shape[2]))
    return {
        "mse": tf.reduce_mean(tf.square(images - reconstructions), axis=[1, 2, 3]).numpy(),
        "psnr": tf.image.psnr(images, reconstructions, max_val=1.0).numpy(),
        "ssim": tf.image.ssim(images, reconstructions, max_val=1.0,
                              filter_size=window).numpy(),
    }


def pretrain_autoencoder(config: RunConfig, *, epochs: int = DEFAULT_EPOCHS,
                         overwrite: bool = False) -> PretrainResult:
    """Trains the net's backbone as an autoencoder's encoder on the training images.

    Args:
        config: dataset, net, image_size, seed, lr (default 1e-3), batch_size,
            train_size, classes, experiment, logdir, data_dir, ... (see
            ``plan.PRETRAIN_FIELDS``; the other fields are the classifier's, ignored).
        epochs: epochs of training.
        overwrite: train again over a complete pretraining.

    Returns:
        The pretraining directory, its metrics and its figure.

    Raises:
        MedtransferError: bad options (before training), or another process trains
            into the same directory.
    """
    config, dataset = resolve_config(pretrain_config(config, epochs))
    directory = RunDirectory(pretrain_dir(config, METHOD))
    figure = directory.path / "reconstructions.png"
    if directory.is_complete() and not overwrite:
        print(f"{directory.path} already holds a complete pretraining; nothing to do (use "
              "--overwrite to train it again).")
        return PretrainResult(directory.path, directory.read_metrics() or {}, figure, True)
    with holding(directory, clear=True):  # no resume: a killed pretraining starts again
        return _pretrain(config, dataset, directory, figure)


def _pretrain(config: RunConfig, dataset, directory: RunDirectory,
              figure: Path) -> PretrainResult:
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        set_op_determinism(True)
    train_frame = training_frame(config, dataset)
    batchnorm_frame = train_frame if len(train_frame) <= PRECISE_BN_IMAGES else \
        select_train_subset(train_frame, PRECISE_BN_IMAGES, config.seed)
    epochs = pretrain_epochs(config)
    common = dict(num_classes=len(run_class_names(config, dataset)),
                  image_size=config.image_size, batch_size=config.batch_size,
                  cache_limit_bytes=config.cache_limit_bytes,
                  keep_labels=dataset.label_indices(config.classes))
    # The image is its own target; no augmentation (make_training_dataset reads augment).
    train = make_training_dataset(config.replace(augment=False), dataset, train_frame,
                                  batch_size=config.batch_size,
                                  cache_limit_bytes=config.cache_limit_bytes, epochs=epochs)
    # Epoch 0 of its own stream: the same batches before every evaluation.
    batchnorm_batches = make_dataset(
        dataset.shard_paths("train"), training=True, seed=config.seed,
        keep_ids=set(batchnorm_frame["id"]), num_examples=len(batchnorm_frame), **common)
    validation, test = (
        make_dataset(dataset.shard_paths(split), training=False,
                     num_examples=len(dataset.split_frame(split, config.classes)), **common)
        .map(as_target)
        for split in ("validation", "test"))

    backbone = get_net(config.net).build_backbone((config.image_size, config.image_size, 3),
                                                  None)
    model = build_autoencoder(backbone, config.net)
    model.compile(optimizer=make_optimizer("adam", config.lr), loss="mse")
    save_config(config, directory.config)
    print(f"Pretraining {directory.path.name}: autoencoder on {len(train_frame)} training "
          f"images, {config.image_size}px, batch {config.batch_size}, {epochs} epochs, "
          f"lr {config.lr:g}.", flush=True)
    recorder = _BestReconstruction(directory, validation,
                                   PreciseBatchNorm(model, batchnorm_batches))
    started = time.monotonic()
    model.fit(train.map(as_target), epochs=epochs,
              steps_per_epoch=math.ceil(len(train_frame) / config.batch_size), shuffle=False,
              verbose=0,
              callbacks=[recorder])
    train_seconds = time.monotonic() - started

    model.load_weights(directory.best_weights)
    scores: dict[str, list[np.ndarray]] = {"mse": [], "psnr": [], "ssim": []}
    shown = []
    for images, _ in test:
        reconstructions = model(images, training=False)
        for name, values in reconstruction_scores(images, reconstructions).items():
            scores[name].append(values)
        if sum(len(pair[0]) for pair in shown) < SHOWN_IMAGES:
            shown.append((images.numpy(), np.asarray(reconstructions)))
    means = {name: float(np.mean(np.concatenate(values))) for name, values in scores.items()}
    shown_images, shown_outputs = (np.concatenate(part)[:SHOWN_IMAGES] for part in zip(*shown,
                                                                                    strict=True))
    save_figure(_reconstruction_figure(shown_images, shown_outputs, means), figure)
    metrics = {
        "pretraining": METHOD,
        "run_id": directory.path.name,
        "dataset": config.dataset,
        "net": config.net,
        "seed": config.seed,
        "epochs": epochs,
        "lr": config.lr,
        "batch_size": config.batch_size,
        "image_size": config.image_size,
        "train_size": config.train_size,
        "train_images": len(train_frame),
        "test_images": int(sum(len(values) for values in scores["mse"])),
        "best_epoch": recorder.best_epoch,
        "val_mse_best": recorder.best_mse,
        **{f"test_{name}": value for name, value in means.items()},
        "train_seconds": train_seconds,
        "medtransfer_version": __version__,
        "status": "complete",
    }
    directory.write_metrics(metrics)
    return PretrainResult(directory.path, metrics, figure)


class _BestReconstruction(keras.callbacks.Callback):
    """After each epoch: precise BatchNorm statistics, the validation MSE, history.csv,
    and ``best.weights.h5`` when the MSE is the lowest yet."""

    def __init__(self, directory: RunDirectory, validation: tf.data.Dataset,
                 batchnorm: PreciseBatchNorm):
        super().__init__()
        self.directory, self.validation, self.batchnorm = directory, validation, batchnorm
        self.rows: list[dict[str, Any]] = []
        self.best_mse, self.best_epoch = float("inf"), 0
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        self.batchnorm.update()
        mse = float(self.model.evaluate(self.validation, verbose=0))
        if mse < self.best_mse:
            self.best_mse, self.best_epoch = mse, epoch + 1
            self.model.save_weights(self.directory.best_weights)
        self.rows.append({"epoch": epoch + 1, "loss": float(logs["loss"]), "val_mse": mse,
                          "seconds": round(time.monotonic() - self._started, 3)})
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(self.directory.history, text.getvalue())
        print(f"epoch {epoch + 1}: loss {logs['loss']:.5f}, validation MSE {mse:.5f}",
              flush=True)


def _reconstruction_figure(images: np.ndarray, reconstructions: np.ndarray,
                           scores: dict[str, float]):
    """The first test images (top row) above their reconstructions (bottom row)."""
    from matplotlib.figure import Figure

    count = len(images)
    figure = Figure(figsize=(1.6 * count + 0.6, 3.6), layout="constrained")
    axes = figure.subplots(2, count, squeeze=False)
    for column in range(count):
        for row, pictures in enumerate((images, reconstructions)):
            axes[row, column].imshow(np.clip(pictures[column], 0.0, 1.0))
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
    axes[0, 0].set_ylabel("test image")
    axes[1, 0].set_ylabel("reconstruction")
    figure.suptitle(f"Autoencoder: test MSE {scores['mse']:.4f}, PSNR {scores['psnr']:.2f} dB, "
                    f"SSIM {scores['ssim']:.3f}", fontsize=10)
    return figure
