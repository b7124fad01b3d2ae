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
