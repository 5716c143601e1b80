"""Augmentation ops, each run eagerly and inside tf.data (graph mode), on tiny images."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from medtransfer.data.augment import AugmentConfig, augment_batch, augment_image

NOTHING = AugmentConfig(flips=False, noise=False, color=False)
MODES = ["eager", "tf.data"]
SEEDS = np.stack([np.arange(16), np.arange(16) * 7 + 3], axis=1).astype(np.int64)


def augment_all(images: np.ndarray, seeds: np.ndarray, config: AugmentConfig, mode: str):
    """Augments ``images[i]`` with ``seeds[i]``, eagerly or in a tf.data map."""
    images = np.broadcast_to(images, (len(seeds), *images.shape[-3:])).astype(np.float32)
    if mode == "eager":
        pairs = zip(images, seeds, strict=True)
        return np.stack([augment_image(image, seed, config).numpy() for image, seed in pairs])
    dataset = tf.data.Dataset.from_tensor_slices((images, seeds)).map(
        lambda image, seed: augment_image(image, seed, config)
    )
    return np.stack([image.numpy() for image in dataset])


def asymmetric_image(size: int = 16) -> np.ndarray:
    """A colourful image that differs from each of its mirror images."""
    rows, cols = np.mgrid[0:size, 0:size] / (size - 1)
    return np.stack([rows, cols, 0.2 + 0.6 * rows * cols], axis=-1).astype(np.float32)


def grey_image(value: float = 0.5, size: int = 16) -> np.ndarray:
    return np.full((size, size, 3), value, np.float32)


def saturation(images: np.ndarray) -> np.ndarray:
    return tf.image.rgb_to_hsv(images).numpy()[..., 1].mean(axis=(-2, -1))


@pytest.mark.parametrize("mode", MODES)
def test_flips_only_mirror_exactly_and_both_ways(mode):
    image = asymmetric_image()
    out = augment_all(image, SEEDS, dataclasses.replace(NOTHING, flips=True), mode)
    mirrors = {
        "none": image,
        "left-right": image[:, ::-1],
        "up-down": image[::-1],
        "both": image[::-1, ::-1],
    }
    seen = set()
    for augmented in out:
        matches = [name for name, mirror in mirrors.items() if np.array_equal(augmented, mirror)]
        assert len(matches) == 1
        seen.update(matches)
    # 16 fair coin pairs: all four outcomes are (here, with these seeds) observed.
    assert seen == set(mirrors)


@pytest.mark.parametrize("mode", MODES)
def test_noise_only_adds_noise_of_the_configured_std(mode):
    config = dataclasses.replace(NOTHING, noise=True, noise_std=0.05)
    out = augment_all(grey_image(), SEEDS[:4], config, mode)
    for augmented in out:
        assert abs((augmented - 0.5).std() - 0.05) < 0.006
        assert abs(augmented.mean() - 0.5) < 0.01
    assert not np.array_equal(out[0], out[1])


@pytest.mark.parametrize("mode", MODES)
def test_color_only_changes_brightness_and_saturation_per_seed(mode):
    image = asymmetric_image()
    config = dataclasses.replace(NOTHING, color=True)
    out = augment_all(image, SEEDS, config, mode)
    mean_shift = np.abs(out.mean(axis=(1, 2, 3)) - image.mean())
    saturation_shift = np.abs(saturation(out) - saturation(image[np.newaxis]))
    assert mean_shift.max() > 0.03
    assert saturation_shift.max() > 0.02
    # Each seed draws its own amounts.
    assert len(np.unique(np.round(out.mean(axis=(1, 2, 3)), 6))) == len(SEEDS)


@pytest.mark.parametrize("mode", MODES)
def test_values_stay_in_unit_range_under_strong_settings(mode):
    strong = AugmentConfig(
        noise_std=0.5,
        brightness_delta=0.5,
        contrast_range=(0.1, 3.0),
        saturation_range=(0.0, 3.0),
        hue_delta=0.5,
    )
    corners = np.zeros((16, 16, 3), np.float32)
    corners[:8] = 1.0
    out = augment_all(corners, SEEDS, strong, mode)
    assert out.dtype == np.float32 and out.shape == (16, 16, 16, 3)
    assert out.min() == 0.0 and out.max() == 1.0


def test_eager_and_tf_data_agree_for_the_same_seed():
    image = asymmetric_image()
    eager = augment_all(image, SEEDS[:4], AugmentConfig(), "eager")
    graph = augment_all(image, SEEDS[:4], AugmentConfig(), "tf.data")
    np.testing.assert_allclose(eager, graph, atol=1e-6)


def test_same_seed_same_output_different_seed_different_output():
    image = asymmetric_image()
    first = augment_image(image, tf.constant([5, 6]), AugmentConfig()).numpy()
    again = augment_image(image, tf.constant([5, 6]), AugmentConfig()).numpy()
    other = augment_image(image, tf.constant([5, 7]), AugmentConfig()).numpy()
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).mean() > 0.01


def test_everything_off_is_the_identity():
    image = asymmetric_image()
    np.testing.assert_array_equal(augment_all(image, SEEDS[:2], NOTHING, "tf.data")[0], image)


@pytest.mark.parametrize("mode", MODES)
def test_flips_switch(mode):
    image = np.zeros((16, 16, 3), np.float32)
    image[:8, :8] = 1.0  # a bright top-left quarter
    out = augment_all(image, SEEDS, dataclasses.replace(AugmentConfig(), flips=False), mode)
    top_left = out[:, :8, :8].mean(axis=(1, 2, 3))
    assert (top_left > out[:, 8:, :].mean(axis=(1, 2, 3)) + 0.5).all()
    assert (top_left > out[:, :, 8:].mean(axis=(1, 2, 3)) + 0.5).all()


@pytest.mark.parametrize("mode", MODES)
def test_noise_switch(mode):
    # Flips and colour map a flat image to a flat image; only noise breaks it up.
    config = dataclasses.replace(AugmentConfig(), noise=False)
    out = augment_all(grey_image(), SEEDS, config, mode)
    assert out.std(axis=(1, 2)).max() < 1e-4  # float rounding in the contrast mean
    assert augment_all(grey_image(), SEEDS[:1], AugmentConfig(), mode).std() > 0.01


@pytest.mark.parametrize("mode", MODES)
def test_color_switch(mode):
    # Flips and zero-mean noise leave a flat grey image's mean where it was.
    config = dataclasses.replace(AugmentConfig(), color=False)
    means = augment_all(grey_image(), SEEDS, config, mode).mean(axis=(1, 2, 3))
    assert np.abs(means - 0.5).max() < 0.003
    with_color = augment_all(grey_image(), SEEDS, AugmentConfig(), mode).mean(axis=(1, 2, 3))
    assert np.abs(with_color - 0.5).max() > 0.03


def test_config_checks_ranges_and_turns_lists_into_tuples():
    assert AugmentConfig(contrast_range=[0.5, 1.5]).contrast_range == (0.5, 1.5)
    hash(AugmentConfig(saturation_range=[0.5, 1.5]))
    with pytest.raises(ValueError, match="contrast_range"):
        AugmentConfig(contrast_range=(1.2, 0.8))
    with pytest.raises(ValueError, match="hue_delta"):
        AugmentConfig(hue_delta=0.7)
    with pytest.raises(ValueError, match="noise_std"):
        AugmentConfig(noise_std=-0.1)


def fixed_colour(saturation: float, contrast: float) -> AugmentConfig:
    """Colour only, with (all but) fixed amounts: no brightness or hue change."""
    return dataclasses.replace(
        NOTHING, color=True, saturation_range=(saturation, saturation + 1e-7),
        brightness_delta=0.0, contrast_range=(contrast, contrast + 1e-7), hue_delta=0.0)


def test_zero_saturation_turns_every_pixel_into_its_luma():
    # With saturation scaled by ~0 and no other colour change, YIQ keeps only luma:
    # every channel becomes 0.299 R + 0.587 G + 0.114 B.
    image = asymmetric_image()
    out = augment_image(image, tf.constant([1, 2]), fixed_colour(0.0, 1.0)).numpy()
    luma = image @ np.array([0.299, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(out, np.repeat(luma[..., None], 3, axis=-1), atol=1e-5)


def test_identity_colour_settings_leave_the_image_unchanged():
    image = asymmetric_image()
    out = augment_image(image, tf.constant([3, 4]), fixed_colour(1.0, 1.0)).numpy()
    np.testing.assert_allclose(out, image, atol=1e-5)


def test_contrast_keeps_each_channels_mean_and_scales_its_spread():
    image = asymmetric_image()
    out = augment_image(image, tf.constant([3, 4]), fixed_colour(1.0, 0.5)).numpy()
    mean = image.mean(axis=(0, 1))
    np.testing.assert_allclose(out, mean + 0.5 * (image - mean), atol=1e-5)


def test_noise_is_gaussian_not_merely_of_the_right_std():
    # Kurtosis 3 (a uniform distribution has 1.8); 64*64*3 samples: standard error ~0.04.
    config = dataclasses.replace(NOTHING, noise=True, noise_std=0.05)
    out = augment_image(grey_image(size=64), tf.constant([7, 8]), config).numpy() - 0.5
    kurtosis = (out**4).mean() / (out**2).mean() ** 2
    assert abs(kurtosis - 3.0) < 0.2


@pytest.mark.parametrize("config", [AugmentConfig(), NOTHING,
                                    dataclasses.replace(NOTHING, flips=True),
                                    dataclasses.replace(NOTHING, color=True)])
def test_uint8_pixels_give_what_their_unit_floats_give(config):
    # The pipeline hands over its cached uint8 pixels; the scaling folds into the ops.
    pixels = np.round(asymmetric_image() * 255).astype(np.uint8)
    floats = pixels.astype(np.float32) / 255
    for seed in ([1, 2], [3, 4], [5, 6]):
        from_pixels = augment_image(pixels, tf.constant(seed), config).numpy()
        assert from_pixels.dtype == np.float32
        np.testing.assert_allclose(
            from_pixels, augment_image(floats, tf.constant(seed), config).numpy(), atol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_a_batch_gives_each_image_what_it_gets_alone(dtype):
    # The pipeline augments batches; the draws belong to each image's seed, not to its
    # place in the batch or to the batch it lands in.
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 12, 10, 3)).astype(np.uint8)
    images = images if dtype == np.uint8 else (images / 255).astype(np.float32)
    batch = augment_batch(images, SEEDS[:5], AugmentConfig()).numpy()
    assert batch.shape == (5, 12, 10, 3) and batch.dtype == np.float32
    for image, seed, augmented in zip(images, SEEDS[:5], batch, strict=True):
        np.testing.assert_array_equal(augment_image(image, seed, AugmentConfig()).numpy(),
                                      augmented)
    reversed_order = augment_batch(images[::-1], SEEDS[:5][::-1], AugmentConfig()).numpy()
    np.testing.assert_array_equal(reversed_order, batch[::-1])


def test_other_dtypes_are_refused():
    with pytest.raises(TypeError, match="uint8 or float32"):
        augment_image(np.zeros((4, 4, 3), np.float64), tf.constant([1, 2]), AugmentConfig())


# --- the affine warp (issue #23) -------------------------------------------------------

AFFINE_ONLY = dataclasses.replace(NOTHING, affine=True)
NO_WARP = dict(rotation_degrees=0.0, translation=0.0, scale_range=(1.0, 1.0),
               shear_degrees=0.0)


def centred_square(size: int = 16, side: int = 8) -> np.ndarray:
    image = np.zeros((size, size, 3), np.float32)
    start = (size - side) // 2
    image[start:start + side, start:start + side] = 1.0
    return image


@pytest.mark.parametrize("mode", MODES)
def test_affine_with_empty_ranges_is_the_identity(mode):
    image = asymmetric_image()
    out = augment_all(image, SEEDS[:4], dataclasses.replace(AFFINE_ONLY, **NO_WARP), mode)
    np.testing.assert_array_equal(out, np.broadcast_to(image, out.shape))


@pytest.mark.parametrize("mode", MODES)
def test_affine_scale_by_half_about_the_centre(mode):
    # Output pixel centre c + 0.5 reads the source at 2 (c + 0.5 - 8) + 8 - 0.5 = 2c - 7.5:
    # columns 6..9 read 4.5..10.5, between two pixels of the square (rows 4..11), the
    # rest read outside it; bilinear weights of 1/2 on two equal pixels give exactly 1.
    config = dataclasses.replace(AFFINE_ONLY, **{**NO_WARP, "scale_range": (0.5, 0.5)})
    out = augment_all(centred_square(), SEEDS[:2], config, mode)
    np.testing.assert_array_equal(out, np.broadcast_to(centred_square(16, 4), out.shape))


@pytest.mark.parametrize("mode", MODES)
def test_affine_translation_moves_within_its_range(mode):
    # A shift of at most 0.25 x 16 = 4 px per axis moves the square's centre of mass as
    # far (no rotation, no scale: it stays whole inside the image).
    config = dataclasses.replace(AFFINE_ONLY, **{**NO_WARP, "translation": 0.25})
    out = augment_all(centred_square(), SEEDS, config, mode)[..., 0]
    rows, cols = np.mgrid[0:16, 0:16]
    shifts = np.stack([[(o * rows).sum() / o.sum() - 7.5, (o * cols).sum() / o.sum() - 7.5]
                       for o in out])
    assert np.abs(shifts).max() <= 4 + 1e-4
    assert np.abs(shifts).max() > 1 and len({tuple(s) for s in shifts.round(3)}) == 16
    np.testing.assert_allclose(out.sum(axis=(1, 2)), 64, rtol=1e-4)  # nothing lost


def test_affine_draws_depend_on_the_seed_alone_and_leave_the_other_ops_draws():
    image = asymmetric_image()
    full = AugmentConfig(affine=True)
    first, again = (augment_all(image, SEEDS, full, "eager") for _ in range(2))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first[0], first[1])
    # Flips, colour and noise draw from their own streams: with a warp that does nothing
    # they are the same as without the warp.
    plain = augment_all(image, SEEDS, AugmentConfig(), "eager")
    unwarped = augment_all(image, SEEDS, dataclasses.replace(full, **NO_WARP), "eager")
    np.testing.assert_allclose(unwarped, plain, atol=1e-6)


def bilinear_reference(image: np.ndarray, seed, config: AugmentConfig) -> np.ndarray:
    """The warp of ``image`` with ``seed``'s draws, in float64 numpy: each output pixel
    sampled at the inverse map, neighbours outside the image counted as 0."""
    from medtransfer.data.augment import _affine_inverse, _mix64

    height, width, _ = image.shape
    seed = np.asarray(seed, np.int64).view(np.uint64)
    key = np.uint64(_mix64(np.uint64(_mix64(seed[0])) ^ seed[1]))  # as the kernel's
    ranges = np.array([np.radians(config.rotation_degrees), config.translation,
                       *config.scale_range, np.radians(config.shear_degrees)])
    a, b, c, d, e, f = _affine_inverse(key, ranges, height, width)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    x, y = a * cols + b * rows + c, d * cols + e * rows + f
    left, top = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - left)[..., None], (y - top)[..., None]
    padded = np.pad(image.astype(np.float64), ((1, 1), (1, 1), (0, 0)))

    def at(r, c):  # outside the image (and the padding) reads 0
        inside = ((r >= -1) & (r <= height) & (c >= -1) & (c <= width))[..., None]
        return np.where(inside, padded[np.clip(r + 1, 0, height + 1),
                                       np.clip(c + 1, 0, width + 1)], 0.0)

    return ((1 - fy) * ((1 - fx) * at(top, left) + fx * at(top, left + 1))
            + fy * ((1 - fx) * at(top + 1, left) + fx * at(top + 1, left + 1)))


def test_affine_warp_matches_a_float64_reference_inside_and_at_the_edges():
    # Strong draws on a non-square image: rows wholly outside, spans that start and
    # stop mid-row, both signs of every coefficient. The warp computes in float32
    # (a source point off by ~1e-5 px here), the reference in float64.
    config = dataclasses.replace(AFFINE_ONLY, rotation_degrees=60.0, translation=0.4,
                                 scale_range=(0.5, 2.0), shear_degrees=30.0)
    rng = np.random.default_rng(1)
    image = rng.random((24, 40, 3)).astype(np.float32)
    seeds = np.stack([np.arange(32), np.arange(32) * 5 + 1], axis=1)
    out = augment_batch(np.broadcast_to(image, (32, 24, 40, 3)), seeds, config).numpy()
    inside = 0
    for augmented, seed in zip(out, seeds, strict=True):
        expected = bilinear_reference(image, seed, config)
        np.testing.assert_allclose(augmented, expected, atol=1e-5)
        inside += (expected > 0).all(axis=-1).mean()
    assert 0.2 < inside / len(seeds) < 0.95  # both paths (inside and at the edges) ran


def test_affine_contrast_uses_the_warped_images_mean():
    # The warp sums the channels as it writes them: contrast then scales the distance
    # from the warped image's mean, as without the warp from the image's own.
    image = asymmetric_image()
    contrast = dataclasses.replace(fixed_colour(1.0, 0.5), affine=True)
    for seed in ([1, 2], [3, 4]):
        warped = augment_image(image, tf.constant(seed), AFFINE_ONLY).numpy()
        out = augment_image(image, tf.constant(seed), contrast).numpy()
        mean = warped.mean(axis=(0, 1))
        np.testing.assert_allclose(out, mean + 0.5 * (warped - mean), atol=1e-5)


@pytest.mark.parametrize("config", [AFFINE_ONLY, AugmentConfig(affine=True)])
def test_affine_uint8_pixels_give_what_their_unit_floats_give(config):
    pixels = np.round(asymmetric_image() * 255).astype(np.uint8)
    floats = pixels.astype(np.float32) / 255
    for seed in ([1, 2], [3, 4], [5, 6]):
        np.testing.assert_allclose(augment_image(pixels, tf.constant(seed), config).numpy(),
                                   augment_image(floats, tf.constant(seed), config).numpy(),
                                   atol=1e-6)
