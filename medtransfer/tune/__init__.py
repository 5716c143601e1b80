"""Choosing the learning rate before the grid is run.

- ``lr_find``: the learning-rate range test (Smith 2017): one short pass of the real
  pipeline and model with a rate that grows exponentially, the smoothed loss against the
  rate, and a suggested ``--lr``.
- ``tune_lr``: the rate chosen by a keras-tuner search of short real runs, each an
  ordinary run directory, resumable, best by validation AUC.
"""
