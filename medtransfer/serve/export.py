"""``medtransfer export``: a finished run as a model that needs nothing but Keras.

The exported model takes raw uint8 RGB images of any size, ``(batch, height, width, 3)``
(one size per call), and does the run's resizing and scaling itself with the training
pipeline's own functions (:mod:`medtransfer.data.pipeline`, written with ``keras.ops``),
then the best checkpoint::

    image (uint8) -> resize to S x S, rounded to uint8 -> [0, 1] -> preprocess_input
                     (--scaling native) -> classifier -> probabilities
                                                      -> argmax -> class name

Everything in it is a built-in Keras layer or ``keras.ops`` operation, so
``keras.saving.load_model`` reads the ``.keras`` file without medtransfer and without
custom objects. The class names travel three ways: the ``class_name`` output, the
vocabulary of the layer named ``class_names``, and a JSON file beside the export.
Images a dataset's ``prepare`` would change first (retina's fundus crop, shrinking to
``--max-size``) should get that step before the model; ``medtransfer predict`` does both.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtransfer.errors import MedtransferError, look_up_option
from medtransfer.fileio import write_json_atomic
from medtransfer.version import __version__

# TensorFlow is imported inside the functions: the command line reads FORMATS at start-up.
FORMATS = ("keras", "saved_model")
CLASS_NAMES_LAYER = "class_names"


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_run` wrote.

    Attributes:
        path: the ``.keras`` file or the SavedModel folder.
        info: the JSON beside it (class names, input, outputs, where it came from).
        class_names: the classes, in the order of the probabilities.
    """

    path: Path
    info: Path
    class_names: list[str]


def export_run(run_dir: str | Path, *, format: str = "keras",
               out: str | Path | None = None) -> ExportResult:
    """Exports a finished run's best checkpoint as a self-contained model.

    Args:
        run_dir: a complete run directory.
        format: ``keras`` (a ``.keras`` file for ``keras.saving.load_model``) or
            ``saved_model`` (a SavedModel folder whose ``serving_default`` signature takes
            ``image``, uint8 ``[None, None, None, 3]``, for TensorFlow Serving).
        out: where to write; default ``RUN_DIR/export/model.keras`` or
            ``RUN_DIR/export/saved_model``. The JSON goes beside it: ``model.json``, or
            ``<folder>.json`` for a SavedModel.

    Returns:
        An :class:`ExportResult`.

    Raises:
        MedtransferError: the run is not complete, an unknown format, a ``.keras`` path
            without that suffix, or an ``out`` folder that holds something else.
    """
    from medtransfer.training.rundir import open_run

    format = look_up_option(format, FORMATS, "export format",
                            see="'medtransfer export --help' explains each.")
    run = open_run(run_dir, "export")
    default = run.directory.export / ("model.keras" if format == "keras" else "saved_model")
    out = Path(out).expanduser() if out is not None else default
    if format == "keras" and out.suffix != ".keras":
        raise MedtransferError(
            f"export: --out {out} must end in .keras for --format keras (Keras saves and "
            f"loads only that suffix), e.g. --out {out.with_suffix('.keras')}."
        )
    if format == "saved_model":
        _clear_saved_model(out)
    class_names = run.class_names()
    model = build_serving_model(
        run.model(), run.config.image_size, run.preprocess(), class_names,
        multi_label=run.config.multi_label,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    if format == "keras":
        model.save(out)
        info = out.with_suffix(".json")
    else:
        model.export(str(out), format="tf_saved_model", verbose=False)
        info = out.with_name(out.name + ".json")
    write_json_atomic(info, _description(run, format, class_names))
    return ExportResult(out, info, class_names)


def build_serving_model(classifier, image_size: int, preprocess, class_names: list[str],
                        multi_label: bool = False):
    """Wraps a trained classifier into a model from raw uint8 images of any size.

    Args:
        classifier: the trained model, ``(batch, S, S, 3)`` floats -> probabilities.
        image_size: ``S``, the run's input size.
        preprocess: the net's ``preprocess_input`` under ``--scaling native``, else None.
        class_names: the classes in the order of the probabilities.
        multi_label: the classifier has a sigmoid per finding (``class_names``).

    Returns:
        A Keras model with input ``image`` (uint8 ``(batch, height, width, 3)``) and the
        outputs ``probabilities`` (float32 ``(batch, classes)``) and ``class_name``
        (string ``(batch,)``, the most probable class); for a multi-label run, instead of
        ``class_name``, ``present`` (bool ``(batch, findings)``: probability >= 0.5).
    """
    import keras

    from medtransfer.data.pipeline import apply_scaling, resize_image, to_unit_range
    from medtransfer.training.metrics import THRESHOLD

    image = keras.Input((None, None, 3), dtype="uint8", name="image")
    pixels = apply_scaling(to_unit_range(resize_image(image, image_size)), preprocess)
    probabilities = classifier(pixels)
    if multi_label:
        # The findings' names travel in the JSON beside the export; a vocabulary layer
        # that no output uses would not be saved with the model.
        present = keras.ops.greater_equal(probabilities, THRESHOLD)
        return keras.Model(image, {"probabilities": probabilities, "present": present},
                           name="medtransfer_export")
    class_name = keras.layers.StringLookup(
        vocabulary=list(class_names), invert=True, num_oov_indices=0, name=CLASS_NAMES_LAYER,
    )(keras.ops.argmax(probabilities, axis=-1))
    return keras.Model(
        image, {"probabilities": probabilities, "class_name": class_name},
        name="medtransfer_export",
    )


def _clear_saved_model(out: Path) -> None:
    """Lets a new SavedModel replace an old one, but never a folder holding anything else."""
    if not out.exists():
        return
    if out.is_dir() and (out / "saved_model.pb").is_file():
        shutil.rmtree(out)
    elif out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    else:
        raise MedtransferError(
            f"export: --out {out} already exists and is not a SavedModel; a SavedModel is a "
            "folder of its own. Choose a new path, e.g. --out exported/saved_model."
        )


def _description(run, format: str, class_names: list[str]) -> dict[str, Any]:
    from medtransfer.data.pipeline import RESIZE_RULE
    from medtransfer.training.metrics import THRESHOLD

    config = run.config
    return {
        "format": "keras" if format == "keras" else "tf_saved_model",
        "class_names": class_names,
        "input": {
            "name": "image", "dtype": "uint8", "shape": [None, None, None, 3],
            "pixels": "RGB, 0-255, any height and width (one size per batch)",
        },
        "outputs": {
            "probabilities": f"float32 (batch, {len(class_names)}), in class_names order",
            **({"present": f"bool (batch, {len(class_names)}): the finding's probability "
                           f"is at least {THRESHOLD}"} if config.multi_label else
               {"class_name": "string (batch,), the most probable class"}),
        },
        "inside": (
            f"resize to {config.image_size}x{config.image_size} ({RESIZE_RULE}), "
            f"scaling '{config.scaling}', then the best checkpoint "
            f"(epoch {run.metrics.get('best_epoch')})"
        ),
        "serving_signature": "serving_default" if format == "saved_model" else None,
        "run": str(run.path),
        "dataset": config.dataset,
        "net": config.net,
        "image_size": config.image_size,
        "scaling": config.scaling,
        "test_auc_micro": run.metrics.get("test_auc_micro"),
        **({"task": "multi_label", "test_auc_mean": run.metrics.get("test_auc_mean")}
           if config.multi_label else {}),
        "medtransfer_version": __version__,
    }
