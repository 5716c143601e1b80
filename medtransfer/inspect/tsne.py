"""``medtransfer tsne``: the penultimate features of runs, embedded in 2-D side by side.

For each run, the best checkpoint maps a fixed, seeded sample of test images to the
output of the global average pooling (``head_pool``: the feature vector the classifier
reads). The features are embedded in 2-D by scikit-learn's t-SNE (seeded, PCA start),
projected on their first two principal components (PCA), or both (``--method``; the
MedMNIST exercise shows PCA beside t-SNE: PCA is linear and keeps global distances, t-SNE
keeps neighbourhoods), and drawn one panel per run and method, coloured by class, in one
figure, so that runs (for example three freeze levels) compare at a glance. The same
features go to TensorBoard's Projector: ``<run>/projector/`` holds ``tensors.tsv``,
``metadata.tsv`` (id and label) and ``sprite.png`` (the images as thumbnails), and
``<run>/projector_config.pbtxt`` names them, where TensorBoard looks for it (every
folder holding event files).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from medtransfer.errors import look_up_option
from medtransfer.inspect.plots import (
    class_colours,
    class_legend_handles,
    describe_runs,
    note,
    result_text,
)
from medtransfer.inspect.sample import ImageSample, predict, sample_test_images
from medtransfer.plotting import check_format, save_figure, wrap
from medtransfer.training.rundir import TrainedRun, open_run

PROJECTOR_DIR = "projector"
PROJECTOR_CONFIG = "projector_config.pbtxt"  # the name TensorBoard looks for
MAX_PERPLEXITY = 30.0
MAX_THUMBNAIL = 64
MAX_SPRITE_SIDE = 8192  # TensorBoard's limit for a sprite image
MIN_IMAGES = 5
PANEL_COLUMNS = 4
METHODS = ("tsne", "pca", "both")
_METHOD_TITLES = {"tsne": "t-SNE", "pca": "PCA"}
_PANEL_INCHES = 4.2


@dataclass(frozen=True)
class TsneResult:
    """What ``run_tsne`` wrote.

    Attributes:
        figure: the figure file (``tsne``, ``pca`` or ``tsne_pca``), one panel per run
            and method.
        tables: per method (``tsne``, ``pca``), its CSV (``tsne.csv``, ``pca.csv``):
            run_id, id, label, x, y per image and run.
        projector_configs: each run's ``projector_config.pbtxt``.
        embeddings: per method, each run's ``(n, 2)`` coordinates.
        explained_variance: each run's share of the features' variance on the two
            principal components (``pca`` and ``both`` only; else empty).
        labels: each run's ``(n,)`` class indices, in the order of its embedding.
        notes: what the user was told about the runs given (a run given twice, transfer
            runs among them).
    """

    figure: Path
    tables: dict[str, Path]
    projector_configs: list[Path]
    embeddings: dict[str, list[np.ndarray]]
    explained_variance: list[tuple[float, float]]
    labels: list[np.ndarray]
    notes: list[str]


def run_tsne(run_dirs: list[str | Path], out: str | Path | None = None,
             max_images: int = 1000, seed: int = 0, figure_format: str = "png",
             method: str = "tsne", finding: str | None = None) -> TsneResult:
    """Embeds the penultimate features of each run's test images and draws them.

    Args:
        run_dirs: complete run directories, one panel each, in this order; a run given
            twice is drawn once (and the user told).
        out: folder for the figure and CSVs; default ``<first run>/inspect``.
        max_images: test images per run at most (a seeded sample, the same images for
            runs on the same dataset).
        seed: seeds the sample and t-SNE.
        figure_format: ``png`` (200 dpi), ``pdf`` or ``svg``.
        method: ``tsne`` (``tsne.<format>``, ``tsne.csv``), ``pca`` (``pca.<format>``,
            ``pca.csv``) or ``both`` (``tsne_pca.<format>``, a row per method, and both
            CSVs).
        finding: multi-label runs: colour by this finding (absent, present, unknown);
            default each run's first finding.

    Returns:
        The files written and the embeddings.

    Raises:
        MedtransferError: an unknown method, a path is not a complete run (checked for
            every run before any work), or the test split has fewer than 5 images.
    """
    figure_format = check_format(figure_format)
    methods = ["tsne", "pca"] if look_up_option(
        method, METHODS, "method", see="tsne, pca or both.") == "both" \
        else [method]
    runs = [open_run(path, "tsne") for path in run_dirs]
    runs, notes = _distinct_runs(runs)
    out = Path(out) if out is not None else runs[0].path / "inspect"
    embeddings: dict[str, list[np.ndarray]] = {name: [] for name in methods}
    samples, configs, explained = [], [], []
    for run in runs:
        sample = sample_test_images(run, max_images, seed, min_images=MIN_IMAGES,
                                    finding=finding)
        features = penultimate_features(run, sample)
        configs.append(write_projector(run.path, features, sample))
        if "tsne" in methods:
            embeddings["tsne"].append(embed(features, seed))
        if "pca" in methods:
            projection, shares = principal_components(features, seed)
            embeddings["pca"].append(projection)
            explained.append(shares)
        samples.append(sample)
    out.mkdir(parents=True, exist_ok=True)
    shared, differing = describe_runs([run.config for run in runs])
    titles = [f"{what}\n{result_text(run)}".strip() for what, run in zip(differing, runs,
                                                                         strict=True)]
    # Colours by class name: a run on a subset of the classes (--classes) numbers them
    # its own way.
    names = list(dict.fromkeys(name for sample in samples for name in sample.class_names))
    labels = [np.array([names.index(sample.class_names[label]) for label in sample.labels],
                       dtype=int) for sample in samples]
    axis_labels = [("", "")] * len(runs)
    rows = [(_METHOD_TITLES[name], embeddings[name],
             [(f"PC1 {first:.0%} of the variance", f"PC2 {second:.0%}")
              for first, second in explained] if name == "pca" else axis_labels)
            for name in methods]
    figure = save_figure(tsne_figure(rows, labels, names, titles, shared),
                         out / f"{'_'.join(methods)}.{figure_format}")
    tables = {name: _write_table(out / f"{name}.csv", runs, embeddings[name], samples)
              for name in methods}
    return TsneResult(figure, tables, configs, embeddings, explained,
                      [s.labels for s in samples], notes)


def _write_table(path: Path, runs: list[TrainedRun], embeddings: list[np.ndarray],
                 samples: list[ImageSample]) -> Path:
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["run_id", "id", "label", "x", "y"])
        for run, embedding, sample in zip(runs, embeddings, samples, strict=True):
            for image_id, label, (x, y) in zip(sample.ids, sample.labels, embedding, strict=True):
                writer.writerow([run.config.run_id, image_id, sample.class_names[label],
                                 f"{x:.6g}", f"{y:.6g}"])
    return path


def _distinct_runs(runs: list[TrainedRun]) -> tuple[list[TrainedRun], list[str]]:
    """The runs, each once, and notes on what the user may not have meant: a run given
    twice (its panels would be identical), or transfer runs among others (a shell pattern
    that matches a run's id also matches the runs trained from it, whose ids contain it).
    """
    distinct: dict[Path, TrainedRun] = {}
    for run in runs:
        distinct.setdefault(run.path.resolve(), run)
    notes = []
    if len(distinct) < len(runs):
        twice = sorted({run.config.run_id for run in runs
                        if sum(other.path.resolve() == run.path.resolve() for other in runs) > 1})
        notes.append(note(f"the same run was given more than once ({', '.join(twice)}); it is "
                          "drawn once."))
    runs = list(distinct.values())
    transfers = [run for run in runs if run.config.init_is_path]
    if transfers and len(transfers) < len(runs):
        notes.append(note(
            f"{len(transfers)} of the {len(runs)} runs given started from another run's "
            f"weights (transfer): {', '.join(run.config.run_id for run in transfers)}. A pattern "
            "matching a run's id also matches the runs trained from it; if you meant only "
            "the others, pass their directories."))
    return runs, notes


def penultimate_features(run: TrainedRun, sample: ImageSample) -> np.ndarray:
    """The globally pooled backbone output of the best checkpoint, ``(n, channels)``."""
    import keras

    from medtransfer.models.classifier import FEATURES_LAYER

    model = run.model()
    extractor = keras.Model(model.input, model.get_layer(FEATURES_LAYER).output)
    return np.concatenate([np.asarray(predict(extractor, batch), dtype=np.float64)
                           for batch in sample.batches(run)])


def embed(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """t-SNE in 2-D, seeded, PCA start; the perplexity is 30, or ``(n - 1) / 3`` when
    fewer than 91 points would not support 30 (scikit-learn needs it below ``n``)."""
    from sklearn.manifold import TSNE

    perplexity = min(MAX_PERPLEXITY, (len(features) - 1) / 3)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                random_state=seed).fit_transform(features)


def principal_components(features: np.ndarray,
                         seed: int = 0) -> tuple[np.ndarray, tuple[float, float]]:
    """The features projected on their first two principal components (scikit-learn's
    PCA, centred, not whitened), and the share of the variance each component holds."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=seed)
    projection = pca.fit_transform(features)
    first, second = (float(share) for share in pca.explained_variance_ratio_)
    return projection, (first, second)


def write_projector(run_dir: Path, features: np.ndarray, sample: ImageSample) -> Path:
    """Writes the Projector files of one run; returns its ``projector_config.pbtxt``.

    TensorBoard reads a ``projector_config.pbtxt`` in any folder that holds event files;
    the run directory holds its HParams events, so the config goes there and names the
    files in ``projector/`` by paths relative to it.
    """
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    folder = run_dir / PROJECTOR_DIR
    folder.mkdir(exist_ok=True)
    np.savetxt(folder / "tensors.tsv", features, delimiter="\t", fmt="%.7g")
    with (folder / "metadata.tsv").open("w", newline="") as stream:
        stream.write("id\tlabel\n")
        for image_id, label in zip(sample.ids, sample.labels, strict=True):
            stream.write(f"{_tsv_cell(image_id)}\t{_tsv_cell(sample.class_names[label])}\n")
    side = _write_sprite(folder / "sprite.png", sample.pixels)

    config = ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = "penultimate_features"
    embedding.tensor_path = f"{PROJECTOR_DIR}/tensors.tsv"
    embedding.tensor_shape.extend(features.shape)
    embedding.metadata_path = f"{PROJECTOR_DIR}/metadata.tsv"
    embedding.sprite.image_path = f"{PROJECTOR_DIR}/sprite.png"
    embedding.sprite.single_image_dim.extend([side, side])
    path = run_dir / PROJECTOR_CONFIG
    path.write_text(text_format.MessageToString(config))
    return path


def _write_sprite(path: Path, pixels: np.ndarray) -> int:
    """All images as thumbnails in a square grid, row by row, padded with black (the
    layout TensorBoard's Projector reads); returns the thumbnail side."""
    columns = math.ceil(math.sqrt(len(pixels)))
    side = min(pixels.shape[1], MAX_THUMBNAIL, MAX_SPRITE_SIDE // columns)
    sprite = np.zeros((columns * side, columns * side, 3), np.uint8)
    for index, image in enumerate(pixels):
        row, column = divmod(index, columns)
        sprite[row * side:(row + 1) * side, column * side:(column + 1) * side] = \
            cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    if not cv2.imwrite(str(path), cv2.cvtColor(sprite, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return side


def _tsv_cell(text: str) -> str:
    return str(text).replace("\t", " ").replace("\n", " ")


def tsne_figure(rows: list[tuple[str, list[np.ndarray], list[tuple[str, str]]]],
                labels: list[np.ndarray], class_names: list[str], titles: list[str],
                shared: str = ""):
    """One panel per run and method, points coloured by class.

    One method: its runs at most 4 a row. Several (t-SNE and PCA): a row per method, a
    column per run, so each run's two pictures sit one above the other.

    Args:
        rows: per method, its name (``t-SNE``, ``PCA``), each run's ``(n, 2)``
            coordinates, and each run's axis labels (x, y; empty for none).
        labels: each run's ``(n,)`` class indices.
        class_names: the classes, for the legend.
        titles: each run's title (what tells its run apart), wrapped to the panel.
        shared: what every run shares, in the figure's title.
    """
    from matplotlib.figure import Figure

    runs = len(labels)
    columns = min(PANEL_COLUMNS, runs) if len(rows) == 1 else runs
    panels = [(name, embedding, run, axis_label)
              for name, embeddings, axis_labels in rows
              for run, (embedding, axis_label) in enumerate(zip(embeddings, axis_labels,
                                                                 strict=True))]
    grid_rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(_PANEL_INCHES * columns + 1.2,
                             (_PANEL_INCHES + 0.4) * grid_rows + 0.5), layout="constrained")
    axes = figure.subplots(grid_rows, columns, squeeze=False)
    colours = class_colours(len(class_names))
    for index, ax in enumerate(axes.flat):
        if index >= len(panels):
            ax.axis("off")
            continue
        name, embedding, run, (x_label, y_label) = panels[index]
        label = labels[run]
        for class_index, class_name in enumerate(class_names):
            points = embedding[label == class_index]
            if len(points):
                ax.scatter(points[:, 0], points[:, 1], s=9, color=colours[class_index],
                           label=class_name)
        title = titles[run] if len(rows) == 1 else f"{name}: {titles[run]}".rstrip(": ")
        ax.set_title(wrap(title, _PANEL_INCHES - 0.3, 9, max_lines=4), fontsize=9)
        ax.set_xlabel(x_label, fontsize=8)
        ax.set_ylabel(y_label, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    methods = " and ".join(name for name, _, _ in rows)
    title = f"{methods} of the penultimate features" + (f": {shared}" if shared else "")
    figure.suptitle(wrap(title, _PANEL_INCHES * columns, 11), fontsize=11)
    figure.legend(handles=class_legend_handles(class_names), loc="outside right center",
                  title="class", fontsize=8)
    return figure
