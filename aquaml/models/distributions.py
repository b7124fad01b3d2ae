"""Policy distributions, written as plain TensorFlow functions so that tests can check them by hand.

Shapes: ``mean``, ``log_std``, ``pre_tanh`` and actions are ``(batch, action_dim)``; log-probabilities
are ``(batch,)``.
"""
from __future__ import annotations

import math

import tensorflow as tf

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_log_prob(x: tf.Tensor, mean: tf.Tensor, log_std: tf.Tensor) -> tf.Tensor:
    """Log-density of a diagonal Gaussian, summed over the last axis."""
    z = (x - mean) * tf.exp(-log_std)
    return tf.reduce_sum(-0.5 * tf.square(z) - log_std - _HALF_LOG_2PI, axis=-1)


def tanh_log_det_jacobian(pre_tanh: tf.Tensor) -> tf.Tensor:
    """``sum log(1 - tanh(u)^2)`` over the last axis, in the form that stays finite for large |u|.

    Uses ``log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u))``.
    """
    return tf.reduce_sum(2.0 * (math.log(2.0) - pre_tanh - tf.nn.softplus(-2.0 * pre_tanh)), axis=-1)


def squashed_gaussian_sample(mean: tf.Tensor, log_std: tf.Tensor, noise: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Sample ``a = tanh(mean + std * noise)`` and return ``(a, log pi(a))``.

    The log-probability includes the change of variables through tanh, so it is the density of
    the squashed action in ``(-1, 1)``.
    """
    pre_tanh = mean + tf.exp(log_std) * noise
    log_prob = gaussian_log_prob(pre_tanh, mean, log_std) - tanh_log_det_jacobian(pre_tanh)
    return tf.tanh(pre_tanh), log_prob


def gaussian_entropy(log_std: tf.Tensor) -> tf.Tensor:
    """Entropy of a diagonal Gaussian, summed over the last axis: ``sum(log_std + 0.5 * log(2 pi e))``."""
    return tf.reduce_sum(log_std + 0.5 + _HALF_LOG_2PI, axis=-1)


def categorical_log_prob(index: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """``log softmax(logits)[index]`` for integer ``index`` of shape ``(batch,)``."""
    log_p = tf.nn.log_softmax(logits, axis=-1)
    return tf.gather(log_p, tf.cast(index, tf.int32), axis=-1, batch_dims=1)


def categorical_entropy(logits: tf.Tensor) -> tf.Tensor:
    """``-sum p log p`` over the last axis."""
    log_p = tf.nn.log_softmax(logits, axis=-1)
    return -tf.reduce_sum(tf.exp(log_p) * log_p, axis=-1)
