"""The image encoder of the default models (``aquaml.models.defaults.input_encoding`` chooses it):
the Nature-DQN convolutional trunk.

An observation entry is an image when it is uint8 and laid out as

- ``(H, W, C)`` with ``C <= 4`` channels (an RGB or grey frame, channels last),
- ``(K, H, W)`` with ``K <= 16 < H, W``: ``K`` grey frames stacked on axis 0, as gymnasium's
  ``FrameStackObservation`` over ``AtariPreprocessing`` gives them (moved to channels last here),
- ``(K, H, W, C)``: ``K`` stacked colour frames (folded into ``K * C`` channels),

and both ``H`` and ``W`` are at least 36 (the smallest input the trunk's three convolutions
reduce to one cell). Its pixels, scaled to [0, 1], go through the trunk of Mnih et al. (2015):
32 8x8 filters stride 4, 64 4x4 stride 2, 64 3x3 stride 1, each ReLU, then 512 ReLU units. A
Dict observation mixing images and vectors is encoded entry by entry and concatenated.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import tensorflow as tf

#: The smallest height and width the Nature trunk accepts (8/4, 4/2, 3/1 leave one cell).
MIN_IMAGE_SIZE = 36
MAX_CHANNELS, MAX_STACK = 4, 16


def image_layout(shape: Sequence[int], dtype: Any) -> str | None:
    """``'hwc'``, ``'khw'`` or ``'khwc'`` for an image entry as the module doc describes, else None."""
    shape = tuple(int(d) for d in shape)
    if np.dtype(dtype) != np.uint8:
        return None
    if len(shape) == 3 and shape[2] <= MAX_CHANNELS and min(shape[:2]) >= MIN_IMAGE_SIZE:
        return "hwc"
    if len(shape) == 3 and shape[0] <= MAX_STACK and min(shape[1:]) >= MIN_IMAGE_SIZE:
        return "khw"
    if len(shape) == 4 and shape[0] <= MAX_STACK and shape[3] <= MAX_CHANNELS and min(shape[1:3]) >= MIN_IMAGE_SIZE:
        return "khwc"
    return None


class NatureCNN(tf.keras.layers.Layer):
    """The Nature-DQN trunk: images ``(batch, H, W, C)`` scaled to [0, 1] -> features ``(batch, 512)``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.convolutions = [tf.keras.layers.Conv2D(32, 8, strides=4, activation="relu"),
                             tf.keras.layers.Conv2D(64, 4, strides=2, activation="relu"),
                             tf.keras.layers.Conv2D(64, 3, strides=1, activation="relu")]
        self.flatten = tf.keras.layers.Flatten()
        self.dense = tf.keras.layers.Dense(512, activation="relu")

    def call(self, images: tf.Tensor) -> tf.Tensor:
        x = images
        for conv in self.convolutions:
            x = conv(x)
        return self.dense(self.flatten(x))


def channels_last(x: tf.Tensor, layout: str) -> tf.Tensor:
    """An image batch of ``layout`` as ``(batch, H, W, channels)``: stacked frames become channels."""
    if layout == "khw":
        return tf.transpose(x, [0, 2, 3, 1])
    if layout == "khwc":
        k, h, w, c = x.shape[1:]
        return tf.reshape(tf.transpose(x, [0, 2, 3, 1, 4]), [-1, h, w, k * c])
    return x
