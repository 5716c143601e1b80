"""Fundus photograph preprocessing for ``retina`` (APTOS 2019), with OpenCV.

APTOS photographs show the eye as a bright disk on a black background, at many image
sizes and with borders of different widths. Cropping to the disk makes the eye fill
the frame the same way in every image before it is resized; ``prepare`` then shrinks
the crop so its longer side is at most ``--max-size``.
"""

from __future__ import annotations

import cv2
import numpy as np

from medtransfer.data.images import downsize

# The black around the eye is not exactly 0 (JPEG history, sensor noise, a faint halo),
# while even dark fundus periphery is well above this after a median blur.
BORDER_THRESHOLD = 15


def fundus_bounding_box(
    rgb: np.ndarray, threshold: int = BORDER_THRESHOLD
) -> tuple[int, int, int, int] | None:
    """Finds the eye in a fundus photograph.

    The eye is the largest connected region brighter than ``threshold``; taking the
    largest region, rather than every bright pixel, ignores burnt-in text and specks in
    the black corners.

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB.
        threshold: gray level above which a pixel belongs to the eye.

    Returns:
        ``(x, y, width, height)`` of the eye's bounding box, or None when nothing in the
        image is brighter than ``threshold``.
    """
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    gray = cv2.medianBlur(gray, 5)
    mask = (gray > threshold).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, width, height = (int(v) for v in stats[largest, :4])
    return x, y, width, height


def crop_fundus(rgb: np.ndarray) -> np.ndarray:
    """Crops the black border around the eye; an all-black image is returned unchanged.

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB.

    Returns:
        The part of ``rgb`` inside :func:`fundus_bounding_box`, as a contiguous array.
    """
    box = fundus_bounding_box(rgb)
    if box is None:
        return rgb
    x, y, width, height = box
    return np.ascontiguousarray(rgb[y : y + height, x : x + width])


def preprocess_fundus(rgb: np.ndarray, max_size: int = 512) -> np.ndarray:
    """The whole retina preprocessing: the fundus crop, then longer side <= ``max_size``."""
    return downsize(crop_fundus(rgb), max_size)
