"""Default models for any environment: MLP actors and critics sized from the DataInfo specs.

Algorithms build their default ``model_class_dict`` from these (``Algorithm.default_models``);
what ``aquaml train --env ID`` uses, and a quick start in Python::

    models = aquaml.default_models("sac", env.obs_info, env.action_info)

Every observation name is flattened and concatenated; continuous actors output the Gaussian mean
(pre-tanh for SAC) and, for SAC, a state-dependent ``log_std``; PPO's continuous actor leaves
``log_std`` to the algorithm's state-independent parameter; discrete actors output logits.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from aquaml.data import DataInfo
from aquaml.models.base import RLBaseModel, actor_action_shape

class _Body(RLBaseModel):
    """Flatten and concatenate the named inputs, then a stack of dense layers."""

    def __init__(self, input_names: Sequence[str], hidden: Sequence[int], activation: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.input_name = tuple(input_names)
        self.hidden_layers = [tf.keras.layers.Dense(int(w), activation=activation) for w in hidden]

    def build(self, *shapes, **named) -> None:
        """Nothing to create up front: the dense layers build on the first call (any number of
        inputs, which Keras's automatic build cannot trace)."""
        self.built = True

    def get_config(self) -> dict:
        """What rebuilds this model from a ``.keras`` file."""
        return {**super().get_config(), **self._config}

    def features(self, inputs) -> tf.Tensor:
        flat = [tf.reshape(tf.cast(x, tf.float32), [tf.shape(x)[0], -1]) for x in inputs]
        x = flat[0] if len(flat) == 1 else tf.concat(flat, -1)
        for layer in self.hidden_layers:
            x = layer(x)
        return x


class MLPActor(_Body):
    def __init__(self, obs_names: Sequence[str], action_shape: Sequence[int], hidden: Sequence[int],
                 log_std_output: bool, learning_rate: float, activation: str = "relu", **kwargs) -> None:
        super().__init__(obs_names, hidden, activation, **kwargs)
        self._config = {"obs_names": list(obs_names), "action_shape": list(action_shape), "hidden": list(hidden),
                        "log_std_output": log_std_output, "learning_rate": learning_rate, "activation": activation}
        units = int(np.prod(action_shape))
        self.action_shape = tuple(action_shape)
        self.mean = tf.keras.layers.Dense(units, kernel_initializer=tf.keras.initializers.Orthogonal(0.01))
        self.log_std_layer = tf.keras.layers.Dense(units) if log_std_output else None
        self.learning_rate = learning_rate
        self.output_info = {"action": self.action_shape}
        if log_std_output:
            self.output_info["log_std"] = self.action_shape

    def call(self, first, *more):
        x = self.features((first,) + more)
        mean = tf.reshape(self.mean(x), (-1,) + self.action_shape)
        if self.log_std_layer is None:
            return (mean,)
        return (mean, tf.reshape(self.log_std_layer(x), (-1,) + self.action_shape))


class MLPCritic(_Body):
    """Q(obs, action) when ``takes_action``, else V(obs)."""

    def __init__(self, obs_names: Sequence[str], hidden: Sequence[int], takes_action: bool,
                 learning_rate: float, activation: str = "relu", **kwargs) -> None:
        super().__init__(tuple(obs_names) + (("action",) if takes_action else ()), hidden, activation, **kwargs)
        self._config = {"obs_names": list(obs_names), "hidden": list(hidden), "takes_action": takes_action,
                        "learning_rate": learning_rate, "activation": activation}
        self.out = tf.keras.layers.Dense(1)
        self.learning_rate = learning_rate

    def call(self, first, *more):
        return self.out(self.features((first,) + more))


def _check_hidden(hidden: Sequence[int]) -> tuple[int, ...]:
    hidden = tuple(hidden)
    if not hidden or any(isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w <= 0 for w in hidden):
        raise ValueError(f"hidden must be positive layer widths such as (256, 256), got {hidden!r}")
    return hidden


def mlp_actor(obs_info: DataInfo, action_info: DataInfo, hidden: Sequence[int], learning_rate: float,
              log_std: bool, activation: str = "relu") -> Callable[[], RLBaseModel]:
    """A factory of MLP actors over every observation name: the action's mean (or a discrete
    action's logits, see ``actor_action_shape``), and a state-dependent ``log_std`` if asked.

    Raises:
        ValueError: a hidden width is not a positive int.
    """
    names, shape, hidden = tuple(obs_info.names), actor_action_shape(action_info), _check_hidden(hidden)
    return lambda: MLPActor(names, shape, hidden, log_std, learning_rate, activation=activation)


def mlp_critic(obs_info: DataInfo, hidden: Sequence[int], learning_rate: float, takes_action: bool,
               activation: str = "relu") -> Callable[[], RLBaseModel]:
    """A factory of MLP critics over every observation name: Q(obs, action) or V(obs).

    Raises:
        ValueError: a hidden width is not a positive int.
    """
    names, hidden = tuple(obs_info.names), _check_hidden(hidden)
    return lambda: MLPCritic(names, hidden, takes_action, learning_rate, activation=activation)
