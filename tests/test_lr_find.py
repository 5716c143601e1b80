"""lr-find: the range test's arithmetic by hand, and the real CLI on digits."""

import csv
import json

import numpy as np
import pytest

from medtransfer.cli import main
from medtransfer.training.rundir import scan_experiment
from medtransfer.tune.lr_find import (
    SKIP_START,
    exploded,
    lr_schedule,
    smooth_losses,
    suggest_lr,
)


def test_schedule_grows_exponentially_from_min_to_max():
    rates = lr_schedule(5, 1e-4, 1.0)
    np.testing.assert_allclose(rates, [1e-4, 1e-3, 1e-2, 1e-1, 1.0])


def test_smoothing_is_a_bias_corrected_moving_average():
    # beta 0.5: a1 = 0.5, s1 = 0.5 / 0.5 = 1; a2 = 0.25 + 1 = 1.25, s2 = 1.25 / 0.75;
    # a3 = 0.625 + 2 = 2.625, s3 = 2.625 / 0.875 = 3.
    np.testing.assert_allclose(smooth_losses([1.0, 2.0, 4.0], beta=0.5), [1.0, 5 / 3, 3.0])


def test_explodes_past_four_times_the_minimum_or_at_nan():
    assert not exploded(np.array([3.0, 1.0, 4.0]))
    assert exploded(np.array([3.0, 1.0, 4.01]))
    assert exploded(np.array([3.0, 1.0, np.nan]))


def test_suggestion_is_the_steepest_fall_before_the_minimum():
    rates = 10.0 ** np.arange(-6, 0)  # one decade per step
    # Slopes (central differences, per decade): -0.1, -0.5, -1.45, -0.5, 2.0, 3.0 (last
    # one-sided). Steepest: step 2 (lr 1e-4); minimum at step 3 (lr 1e-3).
    suggestion = suggest_lr(rates, np.array([4.0, 3.9, 3.0, 1.0, 2.0, 5.0]))
    assert suggestion.steepest == pytest.approx(1e-4)
    assert suggestion.minimum == pytest.approx(1e-3)
    assert suggestion.minimum_over_10 == pytest.approx(1e-4)
    assert suggestion.lr == suggestion.steepest


def test_suggestion_skips_the_noisy_start_of_a_long_curve():
    rates = lr_schedule(40, 1e-6, 1.0)
    curve = np.linspace(3.0, 1.0, 40)
    curve[0] = 10.0  # one noisy first batch: the steepest slope, without the skip
    suggestion = suggest_lr(rates, curve)
    assert suggestion.steepest >= rates[SKIP_START]


def test_a_loss_that_only_rises_suggests_the_minimum_over_10():
    rates = lr_schedule(12, 1e-6, 1e-1)
    suggestion = suggest_lr(rates, np.linspace(1.0, 3.0, 12))
    assert suggestion.steepest is None
    assert suggestion.lr == pytest.approx(1e-7)


def test_too_few_steps_is_refused_before_any_work(capsys):
    assert main(["lr-find", "--dataset", "digits", "--steps", "5"]) == 2
    error = capsys.readouterr().err
    assert "--steps 5" in error and "Traceback" not in error


@pytest.mark.slow
def test_digits_curve_falls_then_rises_and_suggests_a_usable_rate(tmp_path, digits_data_dir,
                                                                 capsys):
    logdir = tmp_path / "logs"
    assert main(["lr-find", "--dataset", "digits", "--net", "small_cnn", "--image-size", "16",
                 "--batch-size", "16", "--steps", "80", "--seed", "1",
                 "--logdir", str(logdir), "--data-dir", str(digits_data_dir)]) == 0
    printed = capsys.readouterr().out
    out = logdir / "lr-find" / "digits-small_cnn-glorot-f0.00-s1-bs16-px16"
    # Only the range test's own files: nothing a sweep or report takes for a run.
    assert sorted(path.name for path in out.iterdir()) == [
        "lr_find.csv", "lr_find.png", "suggestion.json"]
    assert [path.name for path in (logdir / "lr-find").iterdir()] == [out.name]
    assert scan_experiment(logdir / "lr-find") == []  # report sees no run, broken or not
    assert (out / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    with (out / "lr_find.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == ["step", "lr", "loss", "smoothed_loss"]
    assert 10 < len(rows) <= 80
    rates = np.array([float(row["lr"]) for row in rows])
    losses = np.array([float(row["loss"]) for row in rows])
    smoothed = np.array([float(row["smoothed_loss"]) for row in rows])
    assert [int(row["step"]) for row in rows] == list(range(1, len(rows) + 1))
    np.testing.assert_allclose(rates, lr_schedule(80)[: len(rows)], rtol=1e-6)
    np.testing.assert_allclose(smoothed, smooth_losses(losses), rtol=1e-5)
    # Falls, then rises: the minimum is well below both ends, and inside the range.
    low = int(np.argmin(smoothed))
    assert 0 < low < len(rows) - 1
    assert smoothed[0] > 1.2 * smoothed[low] and smoothed[-1] > 1.2 * smoothed[low]

    suggestion = json.loads((out / "suggestion.json").read_text())
    for key in ("lr", "steepest", "minimum_over_10"):
        assert 1e-5 <= suggestion[key] <= 1e-1, (key, suggestion)
    assert suggestion["lr"] == suggestion["steepest"]
    assert suggestion["config"]["image_size"] == 16 and "lr" not in suggestion["config"]
    assert f"--lr {suggestion['lr']:.2g}" in printed
