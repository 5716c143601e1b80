"""The study across runs: grids of runs, on one machine or many, and the report that
compares them.

- ``grid``: reads a sweep file and expands its grids into the list of runs.
- ``sweep``: ``run_sweep(path)``, a sweep on this machine, each run in its own process.
- ``distributed``: spreads a sweep over many machines with keras-tuner's chief and workers.
- ``report``: ``build_report(experiment_dir)``, an experiment's runs as the study's tables,
  written as summary.md and results.csv; built from:
  - ``runs``: the runs on the study's axes, and the runs the sweep file plans;
  - ``labels``: task and init labels, run states, numbers and markdown tables as text;
  - ``resampling``: each run's bootstrap resamples, cached beside it;
  - ``tables``: the tables (cells, freeze levels, improvement, paired differences);
  - ``speed``: speed-up of convergence from two runs' validation curves;
  - ``checks``: a sweep file's structured ``expect`` checked against the numbers;
  - ``panels``: what each figure shows.
- ``stats``: stratified bootstrap intervals of test AUCs and paired bootstraps of differences.
- ``figures``: the study's figures as small matplotlib functions (Agg, no pyplot).
"""
