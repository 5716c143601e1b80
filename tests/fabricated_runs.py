"""Run directories with known numbers, written through the same writers a run uses."""

import csv

from medtransfer.config import RunConfig, save_config
from medtransfer.training.rundir import RunDirectory


def make_run(experiment, *, dataset="cancer", net="inception_v3", init="glorot", freeze=0.0,
             seed=0, epochs="3+50", val_aucs=(), test_auc=None, status="complete",
             predictions=None, metrics=None, **config_fields):
    """Writes config.yaml, history.csv and (unless in progress) metrics.json.

    Args:
        experiment: the experiment folder.
        val_aucs: validation micro AUC per epoch, from epoch 1.
        test_auc: metrics.json's test_auc_micro.
        status: "complete", "diverged", or None for a run still in progress.
        predictions: ``(class_names, [(id, label, [p per class]), ...])`` for
            predictions_test.csv.
        metrics: more metrics.json keys of a complete run (test_auc_macro, ...).

    Returns:
        The RunDirectory.
    """
    # The dataset's and net's defaults otherwise, so that run ids are the study's.
    config = RunConfig(dataset=dataset, net=net, init=init, freeze=freeze, seed=seed,
                       epochs=epochs, num_classes=2, experiment=experiment.name,
                       logdir=str(experiment.parent), **config_fields)
    directory = RunDirectory(config.run_dir)
    directory.create()
    save_config(config, directory.config)
    directory.write_history([
        {"epoch": epoch, "phase": "finetune", "loss": 1.0, "val_auc_micro": value}
        for epoch, value in enumerate(val_aucs, start=1)
    ])
    if predictions is not None:
        class_names, rows = predictions
        with directory.predictions.open("w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["id", "label", *(f"prob_{name}" for name in class_names)])
            for image_id, label, probabilities in rows:
                writer.writerow([image_id, label, *probabilities])
    if status == "complete":
        best = max(val_aucs)
        directory.write_metrics({
            "run_id": config.run_id, "dataset": dataset, "net": net, "init": init,
            "freeze": freeze, "seed": seed, "best_epoch": list(val_aucs).index(best) + 1,
            "val_auc_micro_best": best, "test_auc_micro": test_auc, "test_accuracy": 0.5,
            "status": "complete", **(metrics or {}),
        })
    elif status is not None:
        directory.write_metrics({"run_id": config.run_id, "status": status,
                                 "diverged_epoch": len(val_aucs) + 1})
    return directory
