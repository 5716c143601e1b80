"""The study: a grid of runs, on one machine or many, and the report that compares them.

- ``grid``: reads a sweep config and expands its grids into the list of runs.
- ``sweep``: runs a sweep on this machine, each run in its own process.
- ``distributed``: spreads a sweep over many machines with keras-tuner's chief and workers.
"""
