"""``medtransfer similarity``: how far training moved each block of the backbone (SVCCA).

Transfusion (Raghu et al., NeurIPS 2019, figure 4) measures, block by block, the SVCCA
similarity between a trained network and its own initialisation: 1 means the block
computes what it computed before training, lower means training moved it. This module
does the same, or compares two runs block by block.

SVCCA (Raghu et al., NeurIPS 2017): centre each representation (data points x neurons),
keep the top singular directions that hold 99% of its variance, run CCA between the two
reduced representations, and average the canonical correlations. CCA between two data
matrices is the cosines of the principal angles between their column spaces, so after the
SVD the canonical correlations are the singular values of ``U_a^T U_b``, where ``U`` are
the kept left singular vectors (an orthonormal basis of each reduced representation).

Conv activations: every spatial position of every image is a data point (as in Raghu et
al. for conv layers), so a block with C channels gives C neurons. Both networks see the
same images and the same positions. Positions are subsampled per image, seeded, to about
``max(4000, 10 x C)`` data points per block (all of them when the sample has fewer):
finite-sample CCA is biased upwards by about ``sqrt(dims / data points)``, so the CSV
records both, and a block with few positions (the last of a small input) reads higher
than it is: the figure draws a block with fewer than 10 data points per kept dimension
as a hollow marker, and the command says which. Averaging positions away instead would
leave only one data point per image.

Blocks are the net's natural stages (``NetSpec.block_outputs``): small_cnn's and CBR's
conv blocks, Inception modules mixed0..mixed10, ResNet50V2 stages, dense blocks, MobileNet
depthwise blocks.

Transfusion's figure 2 (:func:`experiment_similarity`, ``similarity --experiment``): per
net of an experiment, the SVCCA of the top two blocks, averaged, between two runs from
different random inits (glorot, two seeds: the baseline) and between each of them and a
run from ImageNet. Representations learnt from random inits are more alike than those
learnt from ImageNet for large nets, less distinct for small ones.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medtransfer.errors import MedtransferError
from medtransfer.inspect.plots import describe_runs, note
from medtransfer.inspect.sample import ImageSample, predict, sample_test_images
from medtransfer.plotting import check_format, save_figure, wrap
from medtransfer.training.rundir import TrainedRun, open_run, scan_experiment

VARIANCE_KEPT = 0.99
MIN_DATA_POINTS = 4000
DATA_POINTS_PER_NEURON = 10
# Below this many data points per kept dimension, SVCCA reads noticeably high.
MIN_POINTS_PER_DIMENSION = 10
AGAINST_INIT = "init"
TOP_BLOCKS = 2  # Transfusion's figure 2: the top two layers (stages), averaged
RANDOM, RANDOM_IMAGENET = "random vs random", "random vs imagenet"


def svcca(a: np.ndarray, b: np.ndarray, variance_kept: float = VARIANCE_KEPT) -> float:
    """SVCCA similarity of two representations of the same data points.

    Args:
        a: ``(data points, neurons_a)``.
        b: ``(data points, neurons_b)``, the same data points in the same order.
        variance_kept: share of each representation's variance its SVD keeps.

    Returns:
        The mean canonical correlation, in [0, 1]: 1 for representations that span the
        same space (the same one, a permutation of its neurons, any invertible linear map
        of it); near 0 for independent ones (given many more data points than neurons).
        NaN when either representation is constant.

    Raises:
        ValueError: ``a`` and ``b`` hold different numbers of data points.
    """
    return _svcca(a, b, variance_kept)[0]


def _svcca(a: np.ndarray, b: np.ndarray, variance_kept: float) -> tuple[float, int, int]:
    """SVCCA, and how many directions each representation kept."""
    if len(a) != len(b):
        raise ValueError(f"a and b need the same data points, got {len(a)} and {len(b)} rows")
    basis_a, basis_b = _kept_basis(a, variance_kept), _kept_basis(b, variance_kept)
    dims = (basis_a.shape[1], basis_b.shape[1])
    if not min(dims):
        return math.nan, *dims
    correlations = np.clip(np.linalg.svd(basis_a.T @ basis_b, compute_uv=False), 0.0, 1.0)
    return float(np.mean(correlations)), *dims


def _kept_basis(x: np.ndarray, variance_kept: float) -> np.ndarray:
    """An orthonormal basis (columns) of the top directions holding ``variance_kept``
    of the centred ``x``'s variance."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    # Directions at round-off level are no direction (a rank-deficient representation).
    s = s[s > s[:1].max(initial=0.0) * max(x.shape) * np.finfo(np.float64).eps]
    if not len(s):
        return u[:, :0]
    variance = np.cumsum(s**2) / np.sum(s**2)
    kept = int(np.searchsorted(variance, variance_kept - 1e-12) + 1)
    return u[:, :min(kept, len(s))]


