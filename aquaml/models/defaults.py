"""Default models for any environment: MLP actors and critics sized from the DataInfo specs.

What ``aquaml train --env ID`` uses, and a quick start in Python::

    models = default_models("sac", starter_env.obs_info, starter_env.action_info)

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

#: Hidden layer widths by algorithm: SAC's paper sizes, PPO's (CleanRL/SB3) sizes, DQN's
#: (rl-baselines3-zoo's for CartPole, Acrobot and LunarLander).
DEFAULT_HIDDEN = {"sac": (256, 256), "ppo": (64, 64), "dqn": (256, 256)}


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


def default_models(algo: str, obs_info: DataInfo, action_info: DataInfo, hidden: Sequence[int] | None = None,
                   learning_rate: float | None = None, dueling: bool = False) -> dict[str, Callable[[], RLBaseModel]]:
    """``model_class_dict`` for ``algo`` ('sac', 'ppo' or 'dqn'): zero-argument factories of
    dense models on encoded inputs (see ``aquaml.models.cnn``); ``dueling`` gives DQN's
    Q-network a state-value head.

    Raises:
        ValueError: unknown algorithm or a hidden width that is not a positive int.
    """
    algo = algo.lower()
    if algo not in DEFAULT_HIDDEN:
        raise ValueError(f"algo must be one of {sorted(DEFAULT_HIDDEN)}, got {algo!r}")
    hidden = tuple(DEFAULT_HIDDEN[algo] if hidden is None else hidden)
    if not hidden or any(isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w <= 0 for w in hidden):
        raise ValueError(f"hidden must be positive layer widths such as (256, 256), got {hidden!r}")
    names = tuple(obs_info.names)
    specs = [input_spec(obs_info.shape(n), obs_info.dtype(n), obs_info.meta(n)) for n in names]
    shape = actor_action_shape(action_info)
    if algo == "dqn":
        lr = 1e-4 if learning_rate is None else learning_rate  # Stable-Baselines3's default for DQN
        return {"actor": lambda: QNetwork(names, shape[0], hidden, dueling, lr, input_specs=specs)}
    if algo == "sac":
        lr = 3e-4 if learning_rate is None else learning_rate
        return {"actor": lambda: MLPActor(names, shape, hidden, True, lr, input_specs=specs),
                "qf1": lambda: MLPCritic(names, hidden, True, lr, input_specs=specs),
                "qf2": lambda: MLPCritic(names, hidden, True, lr, input_specs=specs)}
    lr = 3e-4 if learning_rate is None else learning_rate
    return {"actor": lambda: MLPActor(names, shape, hidden, False, lr, activation="tanh", input_specs=specs),
            "critic": lambda: MLPCritic(names, hidden, False, lr, activation="tanh", input_specs=specs)}
