"""Figure 9: the first training step of a phase, medtransfer's Adam against Keras' Adam.

Every phase of a run starts with a freshly compiled model, so its first step traces the
training step: the forward and backward pass and the optimizer's update of every
trainable variable. ``training.schedule.Adam`` is Keras' Adam to the bit with the step's
bias correction traced once instead of once per variable. Per net, one model is compiled
again before each turn, alternately with either optimizer (a new compile is a new
trace), and the CPU seconds (user+sys, every thread) of one ``fit`` step are taken;
best of several turns each. The two optimizers' numbers are the same (tests compare
them bit for bit), so only the time differs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from benchmarks.report import Figure, Target
from benchmarks.timing import best_rates
from medtransfer.models.init import build_model
from medtransfer.training.schedule import Adam

BATCH_SIZE = 8
NUM_CLASSES = 2


@dataclass(frozen=True)
class Sizes:
    nets: tuple[str, ...]
    image_size: int
    repeats: int


# Tracing does not depend on the image size; the nets' number of variables does
# (trainable at freeze 0 with 2 classes: small_cnn 20, mobilenet 85, densenet121 366).
SIZES = {False: Sizes(("mobilenet", "densenet121"), 32, 3),
         True: Sizes(("small_cnn",), 16, 1)}


def measure(quick: bool) -> tuple[list[Figure], list[str]]:
    sizes = SIZES[quick]
    images = tf.random.uniform((BATCH_SIZE, sizes.image_size, sizes.image_size, 3))
    labels = tf.one_hot(np.arange(BATCH_SIZE) % NUM_CLASSES, NUM_CLASSES)
    figures, variables = [], []
    for net in sizes.nets:
        keras.utils.set_random_seed(0)
        model = build_model(net, NUM_CLASSES, sizes.image_size, "glorot")
        variables.append(f"{net} {len(model.trainable_variables)}")

        def first_step(optimizer_class, model=model):
            model.compile(optimizer=optimizer_class(1e-4), loss="categorical_crossentropy")
            started = time.process_time()
            model.fit(images, labels, batch_size=BATCH_SIZE, epochs=1, verbose=0)
            return 1 / (time.process_time() - started)  # best_rates keeps the highest

        rates = best_rates({"ours": lambda: first_step(Adam),
                            "keras": lambda: first_step(keras.optimizers.Adam)},
                           sizes.repeats)
        figures.append(Figure(
            f"first_step_{net}",
            f"first training step of a phase (its trace), medtransfer's Adam vs Keras' "
            f"Adam ({net}, {sizes.image_size}px, batch {BATCH_SIZE})",
            1 / rates["ours"], 1 / rates["keras"], "CPU s", Target(at_most=0.9)))
    notes = [
        "First step: CPU seconds (user+sys, every thread) of one model.fit step on a model "
        "compiled afresh before each turn, the two optimizers taking turns, best of "
        f"{sizes.repeats}; the step traces the forward and backward pass and the update "
        f"of every trainable variable ({', '.join(variables)}), then runs once. The "
        "weights after it are bit-identical either way (tests/test_optimizer.py).",
    ]
    return figures, notes
