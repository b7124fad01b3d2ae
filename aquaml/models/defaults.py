"""Default models for any environment: MLP actors and critics sized from the DataInfo specs.

Algorithms build their default ``model_class_dict`` from these (``Algorithm.default_models``);
what ``aquaml train --env ID`` uses, and a quick start in Python::

    models = aquaml.default_models("sac", env.obs_info, env.action_info)

Every observation name is encoded (``aquaml.models.cnn``: uint8 images through the Nature-DQN
trunk, discrete entries one-hot, the rest flattened) and concatenated; continuous actors output the
Gaussian mean (pre-tanh for SAC) and, for SAC, a state-dependent ``log_std``; PPO's continuous actor
leaves ``log_std`` to the algorithm's state-independent parameter; discrete actors output logits;
DQN's Q-network one Q-value per choice (and a state value with dueling heads).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from aquaml.data import DataInfo
from aquaml.models.base import RLBaseModel, actor_action_shape
from aquaml.models.cnn import ObservationEncoder, input_spec


class _Body(RLBaseModel):
    """Encode and concatenate the named inputs, then a stack of dense layers.

    ``input_specs`` (one ``aquaml.models.cnn.input_spec`` per observation input) selects each
    input's encoder; without it every input is flattened.
    """

    def __init__(self, input_names: Sequence[str], hidden: Sequence[int], activation: str,
                 input_specs: Sequence[dict] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.input_name = tuple(input_names)
        self.encoder = None if input_specs is None else ObservationEncoder(input_specs)
        self.hidden_layers = [tf.keras.layers.Dense(int(w), activation=activation) for w in hidden]

    def build(self, *shapes, **named) -> None:
        """Nothing to create up front: the dense layers build on the first call (any number of
        inputs, which Keras's automatic build cannot trace)."""
        self.built = True

    def get_config(self) -> dict:
        """What rebuilds this model from a ``.keras`` file."""
        return {**super().get_config(), **self._config}

    def features(self, inputs) -> tf.Tensor:
        if self.encoder is not None:
            observed = len(self.encoder.specs)  # a critic's action comes after the observations
            flat = [self.encoder(inputs[:observed])] + [tf.reshape(tf.cast(x, tf.float32), [tf.shape(x)[0], -1])
                                                        for x in inputs[observed:]]
        else:
            flat = [tf.reshape(tf.cast(x, tf.float32), [tf.shape(x)[0], -1]) for x in inputs]
        x = flat[0] if len(flat) == 1 else tf.concat(flat, -1)
        for layer in self.hidden_layers:
            x = layer(x)
        return x


class MLPActor(_Body):
    def __init__(self, obs_names: Sequence[str], action_shape: Sequence[int], hidden: Sequence[int],
                 log_std_output: bool, learning_rate: float, activation: str = "relu",
                 input_specs: Sequence[dict] | None = None, **kwargs) -> None:
        super().__init__(obs_names, hidden, activation, input_specs, **kwargs)
        self._config = {"obs_names": list(obs_names), "action_shape": list(action_shape), "hidden": list(hidden),
                        "log_std_output": log_std_output, "learning_rate": learning_rate, "activation": activation,
                        "input_specs": input_specs}
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
                 learning_rate: float, activation: str = "relu", input_specs: Sequence[dict] | None = None,
                 **kwargs) -> None:
        super().__init__(tuple(obs_names) + (("action",) if takes_action else ()), hidden, activation, input_specs,
                         **kwargs)
        self._config = {"obs_names": list(obs_names), "hidden": list(hidden), "takes_action": takes_action,
                        "learning_rate": learning_rate, "activation": activation, "input_specs": input_specs}
        self.out = tf.keras.layers.Dense(1)
        self.learning_rate = learning_rate

    def call(self, first, *more):
        return self.out(self.features((first,) + more))


class QNetwork(_Body):
    """DQN's Q-network: one Q-value per choice (``action``), or with ``dueling`` the advantage
    stream (``action``) and the state value (``value``) on the same features."""

    def __init__(self, obs_names: Sequence[str], num_actions: int, hidden: Sequence[int], dueling: bool,
                 learning_rate: float, activation: str = "relu", input_specs: Sequence[dict] | None = None,
                 **kwargs) -> None:
        super().__init__(obs_names, hidden, activation, input_specs, **kwargs)
        self._config = {"obs_names": list(obs_names), "num_actions": int(num_actions), "hidden": list(hidden),
                        "dueling": dueling, "learning_rate": learning_rate, "activation": activation,
                        "input_specs": input_specs}
        self.q = tf.keras.layers.Dense(int(num_actions))
        self.value = tf.keras.layers.Dense(1) if dueling else None
        self.learning_rate = learning_rate
        self.output_info = {"action": (int(num_actions),)}
        if dueling:
            self.output_info["value"] = (1,)

    def call(self, first, *more):
        x = self.features((first,) + more)
        return (self.q(x),) if self.value is None else (self.q(x), self.value(x))


def _check_hidden(hidden: Sequence[int]) -> tuple[int, ...]:
    hidden = tuple(hidden)
    if not hidden or any(isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w <= 0 for w in hidden):
        raise ValueError(f"hidden must be positive layer widths such as (256, 256), got {hidden!r}")
    return hidden


def _input_specs(obs_info: DataInfo) -> list[dict]:
    """How each observation name is encoded (``aquaml.models.cnn.input_spec``)."""
    return [input_spec(obs_info.shape(n), obs_info.dtype(n), obs_info.meta(n)) for n in obs_info.names]


def mlp_actor(obs_info: DataInfo, action_info: DataInfo, hidden: Sequence[int], learning_rate: float,
              log_std: bool, activation: str = "relu") -> Callable[[], RLBaseModel]:
    """A factory of MLP actors over every observation name: the action's mean (or a discrete
    action's logits, see ``actor_action_shape``), and a state-dependent ``log_std`` if asked.

    Raises:
        ValueError: a hidden width is not a positive int.
    """
    names, shape, hidden = tuple(obs_info.names), actor_action_shape(action_info), _check_hidden(hidden)
    specs = _input_specs(obs_info)
    return lambda: MLPActor(names, shape, hidden, log_std, learning_rate, activation=activation, input_specs=specs)


def mlp_critic(obs_info: DataInfo, hidden: Sequence[int], learning_rate: float, takes_action: bool,
               activation: str = "relu") -> Callable[[], RLBaseModel]:
    """A factory of MLP critics over every observation name: Q(obs, action) or V(obs).

    Raises:
        ValueError: a hidden width is not a positive int.
    """
    names, hidden = tuple(obs_info.names), _check_hidden(hidden)
    specs = _input_specs(obs_info)
    return lambda: MLPCritic(names, hidden, takes_action, learning_rate, activation=activation, input_specs=specs)


def q_network(obs_info: DataInfo, action_info: DataInfo, hidden: Sequence[int], learning_rate: float,
              dueling: bool = False) -> Callable[[], RLBaseModel]:
    """A factory of DQN Q-networks over every observation name: one Q-value per choice of a
    Discrete action (``action``), and with ``dueling`` a state value (``value``).

    Raises:
        ValueError: a hidden width is not a positive int.
    """
    names, hidden, specs = tuple(obs_info.names), _check_hidden(hidden), _input_specs(obs_info)
    num_actions = actor_action_shape(action_info)[0]
    return lambda: QNetwork(names, num_actions, hidden, dueling, learning_rate, input_specs=specs)
