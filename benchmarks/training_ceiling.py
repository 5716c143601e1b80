"""Figure 3: a real run's training speed against the compute ceiling of its model.

- medtransfer: ``run_experiment`` on the prepared photographs with the dataset's default
  augmentation; ``metrics.json`` ``images_per_second`` (phase-2 epochs after the first,
  training steps only).
- ceiling: the same net, built and compiled the same way (``build_model``,
  ``compile_model``), fitted with the same batch size on random images already in memory,
  no augmentation: the model alone. Same statistic (epochs after the first, training
  time only). The images are batched once into a cached ``tf.data`` dataset: handing
  ``fit`` the tensor itself goes through Keras' array adapter, which measured about half
  the speed on this machine (small_cnn at 128: 15.5 against 30.6 images/s), a floor
  rather than a ceiling.

The two take turns epoch by epoch, in one process: after each of the run's epochs (its
validation done), one epoch of the model alone (a callback handed to ``run_experiment``).
On a shared machine whose speed drifts by 10-20% from one minute to the next, taking
turns run by run left the ratio anywhere between 0.87 and 1.18; epoch by epoch, both
sides of each pair see the same machine.

Beside it, the pipeline alone (the run's training stream, read without a model) in
images/s per CPU core: a GPU that trains at R images/s needs R / that many cores.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from benchmarks.photos import PhotoDataset
from benchmarks.report import Figure, Target
from benchmarks.timing import (
    best_rates,
    dataset_rate,
    make_epoch_timer,
    steady_rate,
)
from medtransfer.config import RunConfig
from medtransfer.data.augment import AugmentConfig
from medtransfer.data.pipeline import make_dataset
from medtransfer.data.prepared import load_prepared
from medtransfer.machine import usable_cores
from medtransfer.models.init import build_model
from medtransfer.training.run import compile_model, run_experiment

BATCH_SIZE = 32
# The first epoch of each side is warm-up (tracing, filling the cache); the others are
# timed, each of the run's beside the model alone's that follows it.
EPOCHS = {False: 4, True: 1}


@dataclass(frozen=True)
class Case:
    net: str
    image_size: int
    train_images: int


CASES = {
    # Each side trains >= ~10 s per timed epoch on 2 cores.
    False: [Case("small_cnn", 128, 640), Case("mobilenet", 224, 320)],
    # Each net at its smallest input, one batch (the quick photos' train split has 16).
    True: [Case("small_cnn", 32, 16), Case("mobilenet", 32, 16)],
}
REPEATS = {False: 2, True: 1}


def measure(photos: PhotoDataset, logdir: Path, quick: bool) -> tuple[list[Figure], list[str]]:
    figures = []
    cores = usable_cores()
    for case in CASES[quick]:
        config = RunConfig(
            dataset=photos.name, data_dir=str(photos.data_dir), logdir=str(logdir),
            experiment="ceiling", net=case.net, image_size=case.image_size,
            epochs=f"0+{EPOCHS[quick]}", batch_size=BATCH_SIZE, train_size=case.train_images,
            # --quick: no re-estimated BatchNorm statistics before validation, which cost
            # a traced pass and never count in images_per_second (training steps only).
            bn_stats="moving" if quick else "precise",
        )
        rates = {"run": 0.0, "ceiling": 0.0}
        for _ in range(REPEATS[quick]):
            run, ceiling = _rates_taking_turns(case, config, eager=quick)
            rates = {"run": max(rates["run"], run), "ceiling": max(rates["ceiling"], ceiling)}
        pipeline = best_rates({"pipeline": dataset_rate(_train_stream(photos, case))},
                              REPEATS[quick], warmup=1)["pipeline"]
        what = f"{case.net} {case.image_size}px, batch {BATCH_SIZE}"
        figures += [
            Figure(f"training_{case.net}", f"training vs model alone ({what})",
                   rates["run"], rates["ceiling"], "images/s", Target(at_least=0.95)),
            Figure(f"pipeline_per_core_{case.net}",
                   f"pipeline per CPU core vs model ({what}, {cores} cores)",
                   pipeline / cores, rates["ceiling"], "images/s"),
        ]
    notes = [
        f"Training vs model alone: a real `run_experiment` (0+{EPOCHS[quick]} epochs, "
        "--train-size images of the prepared photographs, the dataset's default "
        "augmentation: flips, colour, noise), its metrics.json images_per_second (the "
        "epochs after the first, training steps only) against the same net built by "
        "build_model and compiled by the run's compile_model, fitted on random images held "
        "in memory (batched once into a cached tf.data dataset: fit on the bare tensor goes "
        "through Keras' array adapter, measured at half the speed), same batch, same "
        "statistic. The two take turns epoch by epoch in one process: after each of the "
        "run's epochs, one epoch of the model alone (a callback passed to run_experiment), "
        f"so that both sides of a pair see the same machine; best of {REPEATS[quick]} such "
        "runs."
        + (" --quick: the run with --bn-stats moving and the model alone run eagerly, to "
           "spare the tracing; only that the rows are produced counts." if quick else ""),
        "Pipeline per CPU core: the run's training stream alone (cached, augmented, "
        "later epochs) divided by the cores; a GPU training at R images/s needs about "
        "R / (this number) cores to be fed.",
    ]
    return figures, notes


def _rates_taking_turns(case: Case, config: RunConfig, eager: bool) -> tuple[float, float]:
    """The run's ``images_per_second`` and the model alone's, one epoch of the model
    alone after each of the run's."""
    fit_epoch = _model_alone(case, config, eager)
    ceiling_seconds = []

    class TakeTurns(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            ceiling_seconds.append(fit_epoch())

    result = run_experiment(config, overwrite=True, callbacks=[TakeTurns()])
    return (float(result.metrics["images_per_second"]),
            steady_rate(ceiling_seconds, case.train_images))


def _model_alone(case: Case, config: RunConfig, eager: bool) -> Callable[[], float]:
    """The model alone, ready to train; returns a function that fits it for one epoch and
    returns that epoch's training seconds. ``eager`` (``--quick``) runs it without tracing
    its training step, which for mobilenet costs more CPU than the rest of the figure."""
    keras.utils.set_random_seed(0)
    num_classes = load_prepared(config.dataset, Path(config.data_dir)).num_classes
    model = build_model(case.net, num_classes, case.image_size, "glorot")
    compile_model(model, config.lr or 1e-4)
    model.run_eagerly = eager
    images = tf.random.uniform((case.train_images, case.image_size, case.image_size, 3))
    labels = tf.one_hot(np.arange(case.train_images) % num_classes, num_classes)
    batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(BATCH_SIZE).cache()
    for _ in batches:  # fill the cache: every epoch then reads batches already in memory
        pass
    steps = math.ceil(case.train_images / BATCH_SIZE)
    timer = make_epoch_timer()

    def fit_epoch() -> float:
        model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False,
                  callbacks=[timer])
        return timer.seconds[-1]

    return fit_epoch


def _train_stream(photos: PhotoDataset, case: Case) -> tf.data.Dataset:
    dataset = load_prepared(photos.name, photos.data_dir)
    return make_dataset(
        dataset.shard_paths("train"), dataset.num_classes, image_size=case.image_size,
        batch_size=BATCH_SIZE, training=True, augment=AugmentConfig(),
    )
