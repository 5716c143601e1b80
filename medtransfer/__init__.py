"""medtransfer: does ImageNet transfer learning help on my medical images?

Use it from Python as ``import medtransfer as mt`` (the public API, ``__all__``, documented
in docs/api.md; anything not in ``__all__`` may change without notice)::

    run = mt.run(dataset="digits", net="small_cnn", epochs="1+4", image_size=32)
    run.history, run.metrics["test_auc_micro"], run.predict("my_digits/")

Importing it loads neither TensorFlow nor pandas: each function loads what it needs.

Subpackages, in the order data flows through them:

- ``medtransfer.data``: dataset registry, ``prepare`` (source layouts -> split + shards),
  and the tf.data input pipeline with augmentation.
- ``medtransfer.models``: net registry, backbones, the classifier head, freezing, inits.
- ``medtransfer.training``: the W+E regime, exact AUC metrics, the run directory,
  ``run_experiment(config) -> RunResult``.
- ``medtransfer.pretraining``: pretraining a backbone without labels (an autoencoder), for
  a run's ``--init``.
- ``medtransfer.study``: across runs: sweep files, the sweep, the report.
- ``medtransfer.serve`` / ``medtransfer.inspect``: using a finished run; looking inside it.
- ``medtransfer.tune``: choosing the learning rate: the range test (``lr-find``) and a
  keras-tuner search of real runs (``tune-lr``).
- ``medtransfer.api``: the functions below, which the command line calls too.
"""

from medtransfer.version import __version__  # noqa: F401 (medtransfer.__version__)

__all__ = [
    "MedtransferError",
    "Report",
    "Run",
    "estimate",
    "list_datasets",
    "list_nets",
    "load_run",
    "prepare",
    "pretrain",
    "report",
    "run",
    "sweep",
    "tsne",
]


def __getattr__(name: str):
    # PEP 562: the API module (and pandas with it) loads on first use, so that
    # `import medtransfer` and `medtransfer --help` stay instant.
    if name == "MedtransferError":
        from medtransfer.errors import MedtransferError

        return MedtransferError
    if name in __all__:
        from medtransfer import api

        return getattr(api, name)
    raise AttributeError(f"module 'medtransfer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
