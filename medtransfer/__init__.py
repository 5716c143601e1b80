"""medtransfer: does ImageNet transfer learning help on my medical images?

Subpackages, in the order data flows through them:

- ``medtransfer.data``: dataset registry, ``prepare`` (source layouts -> split + shards),
  and the tf.data input pipeline with augmentation.
- ``medtransfer.models``: net registry, backbones, the classifier head, freezing, inits.
- ``medtransfer.training``: the W+E regime, exact AUC metrics, the run directory,
  ``run_experiment(config) -> RunResult``.
- ``medtransfer.tune``: choosing the learning rate: the range test (``lr-find``) and a
  keras-tuner search of real runs (``tune-lr``).
"""

__version__ = "0.1.0"