@dataclass(frozen=True)
class BlockSimilarity:
    """One row of ``similarity.csv``."""

    run_id: str
    against: str
    block: int
    layer: str
    similarity: float
    data_points: int
    dims: int
    dims_against: int

    @property
    def few_points(self) -> bool:
        """Fewer than ``MIN_POINTS_PER_DIMENSION`` data points per kept dimension: the
        finite-sample bias of CCA makes the value read high."""
        return self.data_points < MIN_POINTS_PER_DIMENSION * max(self.dims, self.dims_against)


@dataclass(frozen=True)
class SimilarityResult:
    """What ``run_similarity`` wrote: the CSV, the figure, every row, and what the user
    was told (blocks with too few data points)."""

    table: Path
    figure: Path
    rows: list[BlockSimilarity]
    notes: list[str]


def run_similarity(run_dirs: list[str | Path], against: str | Path = AGAINST_INIT,
                   out: str | Path | None = None, max_images: int = 500,
                   seed: int = 0, figure_format: str = "png") -> SimilarityResult:
    """SVCCA per backbone block between each run and its initialisation, or another run.

    Args:
        run_dirs: complete run directories; one line each in the figure.
        against: ``"init"`` (each run's own initial model, rebuilt exactly from its
            config and seed) or a complete run directory of the same net and input size.
        out: folder for ``similarity.csv`` and ``similarity.<format>``; default
            ``<first run>/inspect``.
        max_images: test images at most (a seeded sample of the first run's test split,
            shown to both networks).
        seed: seeds the sample and the positions drawn from each feature map.
        figure_format: ``png`` (200 dpi), ``pdf`` or ``svg``.

    Returns:
        The files written and one row per run and block.

    Raises:
        MedtransferError: a path is not a complete run, the runs' nets or input sizes
            differ, or the initial model cannot be rebuilt.
    """
    figure_format = check_format(figure_format)
    runs = [open_run(path, "similarity") for path in run_dirs]
    other = None if str(against) == AGAINST_INIT else open_run(against, "similarity --against")
    for run in runs + ([other] if other else []):
        _check_comparable(runs[0], run)
    out = Path(out) if out is not None else runs[0].path / "inspect"
    sample = sample_test_images(runs[0], max_images, seed)
    rows = []
    for run in runs:
        reference = other.model() if other else run.initial_model()
        label = other.config.run_id if other else AGAINST_INIT
        rows.extend(compare_models(run, run.model(), other or run, reference, sample, seed,
                                   label))
    out.mkdir(parents=True, exist_ok=True)
    table = out / "similarity.csv"
    with table.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(list(BlockSimilarity.__dataclass_fields__))
        for row in rows:
            writer.writerow([row.run_id, row.against, row.block, row.layer,
                             f"{row.similarity:.6f}", row.data_points, row.dims,
                             row.dims_against])
    compared = runs + ([other] if other else [])
    shared, differing = describe_runs([run.config for run in compared])
    names = {run.config.run_id: text or shared
             for run, text in zip(compared, differing, strict=True)}
    names[AGAINST_INIT] = "its init"
    labels = {(row.run_id, row.against): f"{names[row.run_id]} vs {names[row.against]}"
              for row in rows}
    few = list(dict.fromkeys(row.layer for row in rows if row.few_points))
    notes = [note(
        f"fewer than {MIN_POINTS_PER_DIMENSION} data points per dimension at "
        f"{', '.join(few)}: SVCCA reads high there (hollow markers in the figure). More "
        "--images gives these blocks more data points.")] if few else []
    figure = similarity_figure(rows, labels, shared)
    return SimilarityResult(table, save_figure(figure, out / f"similarity.{figure_format}"),
                            rows, notes)


