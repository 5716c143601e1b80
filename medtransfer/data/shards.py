"""The on-disk format of a prepared dataset's images: encoded images in TFRecord shards.

``prepare`` decodes every source image once (TIFF, JPEG, PNG, four-channel protein
stacks, npz arrays), applies the dataset's own preprocessing (for example the fundus
crop), and stores it as an 8-bit RGB image, BMP by default or PNG (``--image-format``,
``options.IMAGE_FORMATS``; both lossless), inside a TFRecord ``tf.train.Example``
with three features:

- ``id``: the image id, as in ``split.csv`` (bytes),
- ``label``: single-label: the class index into ``manifest.json``'s ``class_names``
  (int64); multi-label: one int64 per finding of ``class_names``, 1 positive, 0
  negative, -1 unknown (masked out of the loss and the metrics),
- ``image``: the encoded image, always 3 channels; :func:`decode_image` reads either.

Format version 2 added BMP; version 1 (PNG only) is still read. Version 3 is a
multi-label dataset (``manifest.json``'s ``task`` is ``multi_label``); single-label
datasets keep writing version 2.

Each split is written to its own files, ``<split>-<index:05d>.tfrecord``; a new file
starts when the current one passes ``SHARD_BYTES``, so that tf.data can read several
shards in parallel while a small dataset stays in one file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

# TensorFlow is imported inside the functions that use it: a sweep or a report reads
# prepared datasets' manifests through this module's constants without loading it.
if TYPE_CHECKING:
    import tensorflow as tf

FORMAT_VERSION = 2
MULTI_LABEL_FORMAT_VERSION = 3
# What this medtransfer reads: version 1 shards hold PNG, which decode_image reads too.
READABLE_FORMAT_VERSIONS = (1, 2, 3)
SPLITS = ("train", "validation", "test")
SHARD_BYTES = 128 * 1024 * 1024


def _features(num_findings: int | None = None) -> dict:
    """The shards' features; ``label`` a scalar, or ``num_findings`` values."""
    import tensorflow as tf

    return {
        "id": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([] if num_findings is None else [num_findings],
                                       tf.int64),
        "image": tf.io.FixedLenFeature([], tf.string),
    }


def _example(image_id: str, label: int | Sequence[int], image: bytes) -> bytes:
    import tensorflow as tf

    values = [int(label)] if isinstance(label, int | np.integer) else [int(v) for v in label]
    feature = {
        "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_id.encode()])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=values)),
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_split_shards(
    out_dir: str | Path,
    split: str,
    records: Iterable[tuple[str, int | Sequence[int], bytes]],
    shard_bytes: int = SHARD_BYTES,
) -> list[str]:
    """Writes one split's ``(id, label, encoded_image)`` records to TFRecord shards.

    ``label`` is a class index (single-label) or one 1/0/-1 value per finding (multi-label).

    Args:
        out_dir: the prepared dataset's folder.
        split: one of ``SPLITS``.
        records: the split's images, in the order they should be stored.
        shard_bytes: start a new file once the current one holds this many bytes.

    Returns:
        The shard file names, relative to ``out_dir``, in order. A split without
        records still gets one (empty) shard, so every split has at least one file.
    """
    import tensorflow as tf

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    out_dir = Path(out_dir)
    names: list[str] = []
    writer = None
    written = 0
    try:
        for image_id, label, image in records:
            if writer is None or written >= shard_bytes:
                if writer is not None:
                    writer.close()
                names.append(f"{split}-{len(names):05d}.tfrecord")
                writer = tf.io.TFRecordWriter(str(out_dir / names[-1]))
                written = 0
            serialized = _example(image_id, label, image)
            writer.write(serialized)
            written += len(serialized)
        if writer is None:
            names.append(f"{split}-00000.tfrecord")
            writer = tf.io.TFRecordWriter(str(out_dir / names[-1]))
    finally:
        if writer is not None:
            writer.close()
    return names


def parse_example(serialized: tf.Tensor, num_findings: int | None = None
                  ) -> dict[str, tf.Tensor]:
    """Parses one serialized record into ``{"id", "label", "image"}`` (image still encoded).

    Args:
        serialized: one record of a shard.
        num_findings: None for a single-label dataset (``label`` is a scalar class index);
            the number of findings of a multi-label one (``label`` is an int64 vector of
            that length: 1 positive, 0 negative, -1 unknown).
    """
    import tensorflow as tf

    return tf.io.parse_single_example(serialized, _features(num_findings))


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """A stored image (BMP or PNG bytes) -> ``(H, W, 3)`` uint8 RGB."""
    import tensorflow as tf

    return tf.io.decode_image(encoded, channels=3, expand_animations=False)
