"""Nets: the registry of backbones, the classifier head, freezing and initialisation.

- ``registry``: :class:`NetSpec`, :data:`NETS`, :func:`get_net`.
- ``applications``, ``small_cnn``, ``cbr``: the nine backbones; each module registers its nets.
- ``classifier``: the head shared by every net, :func:`build_classifier`, :func:`get_backbone`.
- ``freezing``: ``--freeze F`` and the counts a run records.
- ``init``: ``--init`` (glorot, imagenet, mean_var, a path) and :func:`build_model`.
- ``weights_io``: weight files into models, with mismatches explained.
"""

# Registration order is the order of DESIGN.md and of `medtransfer list`.
from medtransfer.models import applications, small_cnn  # noqa: F401

# isort: split
from medtransfer.models import cbr  # noqa: F401

# isort: split
from medtransfer.models.classifier import build_classifier, get_backbone
from medtransfer.models.freezing import (
    FreezeSummary,
    backbone_layers,
    freeze_backbone,
    freeze_bottom_layers,
    freeze_summary,
)
from medtransfer.models.init import INITS, build_model, resample_mean_var, resolve_imagenet_weights
from medtransfer.models.registry import NETS, NetSpec, get_net

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
