"""The W+E regime, freezing in a real run, strategies and precision, in-process.

The model that ``run_experiment`` builds is recorded with its initial weights, so the
tests compare exactly what training changed and what it left alone.
"""

import json

import keras
import numpy as np
import pytest
from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

from medtransfer.config import RunConfig
from medtransfer.models.classifier import get_backbone
from medtransfer.models.freezing import backbone_layers
from medtransfer.training import run as run_module
from medtransfer.training.run import run_experiment


@pytest.fixture
def recorded(monkeypatch):
    """Records each model run_experiment builds, with a copy of its initial weights."""
    models = []
    build = run_module.build_model

    def build_and_record(*args, **kwargs):
        model = build(*args, **kwargs)
        initial = [[np.array(w) for w in layer.get_weights()]
                   for layer in backbone_layers(get_backbone(model))]
        head = [np.array(w) for w in model.layers[-1].get_weights()]
        models.append((model, initial, head))
        return model

    monkeypatch.setattr(run_module, "build_model", build_and_record)
    return models


def tiny_config(tmp_path, data_dir, **changes):
    values = dict(dataset="digits", net="small_cnn", image_size=16, batch_size=64, lr=1e-2,
                  train_size=200, logdir=str(tmp_path), data_dir=str(data_dir),
                  experiment="regime", strategy="default")
    return RunConfig(**{**values, **changes})


def unchanged(before, layer):
    return all(np.array_equal(b, a) for b, a in zip(before, layer.get_weights(), strict=True))


def test_warmup_trains_only_the_head(tmp_path, digits_data_dir, recorded):
    result = run_experiment(tiny_config(tmp_path, digits_data_dir, epochs="1+0", freeze=0.0))
    model, initial, head = recorded[0]
    layers = backbone_layers(get_backbone(model))
    assert all(unchanged(before, layer) for before, layer in zip(initial, layers, strict=True))
    assert not np.array_equal(head[0], model.layers[-1].get_weights()[0])
    assert result.metrics["epochs_warmup"] == 1 and result.metrics["best_epoch"] == 1
    # --train-size 200 trains on 200 images; validation and test keep every image.
    assert result.metrics["train_images"] == 200
    assert (result.metrics["validation_images"], result.metrics["test_images"]) == (180, 179)


def test_finetune_freezes_the_bottom_fraction(tmp_path, digits_data_dir, recorded):
    result = run_experiment(tiny_config(tmp_path, digits_data_dir, epochs="0+1", freeze=0.5))
    model, initial, _ = recorded[0]
    layers = backbone_layers(get_backbone(model))
    weighted = [i for i, layer in enumerate(layers) if layer.get_weights()]
    # small_cnn: conv, bn, pool per block; floor(0.5 * 12) = 6 -> blocks 1-2 frozen.
    assert result.metrics["frozen_layers"] == 6 and result.metrics["total_layers"] == 12
    for i in weighted:
        # Frozen BatchNorm runs in inference mode: its moving statistics stay too.
        assert unchanged(initial[i], layers[i]) == (i < 6), layers[i].name


def test_epochs_are_numbered_across_phases_and_each_phase_traces_its_steps_once(
        tmp_path, digits_data_dir, monkeypatch, rewritten):
    # Keras' steps run in Python only while a tf.function traces them. Left to itself,
    # Keras traces the training step twice (the metrics' variables are created in the
    # first trace) and the prediction step twice (the last batch is smaller); a trace of
    # mobilenet takes seconds. 200 training, 180 validation and 179 test images in
    # batches of 64: every split ends on a smaller batch.
    traced = []
    for step in ("train_step", "predict_step"):
        def counted(self, data, original=getattr(TensorFlowTrainer, step), step=step):
            traced.append(step)
            return original(self, data)
        monkeypatch.setattr(TensorFlowTrainer, step, counted)
    result = run_experiment(tiny_config(tmp_path, digits_data_dir, epochs="2+1"))
    history = (result.run_dir / "history.csv").read_text().splitlines()[1:]
    assert [line.split(",")[:2] for line in history] == [
        ["1", "warmup"], ["2", "warmup"], ["3", "finetune"]]
    # One trace of each per phase (the test split reuses phase 2's prediction trace).
    assert traced == ["train_step", "predict_step"] * 2
    # Its datasets, BatchNorm pass and evaluation were traced as written.
    assert rewritten == []