def compare_models(run: TrainedRun, model, reference_run: TrainedRun, reference,
                   sample: ImageSample, seed: int, against: str,
                   top: int | None = None) -> list[BlockSimilarity]:
    """SVCCA at every block output (or the ``top`` last ones) of two classifiers of the
    same net on ``sample``.

    Each classifier gets the images scaled as its own run expects them; both give the
    same data points (images and positions). Rows are numbered by the block's place in
    the whole backbone.
    """
    from medtransfer.models.registry import get_net

    every = get_net(run.config.net).block_outputs(_backbone(model))
    first = max(len(every) - top, 0) if top else 0
    blocks = every[first:]
    activations = _block_activations(run, model, blocks, sample, seed)
    reference_activations = _block_activations(reference_run, reference, blocks, sample, seed)
    rows = []
    for index, (layer, a, b) in enumerate(zip(blocks, activations, reference_activations,
                                              strict=True), start=first + 1):
        similarity, dims, dims_against = _svcca(a, b, VARIANCE_KEPT)
        rows.append(BlockSimilarity(run.config.run_id, against, index, layer, similarity,
                                    len(a), dims, dims_against))
    return rows


def _backbone(model):
    from medtransfer.models.classifier import get_backbone

    return get_backbone(model)


def _block_activations(run: TrainedRun, model, blocks: list[str], sample: ImageSample,
                       seed: int) -> list[np.ndarray]:
    """Each block's output at the sampled positions of every image, ``(points, channels)``.

    Positions are drawn per batch as they come, so no whole feature map of the sample
    is ever held (inception's mixed0 at 299 px is 1.2 MB per image).
    """
    import keras

    backbone = _backbone(model)
    extractor = keras.Model(backbone.input, [backbone.get_layer(name).output for name in blocks])
    positions = [_position_sample(len(sample), output.shape[1:], seed + index)
                 for index, output in enumerate(extractor.outputs, start=1)]
    points: list[list[np.ndarray]] = [[] for _ in blocks]
    start = 0
    for batch in sample.batches(run):
        values = predict(extractor, batch)
        for store, value, drawn in zip(points, values, positions, strict=True):
            store.append(_gather(np.asarray(value, dtype=np.float32),
                                 drawn[start:start + len(batch)]))
        start += len(batch)
    return [np.concatenate(store) for store in points]


def _position_sample(images: int, feature_shape: tuple[int, ...], seed: int) -> np.ndarray:
    """For each image, the flat spatial positions that are data points, ``(images, k)``.

    ``k`` gives about ``max(4000, 10 x channels)`` data points in all, at most every
    position; drawn without replacement per image, seeded.
    """
    height, width, channels = feature_shape
    positions = height * width
    wanted = max(MIN_DATA_POINTS, DATA_POINTS_PER_NEURON * channels)
    per_image = min(positions, math.ceil(wanted / images))
    rng = np.random.default_rng(seed)
    return np.stack([rng.choice(positions, size=per_image, replace=False)
                     for _ in range(images)])


def _gather(activations: np.ndarray, positions: np.ndarray) -> np.ndarray:
    images, height, width, channels = activations.shape
    flat = activations.reshape(images, height * width, channels)
    return np.take_along_axis(flat, positions[:, :, None], axis=1).reshape(-1, channels)


def _check_comparable(first: TrainedRun, run: TrainedRun) -> None:
    if (run.config.net, run.config.image_size) != (first.config.net, first.config.image_size):
        raise MedtransferError(
            f"similarity compares the same blocks of the same net: '{first.path}' is "
            f"{first.config.net} at {first.config.image_size} px but '{run.path}' is "
            f"{run.config.net} at {run.config.image_size} px. Compare runs of one net and "
            "input size, or each run against its init (the default)."
        )


