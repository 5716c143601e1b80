"""medtransfer's speed, measured against what a user would write instead and the hardware.

``python -m benchmarks`` (``make benchmark``) runs every figure and writes
``benchmarks/results.md``; ``--quick`` runs them at tiny sizes in about 90 CPU seconds.

- ``timing``: the one way to measure (sides take turns, best of several), peak memory.
- ``report``: figures, targets and the results table.
- ``photos``: synthetic photo-like JPEGs and the prepared dataset figures share.
- ``startup``: ``--help`` and ``list`` start-up time.
- ``input_pipeline``: the training input pipeline vs Keras' image_dataset_from_directory.
- ``training_ceiling``: a real run vs the same model fitted on tensors in memory.
- ``freezing``: training speed at freeze 1.0 and in phase 1 vs freeze 0.
- ``tracing``: a phase's first training step (its trace) with medtransfer's Adam vs Keras'.
- ``prepare_scaling``: ``prepare`` on every core vs one; memory of prepare and run.
- ``report_speed``: ``report`` on a study-sized experiment, first and repeated call.
- ``pipeline_throughput``: the pipeline's own design choices against their alternatives.

The entry point imports each figure's module only when that figure runs, so ``--help``
answers at once and ``--only`` pays for just the figures it names.
"""
