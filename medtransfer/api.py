"""The Python API: every command of medtransfer as a function a notebook calls.

``import medtransfer as mt`` gives these functions (``medtransfer.__all__``); the command
line is a thin face over the same functions, so a keyword here is the command's option
with underscores (``--train-size`` is ``train_size=``), with the same defaults, the same
checks and the same one-paragraph :class:`MedtransferError` on bad input. Anything not in
``medtransfer.__all__`` may change without notice.

Importing this module is cheap: TensorFlow loads only when a function needs it.
"""

from __future__ import annotations

import dataclasses
import html
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from medtransfer.errors import MedtransferError
from medtransfer.machine import load_unused_keras_extras_on_first_use
from medtransfer.quiet import quiet_tensorflow_start

if TYPE_CHECKING:
    from medtransfer.config import RunConfig

# As on the command line: TensorFlow's start-up noise hidden when it first loads
# (MEDTRANSFER_VERBOSE=1 or the user's own TF_CPP_MIN_LOG_LEVEL shows it), and what Keras
# imports for features medtransfer never calls left to load when first used.
quiet_tensorflow_start()
load_unused_keras_extras_on_first_use()


class Run:
    """One run directory, read: its config, metrics and history; its model on demand.

    Attributes:
        path: the run directory.
        config: its resolved ``config.yaml`` as a dict.
        metrics: its ``metrics.json`` (empty while the run has not finished).
        status: ``complete``, ``running``, ``interrupted``, ``diverged`` ...
    """

    def __init__(self, path: str | Path):
        from medtransfer.study.labels import status_text
        from medtransfer.training.rundir import read_run

        record = read_run(path)
        if record.problem:
            raise MedtransferError(
                f"'{path}' is not a readable run directory: {record.problem}. Give a folder "
                "that run or sweep made (tensorboard_logs/<experiment>/<run_id>)."
            )
        self._record = record
        self.path = record.path
        self.config = dataclasses.asdict(record.config)
        self.metrics = dict(record.metrics)
        self.status = status_text(record, detail=False)

    @property
    def run_id(self) -> str:
        """The run directory's name, ``<dataset>-<net>-<init>-f<freeze>-s<seed>[-...]``."""
        return self.path.name

    @property
    def history(self) -> pd.DataFrame:
        """``history.csv``: one row per epoch (epoch, phase, loss, val_auc_micro, ...)."""
        return pd.DataFrame(self._record.history)

    def model(self):
        """The Keras classifier with the best checkpoint's weights (float32)."""
        return self._trained("model").model()

    def predict(self, inputs: str | Path | Sequence[str | Path], *,
                batch_size: int | None = None) -> pd.DataFrame:
        """Class probabilities of images, prepared exactly as ``medtransfer predict`` does.

        Args:
            inputs: image files, folders of images, or CSV files with a ``path`` column.
            batch_size: images per forward pass (default: the run's).

        Returns:
            One row per readable image: ``path``, ``predicted`` and ``prob_<class>`` per
            class. Images that cannot be read are in ``.attrs["rejected"]`` as
            ``(path, reason)`` pairs (and named on stderr).
        """
        from medtransfer.serve.predict import predict_frame

        if isinstance(inputs, str | Path):
            inputs = [inputs]
        return predict_frame(self.path, list(inputs), batch_size=batch_size)

    def figure(self):
        """Training loss and validation AUC per epoch (micro; a multi-label run's mean
        over findings), the phases apart (a Figure)."""
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        history = self.history
        mean = "val_auc_mean" in history.columns  # a multi-label run's primary metric
        figure = Figure(figsize=(7, 2.6), layout="constrained")
        loss, auc = figure.subplots(1, 2)
        for phase, rows in history.groupby("phase", sort=False) if len(history) else ():
            loss.plot(rows["epoch"], rows["loss"], marker="o", label=phase)
            auc.plot(rows["epoch"], rows["val_auc_mean" if mean else "val_auc_micro"],
                     marker="o", label=phase)
        for axes, label in ((loss, "training loss"),
                            (auc, f"validation AUC ({'mean' if mean else 'micro'})")):
            axes.set(xlabel="epoch", ylabel=label)
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(history):
            auc.legend(title="phase", fontsize="small")
        return figure

    def _trained(self, command: str):
        from medtransfer.training.rundir import open_run

        return open_run(self.path, command)

    def _summary_rows(self) -> list[tuple[str, str]]:
        keys = ("dataset", "net", "init", "freeze", "seed", "best_epoch",
                "val_auc_mean_best", "test_auc_mean",  # a multi-label run's primary metric
                "val_auc_micro_best", "test_auc_micro", "test_auc_macro", "test_accuracy")
        values = {**self.config, **self.metrics}
        return [("status", self.status)] + [
            (key, f"{values[key]:.4f}" if isinstance(values[key], float) and "auc" in key
             or key == "test_accuracy" else str(values[key]))
            for key in keys if key in values]

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, status={self.status!r})"

    def _repr_markdown_(self) -> str:
        rows = "\n".join(f"| {key} | {value} |" for key, value in self._summary_rows())
        return f"**{self.run_id}**\n\n| | |\n|---|---|\n{rows}\n"

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><th>{html.escape(key)}</th><td>{html.escape(value)}</td></tr>"
                       for key, value in self._summary_rows())
        return (f"<b>{html.escape(self.run_id)}</b><table>{rows}</table>"
                f"{_inline_png(self.figure())}")


