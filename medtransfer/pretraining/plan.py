"""What a pretraining is: its options and its directory (no TensorFlow here).

A pretraining is described by a :class:`~medtransfer.config.RunConfig` holding only what
pretraining uses (:data:`PRETRAIN_FIELDS`; every other field keeps its default), with
``init: glorot`` (the encoder starts random) and ``epochs: 0+E`` (E epochs, no warm-up:
there is no head to warm up). Its directory is
``<logdir>/<experiment>/<method>/<pretrain id>``: one folder down from the runs, so that
``report`` (which reads the folders directly under the experiment) does not take it for
a run, and a run transferred from it reads as "transfer from autoencoder".
"""

from __future__ import annotations

from pathlib import Path

from medtransfer.config import RunConfig, freeze_text, run_id
from medtransfer.errors import MedtransferError, look_up_option

METHODS = ("autoencoder",)
DEFAULT_EPOCHS = 10
"""The MedMNIST exercise trained its autoencoder for 10 epochs."""
DEFAULT_LR = 1e-3
"""Adam's usual rate for an autoencoder trained from scratch: the datasets' rates
(1e-5 for cancer) are for fine-tuning a classifier."""
PRETRAIN_FIELDS = ("dataset", "net", "image_size", "seed", "lr", "batch_size", "train_size",
                   "classes", "deterministic", "cache_limit", "experiment", "logdir",
                   "data_dir")
"""The run options a pretraining takes; the others (init, freeze, augmentation, head, ...)
are the classifier's."""
INHERITED_FIELDS = ("dataset", "net", "image_size", "seed", "batch_size", "classes",
                    "deterministic", "cache_limit", "experiment", "logdir", "data_dir")
"""What a sweep's pretraining step takes from the run that uses it, unless the step says
otherwise: not lr (pretraining's own default), not train_size (an autoencoder needs no
labels, so by default it learns from every training image, as in the exercise)."""


def check_method(method: str) -> str:
    """Returns ``method`` if it is a pretraining method, else fails with a did-you-mean."""
    return look_up_option(method, METHODS, "pretraining method",
                          see=f"The methods are {', '.join(METHODS)}.")


def pretrain_config(config: RunConfig, epochs: int = DEFAULT_EPOCHS) -> RunConfig:
    """The pretraining's config: ``config``'s :data:`PRETRAIN_FIELDS`, ``epochs`` epochs,
    lr :data:`DEFAULT_LR` unless ``config`` sets one.

    Raises:
        MedtransferError: ``epochs`` below 1.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise MedtransferError(
            f"Pretraining epochs must be a whole number of at least 1, not {epochs!r}; for "
            "example --epochs 10.")
    kept = {name: getattr(config, name) for name in PRETRAIN_FIELDS}
    if kept["lr"] is None:
        kept["lr"] = DEFAULT_LR
    return RunConfig(**kept, epochs=f"0+{epochs}")


def pretrain_epochs(config: RunConfig) -> int:
    """The epochs of a pretraining config (``0+E``: E)."""
    return config.total_epochs


def pretrain_id(config: RunConfig, method: str = "autoencoder") -> str:
    """The pretraining directory's name: the run id of its config with ``<method>`` in
    place of ``glorot-f0.00`` and ``e10`` for ``e0+10``, for example
    ``digits-small_cnn-autoencoder-s0-e10-lr0.001``."""
    base = f"-{config.init}-f{freeze_text(config.freeze)}-"
    return run_id(config).replace(base, f"-{method}-", 1).replace("-e0+", "-e", 1)


def pretrain_dir(config: RunConfig, method: str = "autoencoder") -> Path:
    """``<logdir>/<experiment>/<method>/<pretrain id>``."""
    return Path(config.logdir) / config.experiment / method / pretrain_id(config, method)
