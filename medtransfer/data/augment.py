"""Training-time augmentation: random flips, gaussian noise and colour distortion.

Every op is stateless: its randomness is a pure function of an explicit ``seed``
(a shape ``[2]`` integer tensor), so that a run's augmentation is reproducible from
``--seed`` alone, eagerly and inside tf.data alike.

:func:`augment_image` works on one image, and the pipeline maps it over images before
batching. That is faster on the CPU than one vectorised call per batch (the fused
``tf.image`` hue and saturation kernels take one factor per call, so a per-batch
version with per-image factors has to go through the slower ``rgb_to_hsv``); see
``benchmarks/pipeline_throughput.py``.

Images are float32 in [0, 1] on the way in and on the way out.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run, and how strong they are.

    The strengths are in units of the [0, 1] pixel scale. The defaults are mild: they
    keep a histology slide or a fundus photograph plausible, which stronger colour
    shifts would not.

    Attributes:
        flips: random horizontal and vertical flips, each with probability 1/2.
        noise: add gaussian noise to every pixel.
        color: colour distortion: brightness, saturation, hue, then contrast, each by a
            random amount per image. Turn it off where colour carries the signal or is
            not a colour at all (for example fluorescence stains stored as RGB).
        noise_std: standard deviation of the gaussian noise (0.02 is about 5 grey
            levels out of 255).
        brightness_delta: brightness is shifted by a uniform amount in
            ``[-brightness_delta, brightness_delta]``.
        contrast_range: each channel's distance from its mean is scaled by a uniform
            factor in this range.
        saturation_range: saturation is scaled by a uniform factor in this range.
        hue_delta: hue is rotated by a uniform amount in ``[-hue_delta, hue_delta]``
            (1.0 is a full turn of the colour wheel).
    """

    flips: bool = True
    noise: bool = True
    color: bool = True
    noise_std: float = 0.02
    brightness_delta: float = 0.1
    contrast_range: tuple[float, float] = (0.8, 1.2)
    saturation_range: tuple[float, float] = (0.8, 1.2)
    hue_delta: float = 0.02

    def __post_init__(self):
        for name in ("contrast_range", "saturation_range"):
            # A YAML config gives lists; a frozen dataclass should hold hashable tuples.
            low, high = getattr(self, name)
            object.__setattr__(self, name, (float(low), float(high)))
            if not 0 <= low < high:
                raise ValueError(f"{name} must satisfy 0 <= low < high, got {(low, high)}")
        if self.noise_std < 0 or self.brightness_delta < 0 or not 0 <= self.hue_delta <= 0.5:
            raise ValueError(
                "noise_std and brightness_delta must be >= 0 and hue_delta in [0, 0.5], got "
                f"{self.noise_std}, {self.brightness_delta}, {self.hue_delta}"
            )


def augment_image(image: tf.Tensor, seed: tf.Tensor, config: AugmentConfig) -> tf.Tensor:
    """Augments one image: flips, then colour, then noise, each if switched on.

    Colour distortion follows the Inception order (brightness, saturation, hue,
    contrast). Every random amount is drawn from ``seed``, so the pipeline gives each
    image its own seed and each image its own draws.

    Args:
        image: ``(height, width, 3)`` float32 in [0, 1].
        seed: shape ``[2]`` int32 or int64 tensor; the same seed gives the same output.
        config: which ops run and how strong they are.

    Returns:
        The augmented image, same shape, float32, clipped to [0, 1].
    """
    image = tf.convert_to_tensor(image, tf.float32)
    # One seed per op, so that switching one op off leaves the others' draws unchanged.
    flip_lr, flip_ud, brightness, saturation, hue, contrast, noise = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=7)
    )
    if config.flips:
        image = tf.image.stateless_random_flip_left_right(image, flip_lr)
        image = tf.image.stateless_random_flip_up_down(image, flip_ud)
    if config.color:
        image = tf.image.stateless_random_brightness(image, config.brightness_delta, brightness)
        # Saturation and hue go through HSV, which is only meaningful inside [0, 1].
        image = tf.clip_by_value(image, 0.0, 1.0)
        image = tf.image.stateless_random_saturation(image, *config.saturation_range, saturation)
        image = tf.image.stateless_random_hue(image, config.hue_delta, hue)
        image = tf.image.stateless_random_contrast(image, *config.contrast_range, contrast)
    if config.noise:
        image = image + config.noise_std * tf.random.stateless_normal(tf.shape(image), noise)
    return tf.clip_by_value(image, 0.0, 1.0)