def _inline_png(figure) -> str:
    """A matplotlib Figure as an <img> a notebook shows without any file."""
    import base64
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return f'<img src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def prepare(layout: str, *, source: str | Path | None = None, out: str | Path | None = None,
            data_dir: str | Path = "datasets", seed: int = 0, max_reject: float = 0.01,
            max_size: int = 512, image_format: str = "bmp", min_class_count: int | None = None,
            workers: int | None = None, force: bool = False, progress: bool = True,
            views: str | None = None, uncertain: str | None = None,
            label_columns: str | Sequence[str] | None = None, labels_column: str | None = None,
            labels_sep: str | None = None, group_column: str | None = None):
    """Prepares a downloaded dataset once: checked, split 8:1:1, stored (``medtransfer prepare``).

    Args:
        layout: a registered dataset (``cancer``, ``retina``, ...) or ``folder``, ``csv``,
            ``medmnist`` for your own images.
        source: the downloaded folder (``csv``: the CSV file; ``medmnist``: the ``.npz``).
        out: where to write it (default ``<data_dir>/<layout>``).
        data_dir: root of the prepared datasets.
        seed, max_reject, max_size, image_format, min_class_count, workers, force,
            progress: as the command's options of the same names.
        views, uncertain: chexpert's ``--views`` and ``--uncertain``.
        label_columns, labels_column, labels_sep, group_column: csv's multi-label and
            group options (``label_columns`` as a list or a comma-separated string).

    Returns:
        A ``PrepareResult`` (``path``, ``skipped``, ``counts``, ``num_rejected``,
        ``class_names``, ``manifest``).

    Example:
        >>> mt.prepare("folder", source="~/my_images", out="datasets/mynodules")
    """
    from medtransfer.data.prepare import prepare_dataset

    options = {"min_class_count": min_class_count} if min_class_count else {}
    if isinstance(label_columns, str):
        label_columns = [name.strip() for name in label_columns.split(",") if name.strip()]
    layout_options = {"views": views, "uncertain": uncertain, "label_columns": label_columns,
                      "labels_column": labels_column, "labels_sep": labels_sep,
                      "group_column": group_column}
    return prepare_dataset(
        layout, Path(source) if source is not None else None,
        Path(out) if out is not None else Path(data_dir) / layout,
        seed=seed, max_reject=max_reject, max_size=max_size, image_format=image_format,
        workers=workers, force=force, progress=progress, layout_options=layout_options,
        **options)


