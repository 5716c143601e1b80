"""Progress in a notebook is one live bar; in a terminal or log, lines (medtransfer.progress)."""

from __future__ import annotations

import io
import sys
import types

from medtransfer import progress
from medtransfer.data.prepare import _Progress


class ZMQInteractiveShell:
    """Stands in for the kernel's shell: only its class name tells a notebook apart."""


class TerminalInteractiveShell:
    """IPython in a terminal: lines, not a bar."""


def fake_ipython(monkeypatch, shell):
    module = types.ModuleType("IPython")
    module.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", module)


def test_only_a_jupyter_kernel_counts_as_a_notebook(monkeypatch):
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert not progress.in_notebook()
    fake_ipython(monkeypatch, None)
    assert not progress.in_notebook()
    fake_ipython(monkeypatch, TerminalInteractiveShell())
    assert not progress.in_notebook()
    fake_ipython(monkeypatch, ZMQInteractiveShell())
    assert progress.in_notebook()


def test_prepare_shows_a_bar_in_a_notebook_and_lines_elsewhere(monkeypatch):
    stream = io.StringIO()
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    lines = _Progress("digits", enabled=True, stream=stream)
    lines.start(40)
    for _ in range(40):
        lines.advance()
    lines.finish()
    assert stream.getvalue().count("prepare digits:") == 20  # every 5% in a log

    fake_ipython(monkeypatch, ZMQInteractiveShell())
    stream = io.StringIO()
    bar = _Progress("digits", enabled=True, stream=stream)
    bar.start(40)
    for _ in range(40):
        bar.advance()
    assert bar.bar is not None and bar.bar.n == 40 and bar.bar.total == 40
    bar.finish()
    assert stream.getvalue() == ""  # the bar, not lines


def test_a_sweep_in_a_notebook_counts_its_runs_on_one_bar(monkeypatch):
    from medtransfer.study.launch import COMPLETE, FAILED, Progress

    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert Progress(2).bar is None
    fake_ipython(monkeypatch, ZMQInteractiveShell())
    progress = Progress(2)
    progress.done(COMPLETE)
    assert progress.bar.n == 1 and progress.bar.postfix == "complete=1"
    progress.done(FAILED)
    assert progress.bar.n == 2 and progress.bar.postfix == "complete=1, failed=1"
    assert "2/2 done (1 complete, 1 failed)" in progress.line()


def test_a_run_in_a_notebook_advances_one_bar_per_epoch(monkeypatch, tmp_path, digits_data_dir):
    import medtransfer as mt

    fake_ipython(monkeypatch, ZMQInteractiveShell())
    bars = []
    real = progress.notebook_bar

    def recorded(total, description, unit):
        bars.append(real(total, description, unit))
        return bars[-1]

    monkeypatch.setattr("medtransfer.training.run.notebook_bar", recorded)
    run = mt.run(dataset="digits", epochs="1+1", image_size=16, batch_size=32,
                 train_size=50, data_dir=digits_data_dir, logdir=tmp_path)
    (bar,) = bars
    assert (bar.total, bar.n, bar.unit) == (2, 2, "epoch") and bar.desc == run.run_id
    assert "phase=finetune" in bar.postfix and "val_auc_micro=" in bar.postfix
