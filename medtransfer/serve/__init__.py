"""Using a finished run: predict on new images, export a self-contained model.

- ``predict``: new image files through the run's own preparation and pipeline, then its
  best checkpoint, into a CSV of classes and probabilities.
- ``export``: the best checkpoint with resizing and scaling built in, as a ``.keras`` file
  plain Keras loads or a SavedModel for TensorFlow Serving.
"""
