"""The multi-label loss: binary cross-entropy per finding, unknown labels masked out."""

from __future__ import annotations

from collections.abc import Sequence

import keras


class MaskedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy of a sigmoid per finding, with unknown labels left out.

    A label is 1 (present), 0 (absent) or anything else, -1 in the shards (unknown).

    An image's loss is its cross-entropy summed over the findings whose label is known,
    divided by the number of findings: an unknown label adds nothing and moves no weight
    (CheXpert's U-Ignore). ``positive_weights`` multiplies each finding's term for a
    present label (``--class-weight balanced``: negatives / positives of that finding),
    as ``pos_weight`` does in PyTorch's ``BCEWithLogitsLoss``.

    Args:
        positive_weights: one weight per finding, or None for 1.
    """

    def __init__(self, positive_weights: Sequence[float] | None = None,
                 name: str = "masked_binary_crossentropy"):
        super().__init__(name=name)
        self.positive_weights = None if positive_weights is None else list(positive_weights)

    def call(self, y_true, y_pred):
        ops = keras.ops
        y_true = ops.cast(y_true, "float32")
        present = ops.cast(ops.equal(y_true, 1.0), "float32")
        absent = ops.cast(ops.equal(y_true, 0.0), "float32")
        if self.positive_weights is not None:
            present = present * ops.convert_to_tensor(self.positive_weights, "float32")
        # Keras' binary_crossentropy takes the sigmoid's logits when the output layer left
        # them on its output (it does): a saturated sigmoid then still has a gradient,
        # where clipped probabilities would have none and a finding could never recover.
        ones = ops.ones_like(y_true)
        entropy = (present * ops.binary_crossentropy(ones, y_pred)
                   + absent * ops.binary_crossentropy(ones * 0.0, y_pred))
        return ops.mean(entropy, axis=-1)

    def get_config(self):
        return {**super().get_config(), "positive_weights": self.positive_weights}



def masked_accuracy(y_true, y_pred):
    """Per image, the share of its known findings predicted right at probability 0.5 (the
    training ``accuracy`` of a multi-label run; 0 for an image with no known finding)."""
    ops = keras.ops
    y_true = ops.cast(y_true, "float32")
    known = ops.cast(ops.greater_equal(y_true, 0.0), "float32")
    predicted = ops.cast(ops.greater_equal(ops.cast(y_pred, "float32"), 0.5), "float32")
    right = ops.cast(ops.equal(predicted, y_true), "float32") * known
    return ops.sum(right, axis=-1) / ops.maximum(ops.sum(known, axis=-1), 1.0)
