"""The on-disk format of a prepared dataset's images: PNG-in-TFRecord shards per split.

``prepare`` decodes every source image once (TIFF, JPEG, PNG, four-channel protein
stacks, npz arrays), applies the dataset's own preprocessing (for example the fundus
crop), and stores it as an 8-bit RGB PNG inside a TFRecord ``tf.train.Example`` with
three features:

- ``id``: the image id, as in ``split.csv`` (bytes),
- ``label``: the class index into ``manifest.json``'s ``class_names`` (int64),
- ``image``: the PNG bytes, always 3 channels, RGB order.

Each split is written to its own files, ``<split>-<index:05d>.tfrecord``; a new file
starts when the current one passes ``SHARD_BYTES``, so that tf.data can read several
shards in parallel while a small dataset stays in one file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

FORMAT_VERSION = 1
SPLITS = ("train", "validation", "test")
SHARD_BYTES = 128 * 1024 * 1024

_FEATURES = {
    "id": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "image": tf.io.FixedLenFeature([], tf.string),
}


def encode_png(rgb: np.ndarray) -> bytes:
    """Encodes an ``(H, W, 3)`` uint8 RGB array as PNG bytes."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got {rgb.dtype} {rgb.shape}")
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("OpenCV could not encode the image as PNG")
    return buffer.tobytes()


def _example(image_id: str, label: int, png: bytes) -> bytes:
    feature = {
        "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_id.encode()])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_split_shards(
    out_dir: str | Path,
    split: str,
    records: Iterable[tuple[str, int, bytes]],
    shard_bytes: int = SHARD_BYTES,
) -> list[str]:
    """Writes one split's ``(id, label_index, png_bytes)`` records to TFRecord shards.

    Args:
        out_dir: the prepared dataset's folder.
        split: one of ``SPLITS``.
        records: the split's images, in the order they should be stored.
        shard_bytes: start a new file once the current one holds this many bytes.

    Returns:
        The shard file names, relative to ``out_dir``, in order. A split without
        records still gets one (empty) shard, so every split has at least one file.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    out_dir = Path(out_dir)
    names: list[str] = []
    writer = None
    written = 0
    try:
        for image_id, label, png in records:
            if writer is None or written >= shard_bytes:
                if writer is not None:
                    writer.close()
                names.append(f"{split}-{len(names):05d}.tfrecord")
                writer = tf.io.TFRecordWriter(str(out_dir / names[-1]))
                written = 0
            serialized = _example(image_id, label, png)
            writer.write(serialized)
            written += len(serialized)
        if writer is None:
            names.append(f"{split}-00000.tfrecord")
            writer = tf.io.TFRecordWriter(str(out_dir / names[-1]))
    finally:
        if writer is not None:
            writer.close()
    return names


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses one serialized record into ``{"id", "label", "image"}`` (image still PNG)."""
    return tf.io.parse_single_example(serialized, _FEATURES)
