"""Every figure the package draws keeps its text on the canvas, with the long labels real
runs give (a transfer init names a 90-character run id), and saves as PNG, PDF or SVG."""

from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from medtransfer.config import RunConfig
from medtransfer.errors import MedtransferError
from medtransfer.inspect.gradcam import Heatmaps, gradcam_figure
from medtransfer.inspect.similarity import (
    BlockSimilarity,
    NetSimilarity,
    similarity_figure,
    transfusion_figure,
)
from medtransfer.inspect.tsne import tsne_figure
from medtransfer.plotting import PNG_DPI, save_figure, wrap
from medtransfer.study import figures
from medtransfer.tune import lr_find

SOURCE = "digits-small_cnn-glorot-f0.00-s0-e3+50-lr0.0005-bs8-px32-classes=0,1,2,3,4-ts200"
TRANSFER = f"transfer from {SOURCE}"  # what report passes for a path init: 90 characters
PANEL = "digits (classes=5,6,7,8,9, train_size=all (1438)) · inception_v3"


def texts_off_canvas(figure) -> list[str]:
    """Every visible, non-empty text whose drawn box leaves the canvas (by more than
    half a pixel), after the layout has run."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    bounds = figure.bbox
    # A locator's ticks beyond the axis limits keep Text objects that are never drawn:
    # only the ticks the axis draws (``_update_ticks``, what ``Axis.draw`` uses) count,
    # and none of an axes turned off.
    undrawn = set()
    for axes in figure.axes:
        for axis in (axes.xaxis, axes.yaxis):
            drawn = axis._update_ticks() if axes.axison and axis.get_visible() else []
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if tick not in drawn:
                    undrawn.update({id(tick.label1), id(tick.label2)})
    outside = []
    for text in figure.findobj(Text):
        if (not text.get_visible() or not text.get_text().strip()
                or id(text) in undrawn):
            continue
        box = text.get_window_extent(renderer)
        if (box.x0 < bounds.x0 - 0.5 or box.y0 < bounds.y0 - 0.5
                or box.x1 > bounds.x1 + 0.5 or box.y1 > bounds.y1 + 0.5):
            outside.append(text.get_text())
    return outside


def _series(label, x, style=None, errors=False):
    y = [0.6 + 0.3 * index / max(1, len(x) - 1) for index in range(len(x))]
    low = [value - 0.02 for value in y] if errors else None
    high = [value + 0.02 for value in y] if errors else None
    return figures.Series(label, list(x), y, low, high, style or {"marker": "o"})


def _curves():
    epochs = range(1, 54)
    return {f"{PANEL} {net}": [_series("glorot, freeze 0", epochs, {"color": "black"}),
                               *(_series(f"freeze {f}", epochs, {"color": f"C{k}"})
                                 for k, f in enumerate((0, 0.1, 0.2, 0.3, 0.5, 0.75, 1)))]
            for net in ("inception_v3", "resnet50_v2", "densenet121", "mobilenet")}


def _gradcam():
    images = np.random.default_rng(0).uniform(size=(5, 32, 32, 3))
    probabilities = np.full((5, 3), 1 / 3)
    heatmaps = Heatmaps(images[..., 0], np.zeros((5, 3)), probabilities, np.array([0, 1, 2, 0, 1]))
    classes = ["no referable retinopathy", "moderate", "proliferative"]
    return gradcam_figure(images, [classes[label] for label in (0, 1, 2, 2, 1)], classes,
                          heatmaps, f"Grad-CAM: retina · densenet121 · {TRANSFER} · freeze 0.75")


def _lr_find():
    lrs = np.geomspace(1e-7, 1, 200)
    losses = 2.0 - np.log10(lrs / 1e-7) / 7 + np.where(lrs > 0.1, 50 * lrs, 0)
    result = lr_find.LrFindResult(Path("."), lrs, losses, losses, lr_find.suggest_lr(lrs, losses),
                                  False)
    return lr_find._plot(result, RunConfig(dataset="retina", net="densenet121",
                                           init=f"/data/logs/source/{SOURCE}", freeze=0.75))


FIGURES = {
    "validation_by_freeze": lambda: figures.validation_by_freeze(_curves(), TRANSFER),
    "glorot_against_transfer": lambda: figures.glorot_against_transfer(
        {PANEL: [_series("glorot (n=3)", range(1, 54), {"color": "black"}),
                 _series(f"{TRANSFER} (n=3)", range(1, 54), {"color": "tab:red"})]},
        TRANSFER, {PANEL: [(0.9, "glorot's best of the mean curve 0.9000 (epoch 53)")]}),
    "test_auc_against_freeze": lambda: figures.test_auc_against_freeze(
        {dataset: [_series(f"{net}, {TRANSFER}", [0, 0.1, 0.2, 0.3, 0.5, 0.75, 1],
                           {"color": f"C{k}", "marker": "o"}, errors=True)
                   for k, net in enumerate(("inception_v3", "mobilenet"))]
         for dataset in ("cancer", "retina (classes=0,1,2,3,4)", "proteins")}),
    "test_auc_against_train_size": lambda: figures.test_auc_against_train_size(
        {PANEL: [figures.Series(init, [20, 50, 100, 200, 1438], [0.6, 0.7, 0.8, 0.85, 0.9],
                                style={"marker": "o"},
                                tick_labels=["20", "50", "100", "200", "all (1438)"])
                 for init in ("glorot", "imagenet", TRANSFER)]}),
    "tsne": lambda: tsne_figure(
        [("t-SNE", [np.random.default_rng(k).normal(size=(60, 2)) for k in range(3)],
          [("", "")] * 3)],
        [np.arange(60) % 17] * 3, [f"finding {k}" for k in range(17)],
        [f"{TRANSFER}, freeze {f}, epochs 3+50, train size all\ntest AUC 0.912, acc 0.803"
         for f in (0, 0.5, 1)], "proteins · inception_v3"),
    "tsne_pca": lambda: tsne_figure(
        [(name, [np.random.default_rng(k).normal(size=(60, 2)) for k in range(5)], labels)
         for name, labels in (("t-SNE", [("", "")] * 5),
                              ("PCA", [("PC1 31% of the variance", "PC2 12%")] * 5))],
        [np.arange(60) % 10] * 5, [str(k) for k in range(10)],
        [f"{TRANSFER}, freeze {f}\ntest AUC 0.912, acc 0.803" for f in range(5)],
        "digits · small_cnn"),
    "transfusion_similarity": lambda: transfusion_figure(
        [NetSimilarity("retina (classes=0,1,2,3,4)", net, 0.8, 0.55 + 0.05 * k,
                       ("a", "b", "c"), k == 0)
         for k, net in enumerate(("inception_v3", "resnet50_v2", "cbr_large_w", "cbr_small",
                                  "cbr_tiny"))]),
    "similarity": lambda: similarity_figure(
        [BlockSimilarity(run, "init", block, f"mixed{block - 1}", 0.9 - 0.05 * block, 40,
                         64, 64) for run in ("a", "b") for block in range(1, 12)],
        {("a", "init"): f"{TRANSFER}, freeze 0 vs its init",
         ("b", "init"): "imagenet, freeze 0.5, epochs 3+50 vs its init"},
        "cancer · inception_v3"),
    "gradcam": _gradcam,
    "lr_find": _lr_find,
}


@pytest.mark.parametrize("name", FIGURES)
def test_every_text_lies_inside_the_canvas(name):
    figure = FIGURES[name]()
    assert texts_off_canvas(figure) == []


def test_the_check_sees_a_text_cut_at_the_edge():
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3, 2), layout="constrained")
    figure.suptitle(TRANSFER)
    assert texts_off_canvas(figure) == [TRANSFER]
    figure.suptitle(wrap(TRANSFER, 3, 12))
    assert texts_off_canvas(figure) == []


def test_a_single_point_is_a_marker_on_an_axis_around_it():
    figure = figures.validation_by_freeze(
        {"digits · small_cnn": [figures.Series("freeze 0", [1], [0.9], style={"color": "C0"}),
                                figures.Series("freeze 1", [1, 2], [0.8, 0.85],
                                               style={"color": "C1"})]}, "imagenet")
    (axes,) = figure.axes
    single, line = axes.get_lines()
    assert single.get_linestyle() == "None" and single.get_marker() == "o"
    assert single.get_markersize() >= 6
    assert line.get_linestyle() == "-"
    assert axes.get_xlim() == (0.5, 2.5) or axes.get_xlim()[0] <= 1 <= axes.get_xlim()[1]
    alone = figures.validation_by_freeze(
        {"digits · small_cnn": [figures.Series("freeze 0", [1], [0.9])]}, "imagenet")
    assert alone.axes[0].get_xlim() == (0.0, 2.0)  # one epoch: an axis from 0 to 2


@pytest.mark.parametrize("suffix, magic", [("png", b"\x89PNG"), ("pdf", b"%PDF"),
                                           ("svg", b"<?xml")])
def test_figures_save_in_each_format(tmp_path, suffix, magic):
    figure = FIGURES["test_auc_against_train_size"]()
    path = save_figure(figure, tmp_path / "sub" / f"figure.{suffix}")
    assert path.read_bytes()[:len(magic)] == magic
    assert [item.name for item in path.parent.iterdir()] == [path.name]  # nothing staged left
    if suffix == "png":
        import struct

        width, height = struct.unpack(">II", path.read_bytes()[16:24])
        inches = figure.get_size_inches()
        assert (width, height) == (round(inches[0] * PNG_DPI), round(inches[1] * PNG_DPI))
        assert PNG_DPI >= 200


def test_an_unknown_format_names_the_valid_ones(tmp_path):
    with pytest.raises(MedtransferError, match="Unknown figure format 'jpg'.*png, pdf, svg"):
        save_figure(FIGURES["gradcam"](), tmp_path / "figure.jpg")
    assert list(tmp_path.iterdir()) == []
