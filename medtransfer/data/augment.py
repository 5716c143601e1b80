"""Training-time augmentation: random flips, gaussian noise and colour distortion.

Every op is stateless: its randomness is a pure function of an explicit ``seed``
(a shape ``[2]`` integer tensor), so that a run's augmentation is reproducible from
``--seed`` alone, eagerly and inside tf.data alike.

:func:`augment_image` works on one image, and the pipeline maps it over images before
batching, in parallel. Each op is written to touch every pixel as few times as it can
(one copy for both flips, one 3x3 matrix for all colour ops, noise from a table of
normal quantiles), because augmentation is what limits the pipeline once the decoded
images are cached; see ``benchmarks/pipeline_throughput.py``.

Images come in as uint8 pixels (what the pipeline caches) or float32 in [0, 1], and
leave as float32 in [0, 1].
"""

from __future__ import annotations

import dataclasses
import functools
import statistics

import numpy as np
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
    contrast). Saturation and hue act in YIQ space, where they are linear: saturation
    scales the chroma plane (I, Q) and hue rotates it, as NVIDIA DALI's ``Hsv`` operator
    does. The four colour ops then fold into one 3x3 matrix and one offset per image,
    which costs a tenth of ``tf.image``'s trips through HSV (see
    ``benchmarks/pipeline_throughput.py``). Every random amount is drawn from ``seed``,
    so the pipeline gives each image its own seed and each image its own draws.

    Given the uint8 pixels the pipeline caches, the flips move a quarter of the bytes
    float32 would, and the scaling to [0, 1] folds into the colour matrix instead of
    costing a pass of its own.

    Args:
        image: ``(height, width, 3)``: uint8 pixels in [0, 255], or float32 in [0, 1].
        seed: shape ``[2]`` int32 or int64 tensor; the same seed gives the same output.
        config: which ops run and how strong they are.

    Returns:
        The augmented image, same shape, float32 in [0, 1] (clipped).
    """
    image = tf.convert_to_tensor(image)
    if image.dtype not in (tf.uint8, tf.float32):
        raise TypeError(f"augment_image takes uint8 or float32 images, got {image.dtype}")
    unit = 1 / 255 if image.dtype == tf.uint8 else 1.0
    # One seed per op, so that switching one op off leaves the others' draws unchanged.
    flip_lr, flip_ud, brightness, saturation, hue, contrast, noise = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=7)
    )
    if config.flips:
        image = _random_flips(image, flip_lr, flip_ud)
    image = tf.cast(image, tf.float32)
    if config.color:
        matrix, offset = _color_transform(image, unit, config, brightness, saturation, hue,
                                          contrast)
        # A 1x1 convolution is a per-pixel matrix product; oneDNN runs it twice as fast
        # as einsum's contraction over a 3-wide axis.
        image = tf.nn.conv2d(image[tf.newaxis], matrix[tf.newaxis, tf.newaxis], 1, "VALID")[0]
        image = image + offset
    elif unit != 1.0:
        image = image * unit
    if config.noise:
        image = image + _gaussian_noise(tf.shape(image), noise, config.noise_std)
    return tf.clip_by_value(image, 0.0, 1.0)


def _random_flips(image: tf.Tensor, flip_lr: tf.Tensor, flip_ud: tf.Tensor) -> tf.Tensor:
    """Each flip with probability 1/2, independently, in one copy of the image at most."""
    left_right = tf.random.stateless_uniform([], flip_lr, 0, 2, dtype=tf.int32)
    up_down = tf.random.stateless_uniform([], flip_ud, 0, 2, dtype=tf.int32)
    # One branch per outcome: reversing both axes at once copies the image once, where
    # two tf.image flips copy it twice and a negative-stride slice is slower still.
    return tf.switch_case(left_right + 2 * up_down, [
        lambda: image,
        lambda: tf.reverse(image, [1]),
        lambda: tf.reverse(image, [0]),
        lambda: tf.reverse(image, [0, 1]),
    ])


# RGB -> YIQ (NTSC). Y is luma; I and Q span the chroma plane, zero for greys.
_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float64
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


def _color_transform(image, unit, config, brightness, saturation, hue, contrast):
    """The colour distortion as ``image @ matrix + offset``: brightness, saturation, hue, contrast.

    With ``A`` the saturation and hue map (linear in RGB), brightness ``b``, contrast
    factor ``c`` and per-channel mean ``m``, contrast after the rest gives
    ``c * A(x + b) + (1 - c) * A(m + b) = A(c * x + (1 - c) * m + b)``. ``unit`` takes
    ``image`` to [0, 1] (1/255 for uint8 pixels): the matrix applies it, the offset
    and ``m`` are already in [0, 1] units.
    """
    delta = tf.random.stateless_uniform(
        [], brightness, -config.brightness_delta, config.brightness_delta)
    scale = tf.random.stateless_uniform([], saturation, *config.saturation_range)
    angle = 2 * np.pi * tf.random.stateless_uniform([], hue, -config.hue_delta, config.hue_delta)
    factor = tf.random.stateless_uniform([], contrast, *config.contrast_range)
    cos, sin = scale * tf.cos(angle), scale * tf.sin(angle)
    chroma = tf.stack([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]])
    # Row-vector form: pixels (rows) times the transpose of the column-vector map A.
    mix = tf.transpose(
        tf.constant(_YIQ_TO_RGB, tf.float32) @ chroma @ tf.constant(_RGB_TO_YIQ, tf.float32))
    mean = tf.reduce_mean(image, axis=[0, 1]) * unit
    offset = ((1 - factor) * mean + delta)[tf.newaxis] @ mix
    return (factor * unit) * mix, offset[0]


@functools.cache
def _standard_normal_quantiles() -> np.ndarray:
    """Φ⁻¹((i + 1/2) / 65536) for i = 0..65535: a standard normal sampled by 16 bits."""
    normal = statistics.NormalDist()
    return np.array([normal.inv_cdf((i + 0.5) / 65536) for i in range(65536)], np.float32)


def _gaussian_noise(shape: tf.Tensor, seed: tf.Tensor, std: float) -> tf.Tensor:
    """I.i.d. N(0, std²) noise by inverse-CDF sampling: 16 random bits pick a quantile.

    Twice as fast as ``tf.random.stateless_normal`` (no logarithms or cosines); the 65,536
    quantiles are a normal distribution truncated at 4.3 standard deviations.
    """
    count = tf.reduce_prod(shape)
    bits = tf.random.stateless_uniform(
        [(count + 1) // 2], seed, minval=None, maxval=None, dtype=tf.uint32)
    indices = tf.reshape(tf.bitcast(bits, tf.uint16), [-1])[:count]
    table = tf.constant(std * _standard_normal_quantiles())
    return tf.reshape(tf.gather(table, tf.cast(indices, tf.int32)), shape)