def run_config(config: str | Path | Mapping[str, Any] | RunConfig | None = None, /, *,
               source: str = "the keyword arguments", **options) -> RunConfig:
    """The run config from a YAML file, a dict or a ``RunConfig``, and options (options win).

    Checked as the command line checks it: an unknown option gets a did-you-mean, a bad
    value a one-paragraph error, before TensorFlow loads. ``source`` names where the
    options come from in those errors.
    """
    from medtransfer.config import RunConfig, config_from_mapping, load_config_file

    if config is None:
        base = RunConfig()
    elif isinstance(config, RunConfig):
        base = config
    elif isinstance(config, str | Path):
        base = load_config_file(config)
    else:
        base = config_from_mapping(dict(config), source="the config dict")
    # Paths are welcome where the config file holds strings (logdir, data_dir, init, ...).
    given = {key: str(value) if isinstance(value, Path) else value
             for key, value in options.items() if value is not None}
    return config_from_mapping(given, base=base, source=source)


def run(config: str | Path | Mapping[str, Any] | RunConfig | None = None, /, *,
        overwrite: bool = False, **options) -> Run:
    """Trains one configuration with the W+E regime, evaluates and logs it (``medtransfer run``).

    Args:
        config: a run config YAML file, a dict or a ``RunConfig`` (optional); ``options``
            win over it.
        overwrite: delete what the run directory holds and train afresh.
        **options: any ``run`` option with underscores: ``dataset``, ``net``, ``init``,
            ``freeze``, ``epochs`` ("W+E"), ``lr``, ``batch_size``, ``image_size``,
            ``seed``, ``train_size``, ``experiment``, ``logdir``, ``data_dir``, ...

    Returns:
        The :class:`Run`. A run already complete is not trained again; a killed one resumes.

    Example:
        >>> run = mt.run(dataset="digits", net="small_cnn", epochs="1+4", image_size=32)
        >>> run.metrics["test_auc_micro"]
    """
    from medtransfer.training.resolve import resolve_config
    from medtransfer.training.rundir import RunDirectory

    # Resolved before TensorFlow loads: a misspelt net or dataset fails at once, and a
    # complete run is answered at once.
    resolved, dataset = resolve_config(run_config(config, **options))
    directory = RunDirectory(resolved.run_dir)
    if not overwrite and directory.found_complete(resolved):
        return Run(directory.path)
    from medtransfer.training.run import run_resolved

    return Run(run_resolved(resolved, dataset, overwrite=overwrite).run_dir)


def pretrain(method: str, config: str | Path | Mapping[str, Any] | RunConfig | None = None, /,
             *, epochs: int = 10, overwrite: bool = False, **options):
    """Pretrains a backbone without labels, for a run to start from (``medtransfer pretrain``).

    Args:
        method: ``autoencoder``: the backbone as the encoder of an autoencoder with a
            mirrored decoder, trained to reconstruct the training images.
        config: a run config YAML file, a dict or a ``RunConfig`` (optional); its
            dataset, net, image size, seed, batch size, train size, ... are used.
        epochs: epochs of training.
        overwrite: train again over a complete pretraining.
        **options: ``run`` options with underscores: ``dataset``, ``net``, ``image_size``,
            ``lr`` (default 0.001), ``batch_size``, ``seed``, ``train_size``,
            ``experiment``, ``logdir``, ``data_dir``, ...

    Returns:
        A ``PretrainResult``: ``path`` (give it to ``run(init=...)``), ``metrics``
        (test_mse, test_psnr, test_ssim, ...), ``figure`` (test images above their
        reconstructions).

    Example:
        >>> ae = mt.pretrain("autoencoder", dataset="digits", image_size=32, epochs=5)
        >>> mt.run(dataset="digits", image_size=32, train_size=10, init=ae.path)
    """
    from medtransfer.pretraining.plan import check_method

    check_method(method)
    config = run_config(config, **options)

    from medtransfer.pretraining.autoencoder import pretrain_autoencoder

    return pretrain_autoencoder(config, epochs=epochs, overwrite=overwrite)


