"""The study across runs: grids of runs, on one machine or many, and the report that
compares them.

- ``grid``: reads a sweep file and expands its grids into the list of runs.
- ``sweep``: ``run_sweep(path)``, a sweep on this machine, each run in its own process.
- ``distributed``: spreads a sweep over many machines with keras-tuner's chief and workers.
- ``launch``: what both share: one run in its own process, how it ended (complete,
  failed, held by another process), the plan, the progress line and the summary.
- ``report``: ``build_report(experiment_dir)``, an experiment's runs as the study's tables.
- ``stats``: stratified bootstrap intervals of test AUCs and paired bootstraps of differences.
- ``figures``: the study's figures as small matplotlib functions (Agg, no pyplot).
"""
