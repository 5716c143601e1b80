"""Figure 4: freezing pays: training speed with the backbone frozen against freeze 0.

For inception_v3 and densenet121 at a small input, three copies of the classifier are
frozen as a run freezes them (``freeze_bottom_layers`` at 0 and 1.0, ``freeze_backbone``
for phase 1), compiled as a run compiles them and fitted on images in memory; their
epochs take turns. A frozen layer should cost its forward pass only: the row "freeze
1.0 step vs forward pass" compares a training step at freeze 1.0 with the forward pass
alone (``predict``), and would be near 3 if gradients flowed through the frozen backbone.

``--quick`` runs the models eagerly: tracing the training step of these nets costs
25-50 CPU seconds each (inception_v3, densenet121 at freeze 0), more than the whole
quick mode may take, while an eager step at 75 px costs about a second; one model per
net is then re-frozen before each turn. The freezing, the compiled loss and optimizer
and the trainable-variables check are the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from benchmarks.report import Figure, Target
from benchmarks.timing import best_rates, make_epoch_timer
from medtransfer.models.classifier import get_backbone
from medtransfer.models.freezing import freeze_backbone, freeze_bottom_layers
from medtransfer.models.init import build_model
from medtransfer.training.run import compile_model

BATCH_SIZE = 32
NUM_CLASSES = 2


@dataclass(frozen=True)
class Sizes:
    image_size: int
    images: int
    repeats: int
    warmup: int
    eager: bool


SIZES = {False: Sizes(image_size=96, images=256, repeats=3, warmup=1, eager=False),
         # inception_v3's smallest input; one step of 2 images; eager: nothing to warm up.
         True: Sizes(image_size=75, images=2, repeats=1, warmup=0, eager=True)}
NETS = ("inception_v3", "densenet121")


FREEZES = (("f0", 0.0), ("f1", 1.0), ("phase1", None))


def frozen_model(net: str, image_size: int, freeze: float | None,
                 eager: bool = False) -> keras.Model:
    """A compiled classifier frozen at ``freeze`` (None: phase 1, the whole backbone).

    ``eager``: compiled with ``run_eagerly`` (``--quick``, see the module docstring).
    """
    keras.utils.set_random_seed(0)
    return refrozen(build_model(net, NUM_CLASSES, image_size, "glorot"), freeze, eager)


def refrozen(model: keras.Model, freeze: float | None, eager: bool = False) -> keras.Model:
    """``model`` frozen at ``freeze`` (None: phase 1) as a run freezes it, and compiled
    again as a run compiles it; returns it."""
    if freeze is None:
        freeze_backbone(get_backbone(model))
    else:
        freeze_bottom_layers(get_backbone(model), freeze)
    compile_model(model, 1e-4)
    model.run_eagerly = eager
    return model


def measure(quick: bool) -> tuple[list[Figure], list[str]]:
    sizes = SIZES[quick]
    images = tf.random.uniform((sizes.images, sizes.image_size, sizes.image_size, 3))
    labels = tf.one_hot(np.arange(sizes.images) % NUM_CLASSES, NUM_CLASSES)
    figures = []
    for net in NETS:
        if sizes.eager:
            # Eager steps need no tracing, so one model re-frozen before each turn does:
            # three builds of these nets would be most of what --quick spends here.
            shared = frozen_model(net, sizes.image_size, 0.0, eager=True)
            models = {name: (lambda freeze=freeze, shared=shared: refrozen(shared, freeze, True))
                      for name, freeze in FREEZES}
        else:
            built = {name: frozen_model(net, sizes.image_size, freeze)
                     for name, freeze in FREEZES}
            models = {name: (lambda model=model: model) for name, model in built.items()}
        # Keras 3 keeps frozen weights out of what the optimizer and the gradient see.
        head = models["f1"]().trainable_variables
        assert all("head_" in variable.path for variable in head), [v.path for v in head]

        def epoch(model):
            timer = make_epoch_timer()
            model.fit(images, labels, batch_size=BATCH_SIZE, epochs=1, shuffle=False,
                      verbose=0, callbacks=[timer])
            return sizes.images / timer.seconds[0]

        sides = {name: (lambda model=model: epoch(model())) for name, model in models.items()}
        sides["forward"] = lambda frozen=models["f1"]: _forward(frozen(), images)
        rates = best_rates(sides, sizes.repeats, warmup=sizes.warmup)
        what = f"{net} {sizes.image_size}px, batch {BATCH_SIZE}"
        figures += [
            Figure(f"freeze_1_{net}", f"freeze 1.0 vs freeze 0 ({what})",
                   rates["f1"], rates["f0"], "images/s", Target(at_least=2)),
            Figure(f"phase_1_{net}", f"phase 1 (backbone frozen) vs freeze 0 ({what})",
                   rates["phase1"], rates["f0"], "images/s", Target(at_least=2)),
            Figure(f"frozen_step_vs_forward_{net}",
                   f"forward pass alone vs freeze 1.0 step ({what})",
                   rates["forward"], rates["f1"], "images/s", Target(at_most=1.5)),
        ]
    notes = [
        "Freezing: one epoch of model.fit on random images in memory per turn, the three "
        f"freezes and the forward pass taking turns, best of {sizes.repeats} after "
        f"{sizes.warmup} warm-up epoch(s)" + (", run eagerly" if sizes.eager else "")
        + ". At freeze 1.0 model.trainable_variables holds only the head's weights (the "
        "benchmark asserts it), so the optimizer and tape.gradient ask for no backbone "
        "gradient; the 'forward pass alone vs freeze 1.0 step' ratio shows what the frozen "
        "step still costs beyond inference (the head's backward pass and Adam): near 1 "
        "means no backward pass runs through the frozen backbone; about 3 would mean it does.",
    ]
    return figures, notes


def _forward(model: keras.Model, images: tf.Tensor) -> float:
    timer = make_epoch_timer()
    model.predict(images, batch_size=BATCH_SIZE, verbose=0, callbacks=[timer])
    return int(images.shape[0]) / timer.seconds[0]