def load_run(run_dir: str | Path) -> Run:
    """Opens a run directory for reading: config, metrics, history, model, predict.

    Example:
        >>> run = mt.load_run("tensorboard_logs/demo/digits-small_cnn-glorot-f0.00-s0")
        >>> run.history[["epoch", "val_auc_micro"]]
    """
    return Run(run_dir)


def sweep(config: str | Path, *, logdir: str | Path | None = None, dry_run: bool = False,
          parallel: int | str | None = None, gpus_per_run: int = 1):
    """Runs every run of a sweep file not yet complete (``medtransfer sweep``).

    ``parallel=N`` trains N runs at once, each with its own GPUs (``gpus_per_run``) or
    share of the cores; ``"auto"``: visible GPUs / ``gpus_per_run``.

    A run that fails is recorded in its ``error.txt`` and the others go on; the failures
    are listed on stderr at the end and in the result, not raised.

    Returns:
        A ``SweepResult``: ``total``, ``complete_before``, ``completed`` (run ids),
        ``failed`` (run id -> its error file), ``held`` (run ids another process holds).

    Example:
        >>> result = mt.sweep("configs/demo.yaml")
        >>> result.completed, result.failed
    """
    from medtransfer.study.launch import SweepFailed
    from medtransfer.study.sweep import run_sweep

    try:
        return run_sweep(config, logdir=logdir, dry_run=dry_run, parallel=parallel,
                         gpus_per_run=gpus_per_run)
    except SweepFailed as failed:
        print(f"medtransfer sweep: error: {failed}", file=sys.stderr)
        return failed.result


def estimate(config: str | Path, *, logdir: str | Path | None = None, machines: int = 1,
             parallel: int | str | None = None, gpus_per_run: int = 1):
    """What a sweep will cost here, before running it (``medtransfer sweep --estimate``).

    Calibrates each distinct (net, image size, batch size, precision, freeze) of the runs
    left on this machine's devices (a few steps on random images, and a run's set-up
    outside its steps on one tiny real run in a temporary directory; cached in
    ``<logdir>/.estimates.json``), then adds up each run's epochs. Trains nothing in
    the logdir and writes no run directory there.

    Returns:
        A ``SweepEstimate``: per run the expected seconds (``.frame``), the total, and the
        expected end of the grid on ``machines`` machines.

    Example:
        >>> mt.estimate("configs/demo.yaml", machines=2).frame
    """
    from medtransfer.study.estimate import estimate_sweep

    return estimate_sweep(config, logdir=logdir, machines=machines, parallel=parallel,
                          gpus_per_run=gpus_per_run)


def report(experiment_dir: str | Path, *, out: str | Path | None = None,
           resamples: int = 1000, seed: int = 0, format: str = "png") -> Report:
    """An experiment's runs as the study's tables and figures (``medtransfer report``).

    Returns:
        A :class:`Report`: its tables as DataFrames, the figures, summary.md.

    Example:
        >>> report = mt.report("tensorboard_logs/demo_transfer")
        >>> report.main
    """
    from medtransfer.study.report import build_report

    return Report(build_report(experiment_dir, out, resamples=resamples, seed=seed,
                               figure_format=format))


