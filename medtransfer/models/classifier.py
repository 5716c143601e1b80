"""The classifier: a backbone under the one head every net shares.

::

    input -> backbone (nested model, layer "backbone")
          -> GlobalAveragePooling2D -> Dense(head_units, relu) -> Dropout(dropout)
          -> Dense(num_classes, softmax, float32)   (multi-label: sigmoid, one per finding)

The study's small_cnn head (Dense + ReLU -> Dropout -> Dense softmax) is used for every
net, so that nets differ only in their backbone. Global average pooling belongs to the head
(DESIGN.md "Freezing"), so ``--freeze`` never touches it. The output layer computes in
float32, so under ``--mixed-precision`` the probabilities, the loss and the AUC stay float32.
The backbone is nested rather than flattened so that freezing, weight transfer and
``freeze_summary`` address it as one object: ``get_backbone(classifier)``.
"""

from __future__ import annotations

import keras

from medtransfer.errors import MedtransferError

BACKBONE_LAYER = "backbone"
FEATURES_LAYER = "head_pool"
"""The global average pooling: its output is the penultimate feature vector (t-SNE)."""
OUTPUT_LAYER = "head_output"


def build_classifier(
    backbone: keras.Model, num_classes: int, *, head_units: int = 256, dropout: float = 0.5,
    multi_label: bool = False,
) -> keras.Model:
    """Puts the shared head on top of ``backbone``.

    Args:
        backbone: a model without top and without pooling (4D output); renamed
            ``"backbone"`` if it has another name.
        num_classes: the number of output classes (softmax units).
        head_units: units of the hidden Dense layer.
        dropout: dropout rate between the hidden Dense layer and the output.
        multi_label: a sigmoid per output (a finding each, independent probabilities)
            instead of a softmax over the classes.

    Returns:
        The classifier, from images to class probabilities (float32).

    Raises:
        MedtransferError: ``num_classes`` below 2 (below 1 for ``multi_label``),
            ``head_units`` below 1 or ``dropout`` outside [0, 1).
    """
    if num_classes < (1 if multi_label else 2):
        raise MedtransferError(f"A classifier needs at least 2 classes, got {num_classes}.")
    if head_units < 1:
        raise MedtransferError(f"head_units must be at least 1, got {head_units}.")
    if not 0 <= dropout < 1:
        raise MedtransferError(f"dropout must be in [0, 1), got {dropout}.")
    backbone.name = BACKBONE_LAYER
    inputs = keras.Input(shape=backbone.input_shape[1:], name="image")
    x = backbone(inputs)
    x = keras.layers.GlobalAveragePooling2D(name=FEATURES_LAYER)(x)
    x = keras.layers.Dense(head_units, activation="relu", name="head_dense")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(
        num_classes, activation="sigmoid" if multi_label else "softmax", dtype="float32",
        name=OUTPUT_LAYER
    )(x)
    return keras.Model(inputs, outputs, name="classifier")


def get_backbone(classifier: keras.Model) -> keras.Model:
    """Returns the backbone nested in a classifier built by :func:`build_classifier`."""
    return classifier.get_layer(BACKBONE_LAYER)


def head_layers(classifier: keras.Model) -> list[keras.layers.Layer]:
    """The layers above the backbone, in order: pooling, hidden Dense, dropout, output."""
    layers = [layer for layer in classifier.layers
              if not isinstance(layer, keras.layers.InputLayer)]
    return layers[layers.index(get_backbone(classifier)) + 1:]
