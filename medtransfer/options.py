"""The option vocabularies and checks that every layer shares, below all of them.

``config`` (the run's schema), ``data`` (``prepare``'s image formats and seed) and
``models`` (the named inits) all need these; they live here, importing nothing of
medtransfer but ``errors``, so that each of them imports downwards only (see
tests/test_imports.py).
"""

from __future__ import annotations

from medtransfer.errors import MedtransferError

SCALINGS = ("unit", "native")
CLASS_WEIGHTS = ("none", "balanced")
STRATEGIES = ("auto", "mirrored", "default")
BN_STATS = ("precise", "moving")
OPTIMIZERS = ("adam", "sgd")
"""``--optimizer``: Adam (the study's) or SGD with momentum 0.9."""
LR_SCHEDULES = ("constant", "plateau", "multistep")
"""``--lr-schedule``; see ``medtransfer.training.schedule``."""
IMAGE_FORMATS = ("bmp", "png")
"""How ``prepare`` may store images (``--image-format``); both lossless, see
``medtransfer.data.images.encode_image``."""
INITS = ("glorot", "imagenet", "mean_var")
"""The named inits; any other ``--init`` must be an existing path."""
SEED_LIMIT = 2**32


def check_seed(seed: int, option: str) -> None:
    """Fails unless ``seed`` is a valid NumPy / TensorFlow seed, 0 <= seed < 2**32.

    Raises:
        MedtransferError: naming ``option``, the value and the valid range.
    """
    if not 0 <= seed < SEED_LIMIT:
        raise MedtransferError(
            f"{option} {seed} is outside [0, 2**32 - 1]. A seed is a whole number from 0 to "
            f"{SEED_LIMIT - 1}; leave it out for the default 0."
        )
