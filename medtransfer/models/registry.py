"""The net registry: every backbone under its CLI name, with what a run needs to know about it.

Each net module registers its own nets (``applications``, ``small_cnn``, ``cbr``); importing
``medtransfer.models`` imports them, so :data:`NETS` is complete whenever it is reachable.

Registering a net imports no Keras: a spec's metadata are plain values and its
``build_backbone`` / ``preprocess_input`` import Keras when first called. So ``medtransfer
list`` and ``--help`` answer without loading TensorFlow (seconds), and a new net is still
one registration.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medtransfer.registry import Registry

if TYPE_CHECKING:
    import keras

BuildBackbone = Callable[[tuple[int, int, int], "str | Path | None"], "keras.Model"]


@dataclass(frozen=True)
class NetSpec:
    """What medtransfer knows about one net.

    Attributes:
        name: the CLI name (``--net``).
        description: one line for ``medtransfer list``.
        default_input_size: side of the square input the net was designed for.
        min_input_size: the smallest side the backbone accepts; below it Keras refuses the
            input or a feature map would shrink to nothing.
        imagenet: whether Keras publishes ImageNet weights for the backbone.
        imagenet_file: the name Keras caches the ``include_top=False`` ImageNet weights under
            in ``$KERAS_HOME/models``; ``None`` without ImageNet weights.
        imagenet_url: where Keras downloads that file from; ``None`` without ImageNet weights.
        imagenet_file_hash: the hash Keras checks a download against (``None``: no check).
        block_pattern: a regular expression over the backbone's layer names whose first
            group names the block a layer belongs to; the last matching layer of each block
            is its output (see :meth:`block_outputs`). It marks the net's natural stages,
            the unit of ``medtransfer similarity``.
        blocks: the blocks in words, for ``medtransfer list`` (which builds no net).
        preprocess_input: the net's ``keras.applications`` ``preprocess_input`` (for
            ``--scaling native``); ``None`` for nets that expect pixels in [0, 1]. It may
            import Keras when called, never when registered.
        build_backbone: ``build_backbone(input_shape, weights)`` with ``weights`` ``None``
            (Keras default initialisers) or a local weights file; returns the backbone
            without top and without pooling, named ``"backbone"``. It imports Keras when
            called, never when registered.
    """

    name: str
    description: str
    default_input_size: int
    min_input_size: int
    imagenet: bool
    imagenet_file: str | None
    imagenet_url: str | None
    preprocess_input: Callable | None
    build_backbone: BuildBackbone
    imagenet_file_hash: str | None = None
    block_pattern: str | None = None
    blocks: str = ""

    def block_outputs(self, backbone: keras.Model) -> list[str]:
        """The names of the layers that end each block of a built backbone, bottom first.

        Args:
            backbone: a backbone built by :attr:`build_backbone` (at any input size).

        Returns:
            One layer name per block, in Keras order: for each block (the first group of
            :attr:`block_pattern`), the last layer whose name matches.

        Raises:
            ValueError: the net registers no block pattern, or it matches no layer.
        """
        if not self.block_pattern:
            raise ValueError(f"net '{self.name}' registers no block_pattern")
        pattern = re.compile(self.block_pattern)
        last_layer: dict[str, str] = {}  # insertion order: the order blocks first appear
        for layer in backbone.layers:
            match = pattern.match(layer.name)
            if match:
                last_layer[match.group(1)] = layer.name
        if not last_layer:
            raise ValueError(f"block_pattern of net '{self.name}' matches no layer")
        return list(last_layer.values())


NETS: Registry[NetSpec] = Registry("net")


def get_net(name: str) -> NetSpec:
    """Returns the spec of net ``name``.

    Args:
        name: a registered net name, for example ``"small_cnn"``.

    Returns:
        The :class:`NetSpec` registered under ``name``.

    Raises:
        MedtransferError: ``name`` is not registered (the message lists the valid nets and
            suggests the closest one).
    """
    return NETS.get(name)
