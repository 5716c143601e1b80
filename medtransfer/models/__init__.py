"""Nets: the registry of backbones, the classifier head, freezing and initialisation.

- ``registry``: :class:`NetSpec`, :data:`NETS`, :func:`get_net`.
- ``applications``, ``small_cnn``, ``cbr``, ``resnet``: the backbones; each module registers
  its nets.
- ``classifier``: the head shared by every net, :func:`build_classifier`, :func:`get_backbone`.
- ``freezing``: ``--freeze F`` and the counts a run records.
- ``init``: ``--init`` (glorot, imagenet, mean_var, a path) and :func:`build_model`.
- ``weights_io``: weight files into models, with mismatches explained.

Importing this package registers the nets without importing Keras; the names below that
need Keras (everything but the registry) load their module on first use, so that
``medtransfer list`` and ``--help`` never wait for TensorFlow.
"""

import importlib

# Registration order is the order of DESIGN.md and of `medtransfer list`.
from medtransfer.models import applications, small_cnn  # noqa: F401
from medtransfer.options import INITS

# isort: split
from medtransfer.models import cbr, resnet  # noqa: F401

# isort: split
from medtransfer.models.registry import NETS, NetSpec, get_net

_KERAS_NAMES = {
    "build_classifier": "classifier",
    "get_backbone": "classifier",
    "FreezeSummary": "freezing",
    "backbone_layers": "freezing",
    "freeze_backbone": "freezing",
    "freeze_bottom_layers": "freezing",
    "freeze_summary": "freezing",
    "build_model": "init",
    "resample_mean_var": "init",
    "resolve_imagenet_weights": "init",
}


def __getattr__(name: str):
    if name in _KERAS_NAMES:
        module = importlib.import_module(f"medtransfer.models.{_KERAS_NAMES[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'medtransfer.models' has no attribute '{name}'")


__all__ = [
    "INITS",
    "NETS",
    "FreezeSummary",
    "NetSpec",
    "backbone_layers",
    "build_classifier",
    "build_model",
    "freeze_backbone",
    "freeze_bottom_layers",
    "freeze_summary",
    "get_backbone",
    "get_net",
    "resample_mean_var",
    "resolve_imagenet_weights",
]
