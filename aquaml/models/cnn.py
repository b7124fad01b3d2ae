"""Encoders of the default models: the Nature-DQN convolutional trunk for images, one-hot codes for
discrete observations, flattening for everything else.

An observation entry is an image when it is uint8 and laid out as

- ``(H, W, C)`` with ``C <= 4`` channels (an RGB or grey frame, channels last),
- ``(K, H, W)`` with ``K <= 16 < H, W``: ``K`` grey frames stacked on axis 0, as gymnasium's
  ``FrameStackObservation`` over ``AtariPreprocessing`` gives them (moved to channels last here),
- ``(K, H, W, C)``: ``K`` stacked colour frames (folded into ``K * C`` channels),

and both ``H`` and ``W`` are at least 36 (the smallest input the trunk's three convolutions
reduce to one cell). Its pixels are scaled to [0, 1] and go through the trunk of Mnih et al.
(2015): 32 8x8 filters stride 4, 64 4x4 stride 2, 64 3x3 stride 1, each ReLU, then 512 ReLU units.
A Dict observation mixing images and vectors is encoded entry by entry and concatenated.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

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


def input_spec(shape: Sequence[int], dtype: Any, meta: Mapping[str, Any]) -> dict[str, Any]:
    """What the encoder needs to know of one entry, JSON-able (it goes into the model's config)."""
    return {"shape": [int(d) for d in shape], "dtype": np.dtype(dtype).name,
            "choices": int(meta["n"]) if "n" in meta and tuple(shape) == () else None}


class NatureCNN(tf.keras.layers.Layer):
    """The Nature-DQN trunk: uint8 images ``(batch, H, W, C)`` -> features ``(batch, 512)``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.convolutions = [tf.keras.layers.Conv2D(32, 8, strides=4, activation="relu"),
                             tf.keras.layers.Conv2D(64, 4, strides=2, activation="relu"),
                             tf.keras.layers.Conv2D(64, 3, strides=1, activation="relu")]
        self.flatten = tf.keras.layers.Flatten()
        self.dense = tf.keras.layers.Dense(512, activation="relu")

    def call(self, images: tf.Tensor) -> tf.Tensor:
        x = tf.cast(images, tf.float32) * (1.0 / 255.0)
        for conv in self.convolutions:
            x = conv(x)
        return self.dense(self.flatten(x))


class ObservationEncoder(tf.keras.layers.Layer):
    """Every input entry to one feature vector ``(batch, features)``: images through their own
    ``NatureCNN``, discrete entries (``choices``) one-hot, the rest cast to float and flattened.

    Args:
        specs: one ``input_spec`` dict per input, in call order.
    """

    def __init__(self, specs: Sequence[Mapping[str, Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.specs = [dict(s) for s in specs]
        self.layouts = [image_layout(s["shape"], s["dtype"]) for s in self.specs]
        self.trunks = [NatureCNN() if layout else None for layout in self.layouts]

    @property
    def has_images(self) -> bool:
        return any(self.layouts)

    def call(self, inputs: Sequence[tf.Tensor]) -> tf.Tensor:
        parts = []
        for x, spec, layout, trunk in zip(inputs, self.specs, self.layouts, self.trunks):
            if layout is not None:
                parts.append(trunk(_channels_last(x, layout)))
            elif spec["choices"] is not None:
                parts.append(tf.one_hot(tf.cast(tf.reshape(x, [-1]), tf.int32), spec["choices"]))
            else:
                parts.append(tf.reshape(tf.cast(x, tf.float32), [tf.shape(x)[0], -1]))
        return parts[0] if len(parts) == 1 else tf.concat(parts, -1)


def _channels_last(x: tf.Tensor, layout: str) -> tf.Tensor:
    if layout == "khw":
        return tf.transpose(x, [0, 2, 3, 1])
    if layout == "khwc":
        k, h, w, c = x.shape[1:]
        return tf.reshape(tf.transpose(x, [0, 2, 3, 1, 4]), [-1, h, w, k * c])
    return x
