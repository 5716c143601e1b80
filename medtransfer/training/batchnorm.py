"""Precise BatchNorm statistics: the population mean and variance, re-estimated before
each evaluation (DESIGN.md "Evaluation and BatchNorm statistics").

Keras' moving averages (momentum 0.99) lag far behind the weights on short runs: after
135 steps they still remember the initial statistics, and an evaluation in inference
mode then normalises with the wrong mean and variance. :class:`PreciseBatchNorm` runs a
fixed set of training batches through the backbone in training mode (each BatchNorm
layer normalises with its batch's statistics, as in a training step), collects the
input of every BatchNorm layer that is trainable in the current phase, and sets its
``moving_mean`` and ``moving_variance`` to the exact statistics over all those batches:
the per-batch means and second moments are accumulated (in float64, weighted by batch
size), not averaged with a momentum. No other weight changes; frozen BatchNorm layers
keep their statistics (they run in inference mode in training too).

The fixed batches are the same every time (see ``make_dataset(..., first_epoch=0)``
without augmentation), so re-estimating twice with the same weights gives the same
statistics: the best checkpoint holds them, and a later reader of best.weights.h5 gets
the numbers the run reported.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from medtransfer.data.pipeline import without_autograph
from medtransfer.models.classifier import get_backbone

#: How many training images the statistics are estimated over (all when fewer): 64
#: batches of 32, enough for a standard error of the mean below 2% of a channel's std.
PRECISE_BN_IMAGES = 2048


def trainable_batchnorm_layers(backbone: keras.Model) -> list[keras.layers.BatchNormalization]:
    """The backbone's BatchNorm layers that train in the current phase, bottom first."""
    return [
        layer for layer in backbone.layers
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]


class PreciseBatchNorm:
    """Re-estimates the statistics of a classifier's trainable BatchNorm layers.

    Args:
        classifier: a model built by :func:`medtransfer.models.classifier.build_classifier`;
            every BatchNorm layer is a layer of its backbone (true of every registered net).
        batches: the fixed ``(images, one_hot)`` training batches to estimate over, in
            the per-replica batch size, so that batch statistics match a training step's.
    """

    def __init__(self, classifier: keras.Model, batches: tf.data.Dataset):
        self.backbone = get_backbone(classifier)
        self.batches = batches.map(without_autograph(lambda images, *_: images))
        self._probes: dict[tuple[int, ...], tf.types.experimental.Function] = {}

    def update(self) -> int:
        """Sets ``moving_mean`` / ``moving_variance`` of every trainable BatchNorm layer.

        Returns:
            The number of BatchNorm layers updated (0 when none trains in this phase).
        """
        layers = trainable_batchnorm_layers(self.backbone)
        if not layers:
            return 0
        probe = self._probe(layers)
        count = 0.0
        sums = [None] * len(layers)
        for images in self.batches:
            size = float(images.shape[0])
            moments = probe(images)
            for index, (mean, variance) in enumerate(moments):
                mean = mean.numpy().astype(np.float64)
                second = variance.numpy().astype(np.float64) + mean**2
                if sums[index] is None:
                    sums[index] = [np.zeros_like(mean), np.zeros_like(mean)]
                sums[index][0] += size * mean
                sums[index][1] += size * second
            count += size
        for layer, (mean_sum, second_sum) in zip(layers, sums, strict=True):
            mean = mean_sum / count
            # E[x^2] - mean^2 can come out a hair below zero when a channel is constant.
            variance = np.maximum(second_sum / count - mean**2, 0.0)
            layer.moving_mean.assign(mean.astype(layer.moving_mean.dtype))
            layer.moving_variance.assign(variance.astype(layer.moving_variance.dtype))
        return len(layers)

    def _probe(self, layers: list[keras.layers.BatchNormalization]):
        """A compiled function from images to each layer's per-channel batch moments."""
        key = tuple(id(layer) for layer in layers)
        if key not in self._probes:
            inputs = keras.Model(self.backbone.inputs, [layer.input for layer in layers])
            axes = [_reduction_axes(layer) for layer in layers]

            # Traced once, for any batch size: a last batch of another size would
            # otherwise trace it again.
            @tf.function(input_signature=[self.batches.element_spec], autograph=False)
            def probe(images):
                # Training mode, so that each layer below sees what a training step feeds
                # it. (That also moves the layers' moving averages a step; update() then
                # overwrites them.)
                features = inputs(images, training=True)
                if len(layers) == 1:
                    features = [features]
                return [
                    tf.nn.moments(tf.cast(feature, tf.float32), axes=axis)
                    for feature, axis in zip(features, axes, strict=True)
                ]

            self._probes[key] = probe
        return self._probes[key]


def _reduction_axes(layer: keras.layers.BatchNormalization) -> list[int]:
    rank = len(layer.input.shape)
    channel = layer.axis % rank
    return [axis for axis in range(rank) if axis != channel]
