"""The retina fundus crop on synthetic photographs with a disk of known place and size."""

import cv2
import numpy as np
import pytest

from medtransfer.data.fundus import crop_fundus, fundus_bounding_box, preprocess_fundus


def photograph(height, width, centre, radius, seed=0):
    """Black (slightly noisy) background with a bright, textured disk: a fundus photo."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 9, (height, width, 3), dtype=np.uint8)
    disk = np.zeros((height, width), np.uint8)
    cv2.circle(disk, centre, radius, 255, thickness=-1)
    texture = rng.integers(60, 200, (height, width, 3), dtype=np.uint8)
    image[disk > 0] = texture[disk > 0]
    return image


def expected_box(height, width, centre, radius):
    x0, y0 = max(0, centre[0] - radius), max(0, centre[1] - radius)
    x1, y1 = min(width - 1, centre[0] + radius), min(height - 1, centre[1] + radius)
    return x0, y0, x1 - x0 + 1, y1 - y0 + 1


@pytest.mark.parametrize(
    "height, width, centre, radius",
    [
        (300, 420, (230, 140), 90),  # off-centre disk, wide border
        (200, 400, (200, 100), 130),  # cut at top and bottom, as many APTOS photos are
        (64, 48, (24, 32), 20),  # small and portrait
    ],
)
def test_crop_finds_the_disk_within_two_pixels(height, width, centre, radius):
    image = photograph(height, width, centre, radius)
    box = fundus_bounding_box(image)
    assert box is not None
    for found, expected in zip(box, expected_box(height, width, centre, radius), strict=True):
        assert abs(found - expected) <= 2, (box, expected_box(height, width, centre, radius))
    cropped = crop_fundus(image)
    assert abs(cropped.shape[0] - box[3]) == 0 and abs(cropped.shape[1] - box[2]) == 0
    assert cropped.flags["C_CONTIGUOUS"]


def test_text_in_a_corner_does_not_widen_the_crop():
    image = photograph(300, 420, (230, 150), 100)
    cv2.putText(image, "OD 2019", (5, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
    x, y, width, height = fundus_bounding_box(image)
    assert abs(x - 130) <= 2 and abs(y - 50) <= 2
    assert abs(width - 201) <= 2 and abs(height - 201) <= 2


def test_black_image_is_left_unchanged():
    image = np.zeros((40, 60, 3), np.uint8)
    assert fundus_bounding_box(image) is None
    assert crop_fundus(image) is image


def test_preprocess_crops_then_shrinks_to_max_size_but_never_enlarges():
    large = photograph(600, 900, (450, 300), 280)
    out = preprocess_fundus(large, max_size=128)
    assert max(out.shape[:2]) == 128
    assert abs(out.shape[0] - out.shape[1]) <= 1  # the square around the disk

    small = photograph(60, 80, (40, 30), 25)
    out = preprocess_fundus(small, max_size=512)
    assert abs(out.shape[0] - 51) <= 2 and abs(out.shape[1] - 51) <= 2
