"""Initialisation: build a classifier whose backbone starts as ``--init`` says (DESIGN.md).

- ``glorot``: the nets' Keras default initialisers. Reproducible when the caller seeds Keras
  (``keras.utils.set_random_seed``) before :func:`build_model`.
- ``imagenet``: the Keras ImageNet weights without top. The file is ``--weights-file`` if
  given, else ``<imagenet_file>`` in the Keras cache (``$KERAS_HOME/models``, default
  ``~/.keras/models``), else downloaded there by ``keras.utils.get_file``. Offline, a
  download fails within :data:`DOWNLOAD_TIMEOUT_SECONDS` of silence with a
  MedtransferError naming the file, the cache folder, the URL and ``--weights-file``.
- ``mean_var`` (Transfusion): the ImageNet weights, then every backbone tensor replaced by
  i.i.d. samples of N(its mean, its std), seeded; BatchNorm moving statistics reset to 0/1.
- a path: an earlier run directory (``config.yaml`` and ``best.weights.h5``) or a weights
  file (``.weights.h5`` from a backbone or a whole classifier; a legacy Keras ``.h5``
  backbone file). The backbone always loads; the head loads too only when the caller
  says the source was trained on the same task (``transfer_head``: the same class names
  in the same order, which the training layer checks from the source run's records: a
  file holds no class names). A head of another task would start the new one far from a
  uniform guess (digits 0-4's head on digits 5-9: loss 5.9 instead of ln 5 = 1.6). A new
  head on the loaded backbone starts from a uniform guess too: its output layer is zero
  (:func:`start_uniform`), as a Keras-default one on trained features is as far off.
  Which kind of file it is follows from its contents, not its name: see
  :mod:`medtransfer.models.weights_io`. A run directory whose ``config.yaml`` names another
  net fails with "saved from net X"; any file of another architecture fails with the first
  tensor whose path or shape differs. All of it happens before training starts.

The head (pooling and classifier) is always newly initialised by the Keras defaults unless
a path init loads it (``transfer_head``).
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path

import keras
import numpy as np

from medtransfer.errors import MedtransferError
from medtransfer.models.checks import (
    check_image_size,
    check_imagenet,
    check_init,
    run_weights_file,
)
from medtransfer.models.classifier import OUTPUT_LAYER, build_classifier, get_backbone
from medtransfer.models.registry import NetSpec, get_net
from medtransfer.models.weights_io import load_backbone_weights, load_classifier_weights
from medtransfer.options import INITS

DOWNLOAD_TIMEOUT_SECONDS = 15.0
"""Longest silence (connect or read) tolerated while downloading ImageNet weights."""


def build_model(
    net: str,
    num_classes: int,
    image_size: int,
    init: str,
    *,
    weights_file: str | Path | None = None,
    seed: int = 0,
    head_units: int = 256,
    dropout: float = 0.5,
    transfer_head: bool = False,
    multi_label: bool = False,
) -> keras.Model:
    """Builds the classifier of ``net`` with its backbone initialised by ``init``.

    Args:
        net: a registered net name.
        num_classes: number of output classes.
        image_size: side of the square RGB input, at least the net's ``min_input_size``.
        init: ``"glorot"``, ``"imagenet"``, ``"mean_var"``, or a path to an earlier run
            directory or weights file.
        weights_file: ``--weights-file``: the ImageNet weights for ``imagenet`` and
            ``mean_var`` when they are not in the Keras cache.
        seed: seeds the ``mean_var`` sampling.
        head_units: units of the head's hidden Dense layer.
        dropout: the head's dropout rate.
        transfer_head: with a path init, load the file's classifier head too (the source
            was trained on the same classes in the same order); otherwise the head is new.
        multi_label: a sigmoid per output (findings) instead of a softmax.

    Returns:
        The classifier (see :mod:`medtransfer.models.classifier`); its backbone is
        ``get_backbone(model)``.

    Raises:
        MedtransferError: unknown net or init, an input below the net's minimum, missing or
            mismatching weights (with ``transfer_head``, a file whose head does not fit),
            ImageNet weights unavailable or not published for the net.
    """
    spec = get_net(net)
    check_image_size(spec, image_size)
    check_init(spec, init, weights_file)
    input_shape = (image_size, image_size, 3)
    if init not in INITS:
        return _build_from_path(spec, num_classes, input_shape, init, head_units, dropout,
                                transfer_head, multi_label)
    if init == "glorot":
        backbone = spec.build_backbone(input_shape, None)
    else:
        backbone = spec.build_backbone(input_shape, resolve_imagenet_weights(spec, weights_file))
        if init == "mean_var":
            resample_mean_var(backbone, seed)
    return build_classifier(backbone, num_classes, head_units=head_units, dropout=dropout,
                            multi_label=multi_label)


def rebuild_trained(
    net: str,
    num_classes: int,
    image_size: int,
    weights: str | Path,
    *,
    head_units: int = 256,
    dropout: float = 0.5,
    multi_label: bool = False,
) -> keras.Model:
    """Rebuilds a trained classifier from its architecture and a whole-model weights file.

    Unlike ``build_model(..., init=<path>)``, which transfers a backbone into a new task,
    this restores the exact model a run saved (``best.weights.h5``): backbone and head.
    No ImageNet file is needed: the architecture is built with random weights, then
    every weight is loaded.

    Raises:
        MedtransferError: the file does not fit the architecture.
    """
    spec = get_net(net)
    input_shape = (image_size, image_size, 3)
    classifier = build_classifier(
        spec.build_backbone(input_shape, None), num_classes,
        head_units=head_units, dropout=dropout, multi_label=multi_label,
    )
    try:
        classifier.load_weights(weights)
    except (ValueError, KeyError) as error:
        raise MedtransferError(
            f"The weights file {weights} does not fit net '{net}' with {num_classes} "
            f"classes at {image_size} px ({_first_line(error)}). It was saved from another "
            "configuration; pass the run directory it belongs to."
        ) from None
    return classifier


def keras_cache_dir() -> Path:
    """Returns the folder Keras caches downloaded weights in: ``$KERAS_HOME/models``.

    ``KERAS_HOME`` is read now, not when Keras was imported, so a changed environment
    counts; like Keras, an unwritable home falls back to ``/tmp/.keras``.
    """
    if "KERAS_HOME" in os.environ:
        home = Path(os.environ["KERAS_HOME"]).expanduser()
    else:
        base = Path.home()
        home = (base if os.access(base, os.W_OK) else Path("/tmp")) / ".keras"
    return home / "models"


def resolve_imagenet_weights(spec: NetSpec, weights_file: str | Path | None = None) -> Path:
    """Finds the ImageNet weights of ``spec``: the given file, the Keras cache, or a download.

    Args:
        spec: the net.
        weights_file: ``--weights-file``; used as is when given.

    Returns:
        A local path to the weights file.

    Raises:
        MedtransferError: the net has no ImageNet weights, ``weights_file`` does not exist,
            or the file is not cached and cannot be downloaded.
    """
    check_imagenet(spec, weights_file)
    if weights_file is not None:
        return Path(weights_file).expanduser()
    cache = keras_cache_dir()
    cached = cache / spec.imagenet_file
    if cached.is_file():
        return cached
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_SECONDS):
            downloaded = keras.utils.get_file(
                spec.imagenet_file,
                spec.imagenet_url,
                cache_subdir="models",
                cache_dir=str(cache.parent),
                file_hash=spec.imagenet_file_hash,
            )
    except Exception as error:  # any failure means the same to the user: no file
        raise MedtransferError(
            f"ImageNet weights for '{spec.name}' are not in the Keras cache and could not be "
            f"downloaded ({_first_line(error)}). Expected file: '{spec.imagenet_file}' in "
            f"{cache} (the Keras cache, $KERAS_HOME/models). Download it from "
            f"{spec.imagenet_url} on a machine with internet access and copy it there, or "
            f"pass it with --weights-file PATH."
        ) from None
    return Path(downloaded)


def resample_mean_var(backbone: keras.Model, seed: int) -> None:
    """Transfusion's mean-var init, in place: keep each tensor's scale, destroy its features.

    Every weight tensor is replaced by i.i.d. samples from N(mean, std) of that tensor
    (population std); a constant tensor (std 0) stays constant. BatchNorm moving means and
    variances describe the destroyed features, so they are reset to 0 and 1 instead.

    Args:
        backbone: a backbone holding the weights to resample (usually ImageNet).
        seed: seeds the sampling; the same seed gives the same weights.
    """
    rng = np.random.default_rng(seed)
    statistics: dict[int, float] = {}
    for layer in _all_layers(backbone):
        if isinstance(layer, keras.layers.BatchNormalization):
            statistics[id(layer.moving_mean)] = 0.0
            statistics[id(layer.moving_variance)] = 1.0
    for variable in backbone.weights:
        if id(variable) in statistics:
            value = np.full(variable.shape, statistics[id(variable)])
        else:
            source = keras.ops.convert_to_numpy(variable).astype(np.float64)
            value = rng.normal(source.mean(), source.std(), size=source.shape)
        variable.assign(value.astype(variable.dtype))


def _all_layers(model: keras.layers.Layer):
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _all_layers(layer)


def _build_from_path(
    spec: NetSpec,
    num_classes: int,
    input_shape: tuple[int, int, int],
    init: str,
    head_units: int,
    dropout: float,
    transfer_head: bool,
    multi_label: bool,
) -> keras.Model:
    path = Path(init).expanduser()
    file = run_weights_file(path, spec) if path.is_dir() else path
    classifier = build_classifier(
        spec.build_backbone(input_shape, None),
        num_classes,
        head_units=head_units,
        dropout=dropout,
        multi_label=multi_label,
    )
    if transfer_head:
        load_classifier_weights(classifier, file, spec.name)
    else:
        load_backbone_weights(get_backbone(classifier), file, spec.name)
        start_uniform(classifier)
    return classifier


def start_uniform(classifier: keras.Model) -> None:
    """Zeroes the output layer's kernel and bias, so the classifier starts from a uniform
    guess (loss ln C) whatever its features.

    A new head on trained features needs it: they are large (small_cnn trained on digits
    0-4: mean 1.3 against 0.009 for glorot's), so a Keras-default output layer on them is
    confidently wrong (digits 5-9: mean top probability 0.97, loss about 5.4 instead of
    ln 5 = 1.609). Big Transfer (Kolesnikov et al., 2020) zero-initialises the new head for
    the same reason. The hidden Dense keeps its Keras initialisation, so the first step
    already moves the output layer, and the next ones the hidden layer.
    """
    output = classifier.get_layer(OUTPUT_LAYER)
    for variable in (output.kernel, output.bias):
        variable.assign(keras.ops.zeros(variable.shape, dtype=variable.dtype))


@contextmanager
def _socket_timeout(seconds: float):
    # urlretrieve has no timeout argument; without one an offline machine whose firewall
    # drops packets would wait for the OS's TCP timeout (minutes).
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