def similarity_figure(rows: list[BlockSimilarity], labels: dict[tuple[str, str], str],
                      shared: str = ""):
    """SVCCA per block, a line per (run, reference); blocks with too few data points per
    dimension hollow.

    Args:
        rows: every run's blocks.
        labels: ``(run_id, against)`` -> the line's legend text.
        shared: what every run shares, in the title.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    layers = list(dict.fromkeys(row.layer for row in rows))
    width = max(6.0, 0.55 * len(layers) + 3.0)
    figure = Figure(figsize=(width, 5.0), layout="constrained")
    ax = figure.subplots()
    handles = []
    for key, label in labels.items():
        points = [row for row in rows if (row.run_id, row.against) == key]
        (line,) = ax.plot([row.block for row in points], [row.similarity for row in points],
                          marker="o", label=wrap(label, width / 2 - 0.6, 7, max_lines=3))
        handles.append(line)
        hollow = [row for row in points if row.few_points]
        ax.plot([row.block for row in hollow], [row.similarity for row in hollow],
                linestyle="none", marker="o", markersize=9, markerfacecolor="white",
                markeredgecolor=line.get_color())
    if any(row.few_points for row in rows):
        handles.append(Line2D([], [], linestyle="none", marker="o", markerfacecolor="white",
                              markeredgecolor="grey", label=f"fewer than "
                              f"{MIN_POINTS_PER_DIMENSION} data points per dimension: "
                              "reads high"))
    ax.set_xticks(range(1, len(layers) + 1), layers, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("backbone block (input side left)")
    ax.set_ylabel("SVCCA similarity")
    ax.grid(alpha=0.3)
    title = "SVCCA similarity per block" + (f": {shared}" if shared else "")
    ax.set_title(wrap(title, width - 1.2, 10), fontsize=10)
    # Below the axes: a legend inside would hide the lines.
    figure.legend(handles=handles, fontsize=7, loc="outside lower center",
                  ncols=2 if len(handles) > 2 else 1)
    return figure


@dataclass(frozen=True)
class NetSimilarity:
    """One net's two bars of Transfusion's figure 2.

    Attributes:
        dataset, net: the runs'.
        random: the baseline: mean SVCCA of the top blocks between the two glorot runs.
        imagenet: mean SVCCA of the top blocks between each glorot run and the ImageNet
            run, averaged over both.
        runs: the run ids compared: the two glorot runs, then the ImageNet run.
        few_points: a compared block had fewer than 10 data points per kept dimension
            (the value reads high).
    """

    dataset: str
    net: str
    random: float
    imagenet: float
    runs: tuple[str, str, str]
    few_points: bool


@dataclass(frozen=True)
class ExperimentSimilarityResult:
    """What ``experiment_similarity`` wrote: the CSV (a row per compared pair and block),
    the figure, each net's two values, and what the user was told (nets left out)."""

    table: Path
    figure: Path
    nets: list[NetSimilarity]
    rows: list[tuple[str, BlockSimilarity]]
    notes: list[str]


def experiment_similarity(experiment_dir: str | Path, out: str | Path | None = None,
                          max_images: int = 500, seed: int = 0,
                          figure_format: str = "png") -> ExperimentSimilarityResult:
    """Transfusion's figure 2 for an experiment: per net, the SVCCA of the top two
    blocks between two random inits, and between random inits and ImageNet.

    The runs of each net (and dataset, and every other setting but init and seed) are
    taken from the experiment's complete runs at freeze 0 (Transfusion trains every
    layer): the two glorot runs of the lowest seeds, and the imagenet run of the lowest
    seed. The baseline compares the two glorot runs; "random vs imagenet" is the mean of
    each glorot run against the imagenet run. Each value is the mean over the top two
    blocks (``NetSpec.block_outputs``) of SVCCA on a seeded sample of test images.

    Args:
        experiment_dir: ``<logdir>/<experiment>``.
        out: folder for ``transfusion_similarity.csv`` and ``.<format>``; default
            ``<experiment_dir>/inspect``.
        max_images: test images at most, a seeded sample shown to every run of a net.
        seed: seeds the sample and the positions drawn from each feature map.
        figure_format: ``png`` (200 dpi), ``pdf`` or ``svg``.

    Returns:
        The files written, each net's values and every compared block.

    Raises:
        MedtransferError: the folder is not an experiment, or no net has two complete
            glorot runs and an imagenet run at freeze 0 (the message lists what each net
            has).
    """
    figure_format = check_format(figure_format)
    experiment_dir = Path(experiment_dir)
    groups = _transfusion_groups(scan_experiment(experiment_dir))
    chosen, notes = {}, []
    for key, runs in groups.items():
        glorot = sorted((run for run in runs if run.config.init == "glorot"),
                        key=lambda run: run.config.seed)
        imagenet = sorted((run for run in runs if run.config.init == "imagenet"),
                          key=lambda run: run.config.seed)
        if len(glorot) >= 2 and imagenet:
            chosen[key] = (glorot[0], glorot[1], imagenet[0])
        else:
            notes.append(f"{key[1]} on {key[0]}: {len(glorot)} glorot and {len(imagenet)} "
                         "imagenet run(s)")
    if not chosen:
        found = "; ".join(notes) or "no complete run"
        raise MedtransferError(
            f"similarity --experiment needs, for some net, two complete glorot runs (two "
            f"seeds) and a complete imagenet run at freeze 0 in '{experiment_dir}'; it has "
            f"{found}. Run them (for example a sweep with init [glorot, imagenet] and seed "
            "[0, 1]), or compare runs directly with 'similarity RUN_DIR --against RUN_DIR'."
        )
    if notes:
        notes = [note("left out, lacking two glorot runs and an imagenet run at freeze 0: "
                      + "; ".join(notes) + ".")]
    out = Path(out) if out is not None else experiment_dir / "inspect"
    nets, rows = [], []
    for (dataset, net, _), (first, second, pretrained) in chosen.items():
        opened = [open_run(run.path, "similarity --experiment")
                  for run in (first, second, pretrained)]
        sample = sample_test_images(opened[0], max_images, seed)
        models = [run.model() for run in opened]
        pairs = [(RANDOM, 0, 1), (RANDOM_IMAGENET, 0, 2), (RANDOM_IMAGENET, 1, 2)]
        compared = {}
        for comparison, a, b in pairs:
            found = compare_models(opened[a], models[a], opened[b], models[b], sample, seed,
                                   opened[b].config.run_id, top=TOP_BLOCKS)
            compared.setdefault(comparison, []).extend(found)
            rows.extend((comparison, row) for row in found)
        nets.append(NetSimilarity(
            dataset, net,
            float(np.mean([row.similarity for row in compared[RANDOM]])),
            float(np.mean([row.similarity for row in compared[RANDOM_IMAGENET]])),
            tuple(run.config.run_id for run in opened),
            any(row.few_points for found in compared.values() for row in found)))
    out.mkdir(parents=True, exist_ok=True)
    table = out / "transfusion_similarity.csv"
    with table.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["comparison", *BlockSimilarity.__dataclass_fields__])
        for comparison, row in rows:
            writer.writerow([comparison, row.run_id, row.against, row.block, row.layer,
                             f"{row.similarity:.6f}", row.data_points, row.dims,
                             row.dims_against])
    if any(net.few_points for net in nets):
        notes.append(note(
            "fewer than 10 data points per dimension in the top blocks of "
            f"{', '.join(net.net for net in nets if net.few_points)}: SVCCA reads high "
            "there (hatched bars). More --images gives them more data points."))
    figure = save_figure(transfusion_figure(nets), out / f"transfusion_similarity.{figure_format}")
    return ExperimentSimilarityResult(table, figure, nets, rows, notes)


