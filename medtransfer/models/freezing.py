"""Freezing the bottom of a backbone, exactly as DESIGN.md "Freezing" says.

The backbone's layers are ``backbone.layers`` without the InputLayer, in Keras order (bottom =
nearest the input); every layer counts, including those without weights (pooling,
activations, concatenations). ``--freeze F`` freezes the first ``floor(F * n)`` of them. F is
read as the decimal it is written as (``Fraction(repr(F))``), so ``floor(0.29 * 100)`` is 29,
not the 28 that binary floating point gives.

Frozen BatchNorm layers run in inference mode (Keras 3 semantics of ``trainable = False``):
their moving statistics stay as they are. Changing ``trainable`` only takes effect in
training after the model is (re)compiled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import keras
import numpy as np

from medtransfer.errors import MedtransferError
from medtransfer.models.classifier import get_backbone


def backbone_layers(backbone: keras.Model) -> list[keras.layers.Layer]:
    """Returns the layers that freezing counts: ``backbone.layers`` without the InputLayer.

    Args:
        backbone: a backbone (a functional model).

    Returns:
        The layers in Keras order, bottom (nearest the input) first.
    """
    return [layer for layer in backbone.layers if not isinstance(layer, keras.layers.InputLayer)]


def frozen_layer_count(fraction: float, total_layers: int) -> int:
    """Returns ``floor(fraction * total_layers)`` computed exactly.

    Args:
        fraction: the share of layers to freeze, in [0, 1].
        total_layers: how many layers the backbone has.

    Returns:
        The number of bottom layers to freeze.

    Raises:
        MedtransferError: ``fraction`` is not a number in [0, 1].
    """
    try:
        exact = Fraction(repr(float(fraction)))
    except (TypeError, ValueError, OverflowError):
        raise MedtransferError(f"--freeze must be a number in [0, 1], got {fraction!r}.") from None
    if not 0 <= exact <= 1:
        raise MedtransferError(
            f"--freeze must be in [0, 1] (the share of backbone layers to freeze, bottom "
            f"first), got {fraction}."
        )
    return math.floor(exact * total_layers)


def freeze_bottom_layers(backbone: keras.Model, fraction: float) -> int:
    """Freezes the bottom ``floor(fraction * n)`` backbone layers and unfreezes the rest.

    Args:
        backbone: the backbone (nested in the classifier).
        fraction: F of ``--freeze F``, in [0, 1].

    Returns:
        The number of frozen layers.

    Raises:
        MedtransferError: ``fraction`` is outside [0, 1].
    """
    layers = backbone_layers(backbone)
    count = frozen_layer_count(fraction, len(layers))
    # A model-level trainable=False (phase 1) would override the per-layer flags.
    backbone.trainable = True
    for index, layer in enumerate(layers):
        layer.trainable = index >= count
    return count


def freeze_backbone(backbone: keras.Model) -> None:
    """Freezes the whole backbone (phase 1 of the W+E regime: only the head trains).

    Args:
        backbone: the backbone (nested in the classifier).
    """
    backbone.trainable = False


@dataclass(frozen=True)
class FreezeSummary:
    """What a run records about freezing (DESIGN.md "Freezing").

    Attributes:
        frozen_layers: backbone layers with ``trainable = False``.
        total_layers: backbone layers (without the InputLayer).
        frozen_params: every weight of the frozen backbone layers, BatchNorm moving
            statistics included.
        trainable_params: trainable weights of the whole classifier, head included.
    """

    frozen_layers: int
    total_layers: int
    frozen_params: int
    trainable_params: int


def freeze_summary(classifier: keras.Model) -> FreezeSummary:
    """Counts the frozen layers and parameters of a classifier.

    Args:
        classifier: a model built by :func:`medtransfer.models.classifier.build_classifier`.

    Returns:
        The counts for ``metrics.json``.
    """
    layers = backbone_layers(get_backbone(classifier))
    frozen = [layer for layer in layers if not layer.trainable]
    return FreezeSummary(
        frozen_layers=len(frozen),
        total_layers=len(layers),
        frozen_params=sum(_size(w) for layer in frozen for w in layer.weights),
        trainable_params=sum(_size(w) for w in classifier.trainable_weights),
    )


def _size(variable) -> int:
    return int(np.prod(variable.shape))
