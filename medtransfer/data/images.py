"""Turning one candidate image into the encoded image that ``prepare`` stores.

``prepare`` runs :func:`convert_indexed` in threads of one process: the work is
OpenCV and NumPy calls on whole images, which release the GIL, so two threads convert
large photographs 1.9x as fast as one, with nothing to start and nothing to copy
between processes. ``shards`` writes what :func:`encode_image` returns and decodes it
with TensorFlow.

Every failure a source file can cause is an :class:`ImageRejected` with a short fixed
reason ("zero-byte file", "truncated", ...) that ends up in ``rejected.csv``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from medtransfer.data.sources import Candidate
from medtransfer.options import IMAGE_FORMATS

# Channel rules, one per layout (see each DatasetSpec's description).
COLOR = "color"  # exactly 3 channels: the layout is RGB by definition (cancer, retina)
ANY = "any"  # 1, 3 or 4 channels: gray is replicated, alpha dropped (cats, folder, csv)
GRAY = "gray"  # exactly 1 channel: one stain of a protein stack

_PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk with its fixed CRC: always the last 12 bytes
_JPEG_START_OF_SCAN = b"\xff\xda"
_JPEG_END_OF_IMAGE = b"\xff\xd9"


class ImageRejected(Exception):
    """A source image that cannot be used, with the short reason for ``rejected.csv``.

    Args:
        reason: a short fixed phrase, e.g. "truncated".
        path: the offending file when it is not the candidate's first one (protein stacks).
    """

    def __init__(self, reason: str, path: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.path = path


@dataclass(frozen=True)
class ConvertOptions:
    """How every candidate of one ``prepare`` call is converted.

    Attributes:
        channels: ``COLOR``, ``ANY`` or ``GRAY`` for single files (stacks are always
            three ``GRAY`` files).
        preprocess: the layout's own step on the RGB array (the fundus crop), or None.
        max_size: the longer side of the stored image is at most this many pixels.
        image_format: how the stored pixels are encoded, one of ``IMAGE_FORMATS``.
    """

    channels: str
    preprocess: Callable[[np.ndarray], np.ndarray] | None
    max_size: int
    image_format: str = "bmp"


def sniff_format(data: bytes) -> str | None:
    """Returns "jpeg", "png", "tiff", "bmp" or "webp" from the file's magic bytes, else None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if data.startswith(b"BM"):
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def is_truncated(data: bytes, image_format: str) -> bool:
    """Whether a JPEG or PNG file stops before its end marker.

    OpenCV can return a partly grey image for a cut JPEG or PNG without failing, so the
    bytes are checked instead. A JPEG is complete when an end-of-image marker follows its
    last start-of-scan marker (entropy-coded data cannot contain ``FF D9``, and data that
    some cameras append after the end marker is allowed). A PNG is complete when it holds
    the IEND chunk. Other formats are left to the decoder, which fails on them.
    """
    if image_format == "jpeg":
        start_of_scan = data.rfind(_JPEG_START_OF_SCAN)
        return start_of_scan == -1 or data.rfind(_JPEG_END_OF_IMAGE) < start_of_scan
    if image_format == "png":
        return data.rfind(_PNG_END) == -1
    return False


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        # 16-bit scans keep their full range: 65535 -> 255.
        return np.round(array.astype(np.float32) / 257.0).astype(np.uint8)
    raise ImageRejected(f"unsupported pixel type {array.dtype}")


def _channel_count(array: np.ndarray) -> int:
    return 1 if array.ndim == 2 else array.shape[2]


