"""Weight files into backbones and classifiers, with every mismatch explained before training.

Two formats are read:

- Keras 3 ``.weights.h5`` (``model.save_weights``): tensors are stored under
  ``layers/<snake_case class name>[_k]/vars/<i>``, and a nested model (the classifier's
  backbone) under ``layers/<its class name>/layers/...``. A file is recognised as a
  *backbone* file when its top level holds exactly the backbone's tensors, and as a
  *classifier* file when one nested model inside it holds them. Both are checked tensor by
  tensor (path and shape) against a freshly built model before anything is loaded, so a file
  of another net fails with the first differing tensor instead of half-loading.
- Legacy Keras 2 HDF5 (the ImageNet ``*_notop.h5`` files Keras downloads, or ``model.save``
  to ``.h5``): loaded by Keras in layer order; Keras's own layer-count or shape complaint is
  passed on in the error.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import h5py
import keras

from medtransfer.errors import MedtransferError

Shapes = dict[str, tuple[int, ...]]


def load_backbone_weights(backbone: keras.Model, path: str | Path, net: str) -> None:
    """Loads a backbone's weights from a backbone file or from the backbone part of a classifier.

    Args:
        backbone: the freshly built backbone to load into.
        path: a Keras 3 ``.weights.h5`` file (saved from a backbone or a whole classifier)
            or a legacy Keras HDF5 file such as the Keras ImageNet ``*_notop.h5`` files.
        net: the net's name, for error messages.

    Raises:
        MedtransferError: the file is missing, is not a Keras weights file, or holds the
            weights of another architecture (the message names the first mismatch).
    """
    path = Path(path)
    with _open(path) as f:
        legacy = _is_legacy(f, path)
        if not legacy:
            found = _shapes(f["layers"])
            expected = _model_shapes(backbone)
            _, nested = _split_nested(found)
            if found == expected:
                source = None
            else:
                matching = [name for name, shapes in nested.items() if shapes == expected]
                if not matching:
                    # A classifier file is compared by its backbone part, which says more.
                    compared = next(iter(nested.values())) if len(nested) == 1 else found
                    raise _mismatch(path, net, _describe_mismatch(compared, expected))
                source = matching[0]
    if legacy:
        _load_legacy(backbone, path, net)
    else:
        _load_subset(backbone, path, source)


def load_classifier_weights(classifier: keras.Model, path: str | Path, net: str) -> None:
    """Loads a whole classifier, backbone and head, from a file saved from one.

    Args:
        classifier: the freshly built classifier.
        path: a Keras 3 ``.weights.h5`` file saved from a classifier of the same net,
            number of classes and head units.
        net: the net's name, for error messages.

    Raises:
        MedtransferError: the file is missing, is not a Keras weights file, or does not
            hold this classifier's tensors (the message names the first mismatch).
    """
    path = Path(path)
    with _open(path) as f:
        if _is_legacy(f, path):
            raise _mismatch(path, net, "a legacy Keras file holds a backbone, not a classifier")
        found, expected = _shapes(f["layers"]), _model_shapes(classifier)
    if found != expected:
        raise _mismatch(path, net, _describe_mismatch(found, expected))
    _load_subset(classifier, path, None)


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise MedtransferError(f"Weights file {path} does not exist.")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise MedtransferError(
            f"Weights file {path} is not an HDF5 file ({error}). Pass a Keras weights file "
            "(a '.weights.h5' saved by model.save_weights, or a Keras ImageNet '.h5' file)."
        ) from None


def _is_legacy(f: h5py.File, path: Path) -> bool:
    if "layer_names" in f.attrs or "model_weights" in f:
        return True
    if isinstance(f.get("layers"), h5py.Group):
        return False
    raise MedtransferError(
        f"Weights file {path} is HDF5 but holds no Keras weights (neither a 'layers' group "
        "of model.save_weights nor the 'layer_names' of a legacy Keras file)."
    )


def _shapes(group: h5py.Group) -> Shapes:
    shapes: Shapes = {}

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            shapes[name] = tuple(obj.shape)

    group.visititems(visit)
    return shapes


def _split_nested(shapes: Shapes) -> tuple[Shapes, dict[str, Shapes]]:
    """Splits ``layers/``-relative shapes into the top level's own and those of nested models."""
    own: Shapes = {}
    nested: dict[str, Shapes] = {}
    for key, shape in shapes.items():
        parts = key.split("/")
        if len(parts) > 2 and parts[1] == "layers":
            nested.setdefault(parts[0], {})["/".join(parts[2:])] = shape
        else:
            own[key] = shape
    return own, nested


def _model_shapes(model: keras.Model) -> Shapes:
    # The storage paths are Keras's own naming; saving a fresh model is the one sure way
    # to learn them for this Keras version.
    with tempfile.TemporaryDirectory() as tmp:
        file = os.path.join(tmp, "expected.weights.h5")
        model.save_weights(file)
        with h5py.File(file, "r") as f:
            return _shapes(f["layers"]) if "layers" in f else {}


def _load_subset(model: keras.Model, path: Path, nested: str | None) -> None:
    """Loads ``model`` from the file's top level or from one nested model inside it.

    Only ``layers``/``vars`` are copied to a temporary file: an optimizer state saved with a
    compiled model would otherwise make Keras warn about optimizer variables it skips.
    """
    with tempfile.TemporaryDirectory() as tmp:
        subset = os.path.join(tmp, "subset.weights.h5")
        with h5py.File(path, "r") as src, h5py.File(subset, "w") as dst:
            root = src if nested is None else src["layers"][nested]
            for key in ("layers", "vars"):
                if key in root:
                    dst.copy(root[key], key)
        model.load_weights(subset)


def _load_legacy(model: keras.Model, path: Path, net: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        target = path
        # Keras picks the reader by file suffix; a legacy file must end in .h5, not .weights.h5.
        if path.name.endswith(".weights.h5") or path.suffix not in (".h5", ".hdf5"):
            target = Path(tmp) / "legacy.h5"
            target.symlink_to(path.resolve())
        try:
            model.load_weights(target)
        except ValueError as error:
            raise _mismatch(path, net, str(error).strip()) from None


def _describe_mismatch(found: Shapes, expected: Shapes) -> str:
    for key, shape in expected.items():
        if key in found and found[key] != shape:
            return f"tensor '{key}' has shape {found[key]} in the file, the net expects {shape}"
    missing = [key for key in expected if key not in found]
    extra = [key for key in found if key not in expected]
    parts = [f"the file holds {len(found)} weight tensors, the net expects {len(expected)}"]
    for what, keys in (("missing from the file", missing), ("not in the net", extra)):
        if keys:
            more = f" and {len(keys) - 1} more" if len(keys) > 1 else ""
            parts.append(f"{what}: '{keys[0]}'{more}")
    return "; ".join(parts)


def _mismatch(path: Path, net: str, detail: str) -> MedtransferError:
    return MedtransferError(
        f"Weights file {path} does not fit net '{net}': {detail.rstrip('.')}. It was saved "
        f"from another net or another configuration of it; pass weights saved from '{net}'."
    )
