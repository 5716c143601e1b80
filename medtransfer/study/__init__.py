"""The study across runs: grids of runs and the report that compares them.

- ``report``: ``build_report(experiment_dir)``, an experiment's runs as the study's tables.
- ``stats``: stratified bootstrap intervals of test AUCs and paired bootstraps of differences.
- ``figures``: the study's figures as small matplotlib functions (Agg, no pyplot).
"""