@pytest.mark.slow
def test_mirrored_strategy_over_two_logical_cpus(tmp_path, digits_data_dir):
    result = run_experiment(tiny_config(tmp_path, digits_data_dir, epochs="0+1",
                                        strategy="mirrored", batch_size=32))
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["global_batch_size"] == 64
    assert metrics["status"] == "complete" and 0 <= metrics["test_auc_micro"] <= 1


def test_mixed_precision_keeps_a_float32_output(tmp_path, digits_data_dir, recorded):
    # Moving BatchNorm statistics: float16 is slow on a CPU, and the re-estimation under
    # mixed precision has its own test (test_precise_bn.py).
    result = run_experiment(tiny_config(tmp_path, digits_data_dir, epochs="0+1",
                                        mixed_precision=True, bn_stats="moving"))
    model = recorded[0][0]
    assert get_backbone(model).layers[1].compute_dtype == "float16"
    assert model.layers[-1].compute_dtype == "float32"
    assert model.output.dtype == "float32"
    assert result.metrics["status"] == "complete"
    assert keras.mixed_precision.global_policy().name == "float32"  # reset after the run


def test_train_seconds_stop_at_the_last_training_step(tmp_path, digits_data_dir, monkeypatch):
    # StopOnDivergence checks every weight at the epoch's end, before the recorder runs;
    # made half a second slower here, that check must not count as training time.
    import time

    import pandas as pd

    from medtransfer.training import callbacks

    times = {}
    begin, end = callbacks.StopOnDivergence.on_epoch_begin, callbacks.StopOnDivergence.on_epoch_end

    def timed_begin(self, epoch, logs=None):
        times[epoch] = [time.perf_counter()]
        begin(self, epoch, logs)

    def slow_end(self, epoch, logs=None):
        times[epoch].append(time.perf_counter())
        time.sleep(0.5)
        end(self, epoch, logs)

    monkeypatch.setattr(callbacks.StopOnDivergence, "on_epoch_begin", timed_begin)
    monkeypatch.setattr(callbacks.StopOnDivergence, "on_epoch_end", slow_end)
    result = run_experiment(tiny_config(tmp_path, digits_data_dir, epochs="0+2"))
    history = pd.read_csv(result.run_dir / "history.csv")
    for epoch, (started, checked) in times.items():
        # The recorder's epoch starts after StopOnDivergence's (it comes later in the
        # list) and its last step ends before the check: at most the span between them.
        assert history["train_seconds"][epoch] <= checked - started
        assert history["seconds"][epoch] > 0.5
    # metrics.json's totals mean what history.csv's columns mean (issue #25.4).
    assert result.metrics["train_seconds"] == sum(history["train_seconds"].tolist())
    assert result.metrics["epoch_seconds"] == sum(history["seconds"].tolist())
    assert result.metrics["epoch_seconds"] > 2 * 0.5
    # Per phase, every epoch's training steps (issue #26.4); 0+2 has no phase 1.
    assert result.metrics["images_per_second_finetune"] == pytest.approx(
        2 * result.metrics["train_images"] / sum(history["train_seconds"].tolist()))
    assert result.metrics["images_per_second_warmup"] is None
    assert result.metrics["wall_seconds"] > result.metrics["epoch_seconds"]


def test_callbacks_are_called_in_both_phases_after_the_runs_own(tmp_path, digits_data_dir):
    # The benchmark's model alone trains in such a callback, between the run's epochs.
    import pandas as pd

    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((epoch, self.model.optimizer.iterations.numpy(), dict(logs)))

    result = run_experiment(tiny_config(tmp_path, digits_data_dir, epochs="1+2"),
                            callbacks=[Record()])
    history = pd.read_csv(result.run_dir / "history.csv")
    assert [epoch for epoch, _, _ in seen] == [0, 1, 2]
    for epoch, _, logs in seen:
        # Called after the recorder: the epoch's validation is in the logs.
        assert logs["val_auc_micro"] == pytest.approx(history["val_auc_micro"][epoch])
    # Phase 2 compiles a fresh optimizer: its steps restart from zero.
    steps = 200 // 64 + 1
    assert [int(iterations) for _, iterations, _ in seen] == [steps, steps, 2 * steps]
