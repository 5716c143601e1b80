"""Training: the W+E regime, exact AUC metrics, the run directory and ``run_experiment``."""