class Report:
    """What ``report`` wrote, with its tables as DataFrames and its figures.

    Attributes:
        out_dir: the report folder.
        results_file, summary_file: its ``results.csv`` and ``summary.md``.
        figures: the figure files.
        main_text: the tables ``medtransfer report`` prints.
        skipped: run directories left out, and why.
    """

    def __init__(self, written):
        self.out_dir, self.figures = written.out_dir, list(written.figures)
        self.results_file, self.summary_file = written.results, written.summary
        self.main_text, self.skipped = written.main_text, list(written.skipped)

    @property
    def results(self) -> pd.DataFrame:
        """``results.csv``: a row per run directory, every metrics.json key, the interval."""
        return pd.read_csv(self.results_file)

    @property
    def summary_markdown(self) -> str:
        """``summary.md``: every table and note, ready to paste."""
        return self.summary_file.read_text()

    @property
    def tables(self) -> dict[str, list[pd.DataFrame]]:
        """Every table of summary.md, by the heading of its section, cells as text."""
        return _markdown_tables(self.summary_markdown)

    @property
    def main(self) -> pd.DataFrame:
        """The main table: test micro AUC at freeze 0 per dataset and net, a column per init."""
        return self.tables["Test AUC at freeze 0"][0]

    @property
    def improvement(self) -> dict[str, pd.DataFrame]:
        """Per transfer init: improvement and speed-up over glorot, per dataset and overall."""
        return {heading.removesuffix(" over glorot"): frames[0]
                for heading, frames in self.tables.items() if heading.endswith(" over glorot")}

    @property
    def per_freeze(self) -> dict[str, pd.DataFrame]:
        """Per init: test AUC at every freeze level."""
        suffix = ": test AUC per freeze level"
        return {heading.removesuffix(suffix): frames[0]
                for heading, frames in self.tables.items() if heading.endswith(suffix)}

    def __repr__(self) -> str:
        return f"Report({str(self.out_dir)!r}, {len(self.figures)} figures)"

    def _repr_markdown_(self) -> str:
        pictures = "".join(f"\n\n![{path.name}]({_data_uri(path)})"
                           for path in self.figures if path.suffix == ".png")
        return self.main_text + pictures


def _markdown_tables(text: str) -> dict[str, list[pd.DataFrame]]:
    tables: dict[str, list[pd.DataFrame]] = {}
    heading, rows = "", []

    def close():
        if len(rows) >= 2:
            header, *body = rows[0], *rows[2:]
            tables.setdefault(heading, []).append(pd.DataFrame(body, columns=header))
        rows.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        close()
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
    close()
    return tables


def _data_uri(path: Path) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def tsne(runs: str | Path | Sequence[str | Path], *, out: str | Path | None = None,
         max_images: int = 1000, seed: int = 0, format: str = "png", method: str = "tsne",
         finding: str | None = None):
    """What the features of each run separate: t-SNE, a panel per run (``medtransfer tsne``).

    ``method`` is ``tsne``, ``pca`` or ``both`` (a row per method).

    Returns:
        A ``TsneResult``: ``figure`` (tsne.png, pca.png or tsne_pca.png), ``tables`` (per
        method its CSV of 2-D coordinates), ``embeddings`` (per method) and
        ``explained_variance`` (PCA). Multi-label runs are coloured by ``finding``
        (absent, present, unknown; default their first finding).

    Example:
        >>> mt.tsne([run_a.path, run_b.path], max_images=300).figure
    """
    from medtransfer.inspect.tsne import run_tsne

    runs = [runs] if isinstance(runs, str | Path) else list(runs)
    return run_tsne([Path(run) for run in runs], out, max_images=max_images, seed=seed,
                    figure_format=format, method=method, finding=finding)


def list_nets() -> pd.DataFrame:
    """The registered nets: default and minimum input size, ImageNet weights, description.

    Example:
        >>> mt.list_nets().loc["small_cnn", "default_input"]
        128
    """
    from medtransfer.listing import net_rows

    return pd.DataFrame(net_rows()).set_index("name")


def list_datasets(data_dir: str | Path = "datasets") -> pd.DataFrame:
    """The registered datasets and every dataset prepared under ``data_dir``.

    Returns:
        One row per name: ``layout``, ``classes``, ``lr`` (the default learning rate),
        ``prepared`` (``bundled``, ``yes`` or ``no``), ``registered``, ``train``,
        ``validation``, ``test`` (images per split when prepared), ``augmentation``,
        ``description``.

    Example:
        >>> mt.list_datasets().loc["digits", "prepared"]
        'bundled'
    """
    from medtransfer.listing import dataset_rows

    frame = pd.DataFrame(dataset_rows(data_dir)).set_index("name")
    return frame.astype({column: "Int64" for column in ("classes", "train", "validation", "test")})
