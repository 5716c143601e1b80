"""tune-lr: a real keras-tuner search of short digits runs, interrupted and resumed."""

import json
import socket
import threading

import numpy as np
import pytest
import yaml

from medtransfer.cli import main
from medtransfer.config import RunConfig, load_config_file
from medtransfer.errors import MedtransferError
from medtransfer.study import distributed
from medtransfer.tune import tune_lr as tune_lr_module
from medtransfer.tune.tune_lr import round_lr, tune_lr


def test_rates_are_rounded_to_three_significant_digits():
    assert round_lr(0.000123456) == 0.000123
    assert round_lr(0.0603) == 0.0603


def test_bad_search_options_fail_before_any_run(capsys):
    assert main(["tune-lr", "--dataset", "digits", "--trials", "0"]) == 2
    assert "--trials 0" in capsys.readouterr().err
    assert main(["tune-lr", "--dataset", "digits", "--oracle", "bayesain"]) == 2
    assert "Did you mean 'bayesian'" in capsys.readouterr().err


@pytest.mark.slow
def test_search_resumes_after_interruption_and_writes_the_best_rate(
        tmp_path, digits_data_dir, monkeypatch, capsys):
    logdir = tmp_path / "logs"
    args = ["--dataset", "digits", "--net", "small_cnn", "--image-size", "16",
            "--batch-size", "16", "--train-size", "200", "--epochs", "0+1",
            "--logdir", str(logdir), "--data-dir", str(digits_data_dir)]
    trained = []
    real_train = tune_lr_module.train_trial

    def interrupted_on_second_trial(config):
        trained.append(config.lr)
        if len(trained) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the second run trains
        return real_train(config)

    from medtransfer.cli import _config_from_args, build_parser

    config = _config_from_args(build_parser().parse_args(["tune-lr", *args]))
    with pytest.raises(KeyboardInterrupt):
        tune_lr(config, trials=3, oracle="random", train=interrupted_on_second_trial)
    experiment = logdir / "tune-lr-digits-small_cnn"
    assert not (experiment / "best.yaml").exists()
    first, second = trained

    # The same command continues: trial 1 is not trained again, trial 2 gets its rate back.
    monkeypatch.setattr(tune_lr_module, "train_trial",
                        lambda config: trained.append(config.lr) or real_train(config))
    assert main(["tune-lr", *args, "--trials", "3", "--oracle", "random"]) == 0
    printed = capsys.readouterr().out
    assert trained[2] == second and len(trained) == 4 and first not in trained[2:]
    rates = [first, second, trained[3]]
    assert len(set(rates)) == 3 and all(1e-6 <= lr <= 1e-1 for lr in rates)

    runs = sorted(path for path in experiment.iterdir() if (path / "config.yaml").exists())
    assert len(runs) == 3
    metrics = {json.loads((run / "metrics.json").read_text())["lr"]:
               json.loads((run / "metrics.json").read_text()) for run in runs}
    assert sorted(metrics) == sorted(rates)
    assert all(m["status"] == "complete" for m in metrics.values())
    best_lr = max(metrics, key=lambda lr: metrics[lr]["val_auc_micro_best"])

    best = load_config_file(experiment / "best.yaml")
    assert best.lr == best_lr
    assert (best.dataset, best.net, best.image_size, best.train_size) == (
        "digits", "small_cnn", 16, 200)
    assert "epochs" not in yaml.safe_load((experiment / "best.yaml").read_text())
    assert f"best: --lr {best_lr:.3g}" in printed
    assert f"{metrics[best_lr]['val_auc_micro_best']:.4f}" in printed


def fake_metrics(config):
    """A run's metrics without training: validation AUC peaks at lr 1e-3."""
    return {"val_auc_micro_best": 1 - abs(np.log10(config.lr) + 3) / 10, "best_epoch": 1}


# The Gaussian process of 3-5 made-up points hits its length-scale bound; harmless here.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_search_grows_with_more_trials_and_refuses_another_range(tmp_path,
                                                                   digits_data_dir):
    config = RunConfig(dataset="digits", logdir=str(tmp_path), data_dir=str(digits_data_dir))
    seen = []

    def train(config):
        seen.append(config.lr)
        return fake_metrics(config)

    first = tune_lr(config, trials=3, oracle="bayesian", train=train)
    assert [trial.lr for trial in first.trials] == seen and len(set(seen)) == 3
    assert first.experiment_dir == tmp_path / "tune-lr-digits-small_cnn"
    assert first.best.val_auc == max(fake_metrics(config.replace(lr=lr))["val_auc_micro_best"]
                                     for lr in seen)

    more = tune_lr(config, trials=5, oracle="bayesian", train=train)
    assert len(seen) == 5 and [trial.lr for trial in more.trials] == seen
    assert load_config_file(more.best_file).lr == more.best.lr

    with pytest.raises(MedtransferError, match="min_lr 1e-06 then, 1e-05 now"):
        tune_lr(config, trials=6, min_lr=1e-5, train=train)
    assert len(seen) == 5


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_machines_share_a_search_through_the_chief(tmp_path, digits_data_dir, monkeypatch):
    """A real chief (gRPC on loopback) and a worker, in two threads of this process."""
    config = RunConfig(dataset="digits", logdir=str(tmp_path), data_dir=str(digits_data_dir))
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", str(free_port()))
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    serving, real_serve = threading.Event(), distributed.serve

    def serve(oracle, what):
        serving.set()  # the chief has taken its role: the worker's variables may be set
        real_serve(oracle, what)

    monkeypatch.setattr(distributed, "serve", serve)
    outcome = {}

    def chief_search():
        try:
            outcome["chief"] = tune_lr(config, trials=4, oracle="random",
                                       train=lambda config: pytest.fail("the chief trained"))
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            outcome["error"] = error
            serving.set()

    chief = threading.Thread(target=chief_search, daemon=True)
    chief.start()
    assert serving.wait(120) and "error" not in outcome, outcome
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")
    trained = []
    worker = tune_lr(config, trials=4, oracle="random",
                     train=lambda config: trained.append(config.lr) or fake_metrics(config))
    chief.join(120)
    assert not chief.is_alive() and "error" not in outcome, outcome

    assert worker.worker == "tuner0" and worker.best_file is None
    assert [trial.lr for trial in worker.trials] == trained and len(set(trained)) == 4
    result = outcome["chief"]
    assert [trial.lr for trial in result.trials] == trained
    best_lr = max(trained, key=lambda lr: fake_metrics(config.replace(lr=lr))[
        "val_auc_micro_best"])
    assert result.best.lr == best_lr == load_config_file(result.best_file).lr
    assert (result.experiment_dir / "tuner" / "oracle.json").exists()
