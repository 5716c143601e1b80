"""The on-disk format of a prepared dataset's images: encoded images in TFRecord shards.

``prepare`` decodes every source image once (TIFF, JPEG, PNG, four-channel protein
stacks, npz arrays), applies the dataset's own preprocessing (for example the fundus
crop), and stores it as an 8-bit RGB image, BMP by default or PNG (``--image-format``,
``options.IMAGE_FORMATS``; both lossless), inside a TFRecord ``tf.train.Example``
with three features:

- ``id``: the image id, as in ``split.csv`` (bytes),
- ``label``: the class index into ``manifest.json``'s ``class_names`` (int64),
- ``image``: the encoded image, always 3 channels; :func:`decode_image` reads either.

Format version 2 added BMP; version 1 (PNG only) is still read.

Each split is written to its own files, ``<split>-<index:05d>.tfrecord``; a new file
starts when the current one passes ``SHARD_BYTES``, so that tf.data can read several
shards in parallel while a small dataset stays in one file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import tensorflow as tf

FORMAT_VERSION = 2
# What this medtransfer reads: version 1 shards hold PNG, which decode_image reads too.
READABLE_FORMAT_VERSIONS = (1, 2)
SPLITS = ("train", "validation", "test")
SHARD_BYTES = 128 * 1024 * 1024

_FEATURES = {
    "id": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "image": tf.io.FixedLenFeature([], tf.string),
}


def _example(image_id: str, label: int, image: bytes) -> bytes:
    feature = {
        "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_id.encode()])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_split_shards(
    out_dir: str | Path,
    split: str,
    records: Iterable[tuple[str, int, bytes]],
    shard_bytes: int = SHARD_BYTES,
) -> list[str]:
    """Writes one split's ``(id, label_index, encoded_image)`` records to TFRecord shards.

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


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses one serialized record into ``{"id", "label", "image"}`` (image still encoded)."""
    return tf.io.parse_single_example(serialized, _FEATURES)


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """A stored image (BMP or PNG bytes) -> ``(H, W, 3)`` uint8 RGB."""
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)
