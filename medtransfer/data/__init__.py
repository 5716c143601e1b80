"""Datasets: the registry of source layouts, ``prepare`` (layout -> split.csv, shards,
manifest.json, rejected.csv), and the tf.data pipeline with augmentation."""
