"""Resume equals no interruption (issue #7 point 4).

With ``deterministic``, a run killed after epoch k and started again gives a history.csv
equal, in every column but the wall-clock ones, to the run that was never interrupted:
every epoch's shuffle, augmentation and dropout are functions of (seed, epoch), and a
resumed phase gets its own optimizer state, or a fresh one at a phase boundary.

The kill is simulated in-process (faster than a subprocess; test_faults.py kills a real
one): the run raises right after epoch k's resume state is saved, before that epoch's
best weights are published, which is the latest a real kill can leave things.
"""

import csv

import pytest

from medtransfer.config import RunConfig
from medtransfer.training import callbacks
from medtransfer.training.run import run_experiment


class Killed(BaseException):
    """Stands in for SIGKILL: nothing in the run catches it."""


def killed_after(monkeypatch, epoch):
    save = callbacks.EpochRecorder._save_resume_state

    def save_then_die(self, number):
        save(self, number)
        if number == epoch:
            raise Killed

    monkeypatch.setattr(callbacks.EpochRecorder, "_save_resume_state", save_then_die)


def history(run_dir):
    """history.csv without the wall-clock columns, as text: equal means bit-identical."""
    with (run_dir / "history.csv").open() as stream:
        return [{key: value for key, value in row.items() if "seconds" not in key}
                for row in csv.DictReader(stream)]


def config_for(tmp_path, data_dir, experiment, **changes):
    # Augmentation, dropout and a trainable BatchNorm layer in phase 2 (freeze 0.5):
    # every random stream a resumed epoch must replay is in play.
    settings = dict(dataset="digits", net="small_cnn", image_size=16, batch_size=32,
                    train_size=160, lr=1e-3, seed=3, deterministic=True, strategy="default",
                    flips=True, noise=True, color=True, dropout=0.5,
                    logdir=str(tmp_path), data_dir=str(data_dir), experiment=experiment)
    settings.update(changes)
    return RunConfig(**settings)


def assert_resume_equals_no_interruption(tmp_path, data_dir, monkeypatch, kills, **changes):
    """Runs a config whole, and again killed after each epoch in ``kills`` and started
    again each time; both must log the same history and reach the same results."""
    whole = run_experiment(config_for(tmp_path, data_dir, "whole", **changes))
    killed = config_for(tmp_path, data_dir, "killed", **changes)
    for epoch in kills:
        with monkeypatch.context() as patch:
            killed_after(patch, epoch)
            with pytest.raises(Killed):
                run_experiment(killed)
    resumed = run_experiment(killed)
    assert history(resumed.run_dir) == history(whole.run_dir)
    for key in ("best_epoch", "val_auc_micro_best", "test_auc_micro", "test_accuracy"):
        assert resumed.metrics[key] == whole.metrics[key], key
    return history(resumed.run_dir)


@pytest.mark.slow
def test_kills_inside_phase_one_at_the_boundary_and_inside_phase_two(
        tmp_path, digits_data_dir, monkeypatch):
    # 2+2: killed after epoch 1 (inside phase 1), 2 (the boundary) and 3 (inside phase 2).
    # With SGD, the multistep schedule and affine augmentation (issue #23): the milestones
    # 0.5 x 4 = 2 and 0.75 x 4 = 3 give epochs 1-2 the lr, epoch 3 a tenth and epoch 4 a
    # hundredth, which each resumed epoch must get from its number alone.
    rows = assert_resume_equals_no_interruption(
        tmp_path, digits_data_dir, monkeypatch, [1, 2, 3], epochs="2+2", freeze=0.5,
        optimizer="sgd", lr_schedule="multistep", affine=True)
    assert [row["epoch"] for row in rows] == ["1", "2", "3", "4"]
    assert [float(row["lr"]) for row in rows] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-5])


@pytest.mark.slow
def test_phase_two_resumed_at_the_boundary_starts_a_fresh_adam(
        tmp_path, digits_data_dir, monkeypatch):
    # --freeze 1.0 trains the same head in both phases, so phase 1's Adam state would
    # fit phase 2's variables; the regime says phase 2 starts fresh, resumed or not.
    assert_resume_equals_no_interruption(tmp_path, digits_data_dir, monkeypatch, [1],
                                         epochs="1+1", freeze=1.0)

