"""The Python API (``import medtransfer as mt``): cheap to import, documented, and the same
implementation as the command line."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import medtransfer as mt
from medtransfer.errors import MedtransferError

ROOT = Path(__file__).resolve().parents[1]
API_DOC = ROOT / "docs" / "api.md"
# Keys of metrics.json that measure the machine, not the run.
TIMING_KEYS = {"train_seconds", "epoch_seconds", "images_per_second", "wall_seconds",
               "images_per_second_warmup", "images_per_second_finetune"}


def plain_signature(function) -> str:
    """A signature as docs/api.md writes it: parameters and defaults, no annotations."""
    signature = inspect.signature(function)
    parameters = [p.replace(annotation=inspect.Parameter.empty)
                  for p in signature.parameters.values() if p.name != "self"]
    return str(signature.replace(parameters=parameters,
                                 return_annotation=inspect.Signature.empty))


def test_importing_medtransfer_loads_neither_tensorflow_nor_pandas():
    code = ("import sys, medtransfer as mt; "
            "print(sorted(m for m in ('tensorflow', 'pandas', 'keras') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


def test_all_names_exactly_the_public_functions_and_classes():
    assert sorted(mt.__all__) == ["MedtransferError", "Report", "Run", "estimate",
                                  "list_datasets",
                                  "list_nets",
                                  "load_run", "prepare", "pretrain", "report", "run", "sweep",
                                  "tsne"]
    for name in mt.__all__:
        assert getattr(mt, name) is not None
    assert mt.MedtransferError is MedtransferError
    with pytest.raises(AttributeError, match="no attribute 'runn'"):
        mt.runn  # noqa: B018


@pytest.mark.parametrize("name", [n for n in mt.__all__ if n != "MedtransferError"])
def test_every_public_name_is_documented_with_its_signature_and_purpose(name):
    text = API_DOC.read_text()
    assert f"### `mt.{name}`" in text, f"docs/api.md has no section for mt.{name}"
    section = text.split(f"### `mt.{name}`", 1)[1].split("\n### ", 1)[0]
    obj = getattr(mt, name)
    purpose = inspect.getdoc(obj).splitlines()[0]
    assert purpose in section, f"docs/api.md: mt.{name} lacks its docstring's first line"
    if inspect.isfunction(obj):
        assert f"mt.{name}{plain_signature(obj)}" in section, (
            f"docs/api.md: mt.{name}'s signature differs from the code")
    else:
        for member, value in vars(obj).items():
            if not member.startswith("_") and (inspect.isfunction(value)
                                               or isinstance(value, property)):
                assert f"`{name}.{member}" in section, f"docs/api.md lacks {name}.{member}"


def test_list_nets_and_list_datasets_are_the_registries(tmp_path):
    nets = mt.list_nets()
    assert nets.loc["small_cnn", "default_input"] == 128
    assert nets.loc["inception_v3", "default_input"] == 299
    assert bool(nets.loc["densenet121", "imagenet"]) and not bool(nets.loc["cbr_tiny", "imagenet"])
    datasets = mt.list_datasets(data_dir=tmp_path)
    assert datasets.loc["digits", "prepared"] == "bundled"
    assert datasets.loc["cancer", "prepared"] == "no"
    assert datasets.loc["cancer", "lr"] == pytest.approx(1e-5)
    assert datasets.loc["retina", "classes"] == 5


def test_list_datasets_has_the_rows_medtransfer_list_prints(tmp_path, capsys):
    from medtransfer.cli import main

    assert main(["list", "--data-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for name, row in mt.list_datasets(data_dir=tmp_path).iterrows():
        assert f"  {name:<14}{row['classes'] if row['classes'] is not pd.NA else '-':>8}" \
            f"{row['lr']:>8g}  {row['prepared']:<9} {row['augmentation']}" in printed


def test_prepare_through_the_api_is_the_commands_prepare(tmp_path):
    from layouts import write_folder

    from medtransfer.cli import main

    source = write_folder(tmp_path / "source").source
    result = mt.prepare("folder", source=source, out=tmp_path / "api", workers=1,
                        progress=False)
    assert not result.skipped and result.path == tmp_path / "api"
    assert main(["prepare", "folder", "--source", str(source), "--out", str(tmp_path / "cli"),
                 "--workers", "1", "--no-progress"]) == 0
    for name in ("split.csv", "rejected.csv"):
        assert (tmp_path / "api" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()
    assert mt.prepare("folder", source=source, out=tmp_path / "api", progress=False).skipped


def test_sweep_through_the_api_returns_what_it_did(tmp_path, monkeypatch, capsys):
    from medtransfer.study import launch, sweep

    planned = mt.sweep(ROOT / "configs" / "demo.yaml", logdir=tmp_path, dry_run=True)
    assert (planned.total, planned.complete_before, planned.completed) == (13, 0, [])
    # A failed run is in the result, listed on stderr, not raised.
    failed = launch.SweepResult(2, 0, completed=["a"], failed={"b": "b/error.txt"})

    def one_failure(*args, **kwargs):
        raise launch.SweepFailed("1 run(s) of demo.yaml failed: b (b/error.txt).", failed)

    monkeypatch.setattr(sweep, "run_sweep", one_failure)
    assert mt.sweep(ROOT / "configs" / "demo.yaml", logdir=tmp_path) is failed
    assert "medtransfer sweep: error: 1 run(s) of demo.yaml failed" in capsys.readouterr().err


def test_a_misspelt_option_is_a_medtransfer_error_with_did_you_mean(tmp_path):
    with pytest.raises(MedtransferError, match="image_size"):
        mt.run(dataset="digits", image_sise=16, logdir=tmp_path)


def test_a_report_gives_its_tables_as_dataframes_and_shows_itself(tmp_path):
    from fabricated_runs import make_run

    experiment = tmp_path / "study"
    make_run(experiment, init="glorot", val_aucs=[0.70, 0.80, 0.82], test_auc=0.80)
    make_run(experiment, init="imagenet", val_aucs=[0.85, 0.90], test_auc=0.88)
    report = mt.report(experiment)
    assert list(report.main.columns) == ["dataset", "net", "glorot", "imagenet"]
    assert report.main.iloc[0][["dataset", "net", "glorot", "imagenet"]].tolist() == [
        "cancer", "inception_v3", "0.8000", "0.8800"]
    assert sorted(report.results["init"]) == ["glorot", "imagenet"]
    improvement = report.improvement["imagenet"]
    # (0.88 - 0.80) / 0.80 = +10%; glorot's best 0.82 at epoch 3, imagenet's 0.85 passes
    # it at epoch 1: 3 / 1 = 3.00x.
    assert improvement.iloc[0].tolist()[:3] == ["cancer", "+10.00% (1 of 1 nets)", "3.00×"]
    assert set(report.per_freeze) == {"imagenet"}  # glorot, at freeze 0 only, is its first column
    assert report.summary_markdown.startswith("# Report: study")
    shown = report._repr_markdown_()
    assert shown.startswith(report.main_text) and "data:image/png;base64," in shown


def test_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(MedtransferError, match="not a readable run directory"):
        mt.load_run(tmp_path)


@pytest.mark.slow
def test_the_api_and_the_cli_give_the_same_run_and_predictions(tmp_path, digits_data_dir,
                                                                 monkeypatch):
    from medtransfer.data.prepared import load_prepared
    from medtransfer.training import resolve

    loads = []
    monkeypatch.setattr(resolve, "load_prepared",
                        lambda *args: loads.append(args) or load_prepared(*args))
    options = {"dataset": "digits", "net": "small_cnn", "epochs": "0+1", "image_size": 16,
               "batch_size": 16, "train_size": 100, "deterministic": True}
    run = mt.run(**options, data_dir=digits_data_dir, logdir=tmp_path / "api",
                 experiment="same")
    assert len(loads) == 1, "the run read its dataset's split more than once"
    flags = [f"--{key.replace('_', '-')}" if value is True
             else f"--{key.replace('_', '-')}={value}" for key, value in options.items()]
    subprocess.run([sys.executable, "-m", "medtransfer", "run", *flags,
                    f"--data-dir={digits_data_dir}", f"--logdir={tmp_path / 'cli'}",
                    "--experiment=same"], check=True, capture_output=True, cwd=tmp_path)
    cli_dir = tmp_path / "cli" / "same" / run.run_id
    assert cli_dir.is_dir(), f"the CLI's run id differs from {run.run_id}"
    cli_metrics = json.loads((cli_dir / "metrics.json").read_text())
    assert {k: v for k, v in run.metrics.items() if k not in TIMING_KEYS} == {
        k: v for k, v in cli_metrics.items() if k not in TIMING_KEYS}

    loaded = mt.load_run(cli_dir)
    assert loaded.status == "complete" and loaded.config["net"] == "small_cnn"
    history = pd.read_csv(cli_dir / "history.csv")
    pd.testing.assert_frame_equal(loaded.history[history.columns], history,
                                  check_dtype=False)
    assert "test_auc_micro" in loaded._repr_html_() and loaded.run_id in loaded._repr_markdown_()
    assert '<img src="data:image/png;base64,' in loaded._repr_html_()
    assert [line.get_label() for line in loaded.figure().axes[1].get_lines()] == ["finetune"]

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
            images / f"{index}.png")
    (images / "broken.png").write_bytes(b"not a png")
    frame = loaded.predict(images)
    assert list(frame["path"]) == [str(images / f"{i}.png") for i in range(3)]
    assert [path for path, _ in frame.attrs["rejected"]] == [str(images / "broken.png")]
    probabilities = frame[[c for c in frame.columns if c.startswith("prob_")]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    from medtransfer.cli import main

    # The command in this process: the run above already showed a separate process agrees.
    assert main(["predict", str(cli_dir), str(images), "--out", str(tmp_path / "p.csv")]) == 0
    written = pd.read_csv(tmp_path / "p.csv", dtype={"predicted": str})
    assert list(written["predicted"]) == list(frame["predicted"])
    np.testing.assert_allclose(written.filter(like="prob_").to_numpy(), probabilities,
                               rtol=1e-7)
    model = loaded.model()
    assert model.output_shape == (None, 10)
    assert re.fullmatch(r"Run\('.*', status='complete'\)", repr(loaded))


NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"


def test_the_quickstart_notebook_is_kept_without_outputs():
    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.slow
def test_the_quickstart_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code"
               for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    # The per-freeze table shown, the figures inline, three images predicted.
    text = "".join(output.get("text", "") + output.get("data", {}).get("text/plain", "")
                   for output in outputs)
    assert "freeze 0" in text and "freeze 1" in text  # the per-freeze DataFrame
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) == 2
    assert len(list((tmp_path / "my_digits").glob("*.png"))) == 3
    assert len(list((tmp_path / "tensorboard_logs" / "quickstart").glob("digits-*"))) == 2