def decode_image_file(path: str, channels: str) -> np.ndarray:
    """Reads and decodes one image file with the layout's channel rule.

    Args:
        path: the file.
        channels: ``COLOR``, ``ANY`` or ``GRAY``.

    Returns:
        ``(H, W, 3)`` uint8 RGB for ``COLOR`` and ``ANY``, ``(H, W)`` uint8 for ``GRAY``.

    Raises:
        ImageRejected: the file is missing, empty, not an image, truncated, undecodable,
            or has channels the rule does not accept.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        raise ImageRejected("missing file") from None
    except OSError:
        raise ImageRejected("unreadable") from None
    if not data:
        raise ImageRejected("zero-byte file")
    image_format = sniff_format(data)
    if image_format is None:
        raise ImageRejected("not an image")
    if is_truncated(data, image_format):
        raise ImageRejected("truncated")
    try:
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        array = None
    if array is None or array.size == 0:
        raise ImageRejected("unreadable")
    array = _to_uint8(array)
    found = _channel_count(array)
    if channels == GRAY:
        if found != 1:
            raise ImageRejected(f"wrong channels: expected 1, got {found}")
        return array
    if channels == COLOR:
        if found != 3:
            raise ImageRejected(f"wrong channels: expected 3, got {found}")
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    if found == 1:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    if found == 3:
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    if found == 4:
        return cv2.cvtColor(array, cv2.COLOR_BGRA2RGB)
    raise ImageRejected(f"wrong channels: expected 1, 3 or 4, got {found}")


def stack_channels(paths: tuple[str, ...]) -> np.ndarray:
    """Stacks single-channel files (red, green, blue) into one ``(H, W, 3)`` RGB array.

    Raises:
        ImageRejected: one file fails :func:`decode_image_file` with ``GRAY`` (its path is
            attached), or the files differ in size.
    """
    planes = []
    for path in paths:
        try:
            planes.append(decode_image_file(path, GRAY))
        except ImageRejected as rejected:
            raise ImageRejected(rejected.reason, path) from None
    if len({plane.shape for plane in planes}) != 1:
        sizes = ", ".join(f"{p.shape[1]}x{p.shape[0]}" for p in planes)
        raise ImageRejected(f"channel images differ in size ({sizes})")
    return np.ascontiguousarray(np.stack(planes, axis=-1))


def array_to_rgb(array: np.ndarray) -> np.ndarray:
    """Converts an in-memory ``(H, W)`` or ``(H, W, 3)`` uint8 array to RGB."""
    if array.dtype != np.uint8:
        raise ImageRejected(f"unsupported pixel type {array.dtype}")
    if array.ndim == 2:
        return cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_GRAY2RGB)
    if array.ndim == 3 and array.shape[2] == 3:
        return np.ascontiguousarray(array)
    raise ImageRejected(f"wrong channels: expected 1 or 3, got shape {array.shape}")


def downsize(rgb: np.ndarray, max_size: int) -> np.ndarray:
    """Shrinks an image so its longer side is at most ``max_size``; never enlarges it.

    Area interpolation averages the source pixels, which avoids the aliasing that
    bilinear shrinking of large fundus photographs would add.
    """
    height, width = rgb.shape[:2]
    longer = max(height, width)
    if longer <= max_size:
        return rgb
    scale = max_size / longer
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def encode_image(rgb: np.ndarray, image_format: str) -> bytes:
    """Encodes an ``(H, W, 3)`` uint8 RGB array as BMP or PNG bytes (``IMAGE_FORMATS``).

    Both are lossless and both are read by ``tf.io.decode_image``. BMP is the raw pixels
    behind a 54-byte header: it decodes about 10x faster than PNG (3,100 vs 320 images/s
    on 2 cores, 500x375 photographs) and takes 1.6x PNG's space there, more on images
    with large flat areas. PNG is for when disk matters more.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got {rgb.dtype} {rgb.shape}")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    ok, buffer = cv2.imencode(f".{image_format}", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"OpenCV could not encode the image as {image_format.upper()}")
    return buffer.tobytes()


def load_rgb(candidate: Candidate, channels: str) -> np.ndarray:
    """Loads a candidate's pixels as ``(H, W, 3)`` uint8 RGB.

    Raises:
        ImageRejected: see :func:`decode_image_file`.
    """
    if candidate.pixels is not None:
        return array_to_rgb(candidate.pixels)
    if len(candidate.paths) > 1:
        return stack_channels(candidate.paths)
    return decode_image_file(candidate.paths[0], channels)


def prepared_pixels(candidate: Candidate, options: ConvertOptions) -> np.ndarray:
    """Decodes, preprocesses and downsizes one candidate: the pixels ``prepare`` stores.

    ``predict`` calls it too, so a new image gets exactly its dataset's preparation.

    Returns:
        ``(H, W, 3)`` uint8 RGB, contiguous.

    Raises:
        ImageRejected: the candidate cannot be used.
    """
    rgb = load_rgb(candidate, options.channels)
    if options.preprocess is not None:
        rgb = options.preprocess(rgb)
    return np.ascontiguousarray(downsize(rgb, options.max_size))


def convert_candidate(candidate: Candidate, options: ConvertOptions) -> tuple[bytes, int, int]:
    """:func:`prepared_pixels`, encoded as ``options.image_format``.

    Returns:
        ``(encoded_bytes, height, width)`` of the stored image.

    Raises:
        ImageRejected: the candidate cannot be used.
    """
    rgb = prepared_pixels(candidate, options)
    return encode_image(rgb, options.image_format), rgb.shape[0], rgb.shape[1]


# --- converting in threads ---------------------------------------------------------------

ConvertResult = tuple[int, bytes | None, str | None, str | None, int, int]


@contextlib.contextmanager
def opencv_for_our_threads() -> Iterator[None]:
    """OpenCV set up for ``prepare``'s conversion threads, restored on exit.

    Each OpenCV call runs on the thread that made it: the parallelism comes from
    ``prepare``'s own threads, and OpenCV's thread pool would only compete with them (or,
    with ``--workers 1``, spread one conversion over every core). Warnings are silenced:
    rejected files are reported in ``rejected.csv``, not as OpenCV warnings on stderr.
    Both are settings of the whole process.
    """
    threads, level = cv2.getNumThreads(), cv2.utils.logging.getLogLevel()
    cv2.setNumThreads(1)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)
        cv2.utils.logging.setLogLevel(level)


def convert_indexed(task: tuple[int, Candidate], options: ConvertOptions) -> ConvertResult:
    """Converts one ``(index, candidate)``; a rejection is a result, not an exception.

    Returns:
        ``(index, encoded image or None, reason or None, offending path or None, height, width)``.
    """
    index, candidate = task
    try:
        encoded, height, width = convert_candidate(candidate, options)
    except ImageRejected as rejected:
        return index, None, rejected.reason, rejected.path, 0, 0
    return index, encoded, None, None, height, width