def _transfusion_groups(records) -> dict[tuple[str, str, str], list]:
    """The complete runs at freeze 0, by dataset, net and every other setting but init
    and seed (runs that differ in more are not compared)."""
    from medtransfer.config import identity

    groups: dict[tuple[str, str, str], list] = {}
    for record in records:
        if record.status != "complete" or record.config is None or record.config.freeze:
            continue
        config = record.config
        rest = {key: value for key, value in identity(config).items()
                if key not in ("dataset", "net", "init", "seed")}
        groups.setdefault((config.dataset, config.net, repr(sorted(rest.items()))),
                          []).append(record)
    return groups


def transfusion_figure(nets: list[NetSimilarity]):
    """Transfusion's figure 2: per net, a bar for random vs random (the baseline) beside
    one for random vs imagenet; a net whose blocks had few data points hatched."""
    from matplotlib.figure import Figure

    width = max(5.0, 1.1 * len(nets) + 2.0)
    figure = Figure(figsize=(width, 4.2), layout="constrained")
    ax = figure.subplots()
    positions = np.arange(len(nets))
    for offset, label, colour, values in (
            (-0.2, "random vs random (baseline)", "tab:blue", [n.random for n in nets]),
            (0.2, "random vs imagenet", "tab:orange", [n.imagenet for n in nets])):
        bars = ax.bar(positions + offset, values, width=0.4, color=colour, label=label)
        for bar, net in zip(bars, nets, strict=True):
            if net.few_points:
                bar.set_hatch("//")
    datasets = {net.dataset for net in nets}
    ax.set_xticks(positions, [net.net if len(datasets) == 1 else f"{net.net}\n{net.dataset}"
                              for net in nets], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"SVCCA similarity, top {TOP_BLOCKS} blocks")
    ax.grid(axis="y", alpha=0.3)
    title = "Representations from random inits vs from ImageNet (Transfusion, figure 2)"
    if len(datasets) == 1:
        title += f": {datasets.pop()}"
    ax.set_title(wrap(title, width - 0.6, 10), fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return figure
