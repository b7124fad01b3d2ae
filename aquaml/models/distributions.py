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


def multi_categorical_log_prob(index: tf.Tensor, logits: tf.Tensor, nvec: tuple[int, ...]) -> tf.Tensor:
    """A product of Categoricals: ``sum_k log softmax(logits_k)[index_k]`` for ``index`` ``(batch, K)``
    and ``logits`` ``(batch, sum(nvec))``, component ``k`` owning the next ``nvec[k]`` logits."""
    parts = tf.split(logits, list(nvec), axis=-1)
    return tf.add_n([categorical_log_prob(index[:, k], part) for k, part in enumerate(parts)])


def multi_categorical_entropy(logits: tf.Tensor, nvec: tuple[int, ...]) -> tf.Tensor:
    """The entropy of a product of Categoricals: the sum of the components' entropies."""
    return tf.add_n([categorical_entropy(part) for part in tf.split(logits, list(nvec), axis=-1)])


def multi_categorical_sample(logits: tf.Tensor, noise: tf.Tensor, nvec: tuple[int, ...]) -> tf.Tensor:
    """Each component's ``argmax(logits_k + noise_k)``, ``(batch, K)`` int64: a draw for standard
    Gumbel ``noise`` (Gumbel-max), the mode for zero noise."""
    parts = tf.split(logits + noise, list(nvec), axis=-1)
    return tf.stack([tf.argmax(part, axis=-1) for part in parts], axis=-1)


def bernoulli_log_prob(bits: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Independent Bernoullis: ``sum_k b_k log sigmoid(l_k) + (1 - b_k) log sigmoid(-l_k)``."""
    b = tf.cast(bits, logits.dtype)
    return -tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=b, logits=logits), axis=-1)


def bernoulli_entropy(logits: tf.Tensor) -> tf.Tensor:
    """The entropy of independent Bernoullis, summed over the last axis."""
    p = tf.sigmoid(logits)
    return tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=p, logits=logits), axis=-1)


def bernoulli_sample(logits: tf.Tensor, noise: tf.Tensor) -> tf.Tensor:
    """Bits ``l_k + g_k - g'_k > 0`` (int64) for ``noise`` ``(batch, 2K)`` = ``[g, g']`` standard
    Gumbel: each bit is 1 with probability ``sigmoid(l_k)`` (the Gumbel-max draw of the two
    outcomes with logits ``l_k`` and 0); zero noise gives the mode."""
    first, second = tf.split(noise, 2, axis=-1)
    return tf.cast(logits + first - second > 0.0, tf.int64)
