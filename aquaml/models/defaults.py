"""Default models for any environment: MLP actors and critics sized from the DataInfo specs.

Algorithms build their default ``model_class_dict`` from these (``Algorithm.default_models``);
what ``aquaml train --env ID`` uses, and a quick start in Python::

    models = aquaml.default_models("sac", env.obs_info, env.action_info)

Every observation name is encoded by what its spec says it is (``input_encoding``: a Discrete
choice one-hot, a uint8 image scaled to [0, 1], anything else as floats), flattened and
concatenated; continuous actors output the Gaussian mean (pre-tanh for SAC) and, for SAC, a
state-dependent ``log_std``; PPO's continuous actor leaves ``log_std`` to the algorithm's
state-independent parameter; discrete actors output logits.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from aquaml.data import DataInfo
from aquaml.models.base import RLBaseModel, actor_action_shape

def input_encoding(info: DataInfo, name: str) -> dict[str, Any]:
    """How the default models feed the entry ``name`` of ``info`` to their first layer, as JSON data:
    ``{'one_hot': n, 'start': s}`` for a Discrete choice (an index is no magnitude), ``{'scale': 1/high}``
    for uint8 values such as image pixels (bounded by ``high``, 255 when the spec has no bound),
    ``{}`` to take the values as floats."""
    meta = info.meta(name)
    if "n" in meta and info.shape(name) == ():
        return {"one_hot": int(meta["n"]), "start": int(meta.get("start", 0))}
    if info.dtype(name) == np.uint8:
        high = float(np.max(meta["high"])) if "high" in meta else 255.0
        return {"scale": 1.0 / max(high, 1.0)}
    return {}


def encode_input(x: tf.Tensor, encoding: Mapping[str, Any]) -> tf.Tensor:
    """``x`` (batch, ...) as float32 features by its ``input_encoding``. The one-hot is built from
    ops that numpy acting runs (``aquaml.acting.inference`` has no OneHot)."""
    if "one_hot" in encoding:
        choices = tf.constant(np.arange(encoding["one_hot"], dtype=np.int64))
        index = tf.cast(x, tf.int64) - encoding["start"]
        return tf.cast(tf.equal(tf.expand_dims(index, -1), choices), tf.float32)
    x = tf.cast(x, tf.float32)
    return x * encoding["scale"] if "scale" in encoding else x


class _Body(RLBaseModel):
    """Encode (``input_encodings``), flatten and concatenate the named inputs, then dense layers."""

    def __init__(self, input_names: Sequence[str], hidden: Sequence[int], activation: str,
                 input_encodings: Mapping[str, Mapping[str, Any]] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.input_name = tuple(input_names)
        self.input_encodings = {n: dict(input_encodings.get(n, {})) if input_encodings else {}
                                for n in self.input_name}
        self.hidden_layers = [tf.keras.layers.Dense(int(w), activation=activation) for w in hidden]

    def build(self, *shapes, **named) -> None:
        """Nothing to create up front: the dense layers build on the first call (any number of
        inputs, which Keras's automatic build cannot trace)."""
        self.built = True

    def get_config(self) -> dict:
        """What rebuilds this model from a ``.keras`` file."""
        return {**super().get_config(), **self._config}

    def features(self, inputs) -> tf.Tensor:
        encoded = [encode_input(x, self.input_encodings[n]) for n, x in zip(self.input_name, inputs)]
        flat = [tf.reshape(x, [tf.shape(x)[0], -1]) for x in encoded]
        x = flat[0] if len(flat) == 1 else tf.concat(flat, -1)
        for layer in self.hidden_layers:
            x = layer(x)
        return x


class MLPActor(_Body):
    def __init__(self, obs_names: Sequence[str], action_shape: Sequence[int], hidden: Sequence[int],
                 log_std_output: bool, learning_rate: float, activation: str = "relu",
                 input_encodings: Mapping[str, Mapping[str, Any]] | None = None, **kwargs) -> None:
        super().__init__(obs_names, hidden, activation, input_encodings, **kwargs)
        self._config = {"obs_names": list(obs_names), "action_shape": list(action_shape), "hidden": list(hidden),
                        "log_std_output": log_std_output, "learning_rate": learning_rate, "activation": activation,
                        "input_encodings": self.input_encodings}
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
                 learning_rate: float, activation: str = "relu",
                 input_encodings: Mapping[str, Mapping[str, Any]] | None = None, **kwargs) -> None:
        super().__init__(tuple(obs_names) + (("action",) if takes_action else ()), hidden, activation,
                         input_encodings, **kwargs)
        self._config = {"obs_names": list(obs_names), "hidden": list(hidden), "takes_action": takes_action,
                        "learning_rate": learning_rate, "activation": activation,
                        "input_encodings": self.input_encodings}
        self.out = tf.keras.layers.Dense(1)
        self.learning_rate = learning_rate

    def call(self, first, *more):
        return self.out(self.features((first,) + more))


def input_encodings(obs_info: DataInfo) -> dict[str, dict[str, Any]] | None:
    """``input_encoding`` of every observation name that needs one (None when none does)."""
    return {n: input_encoding(obs_info, n) for n in obs_info.names if input_encoding(obs_info, n)} or None


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
    encodings = input_encodings(obs_info)
    return lambda: MLPActor(names, shape, hidden, log_std, learning_rate, activation=activation,
                            input_encodings=encodings)


def mlp_critic(obs_info: DataInfo, hidden: Sequence[int], learning_rate: float, takes_action: bool,
               activation: str = "relu") -> Callable[[], RLBaseModel]:
    """A factory of MLP critics over every observation name: Q(obs, action) or V(obs).

    Raises:
        ValueError: a hidden width is not a positive int.
    """
    names, hidden = tuple(obs_info.names), _check_hidden(hidden)
    encodings = input_encodings(obs_info)
    return lambda: MLPCritic(names, hidden, takes_action, learning_rate, activation=activation,
                             input_encodings=encodings)


#: The default model classes by name: what a policy export may be rebuilt from without running
#: anything it stores (``aquaml.run.export``).
DEFAULT_MODEL_CLASSES = {"MLPActor": MLPActor, "MLPCritic": MLPCritic}


def rebuild_default_model(class_name: str, config: Mapping[str, Any]) -> RLBaseModel:
    """A fresh default model from its class name and ``get_config()``, taking only the arguments of
    the class's constructor (nothing is deserialised: a Keras ``dtype`` entry, say, is not read).

    Raises:
        ValueError: ``class_name`` is not in ``DEFAULT_MODEL_CLASSES``, or an argument is missing.
    """
    cls = DEFAULT_MODEL_CLASSES.get(class_name)
    if cls is None:
        raise ValueError(f"{class_name!r} is not one of aquaml's default models {sorted(DEFAULT_MODEL_CLASSES)}")
    wanted = [n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "kwargs")]
    missing = [n for n in wanted if n not in config and
               inspect.signature(cls.__init__).parameters[n].default is inspect.Parameter.empty]
    if missing:
        raise ValueError(f"the {class_name} configuration lacks {missing}")
    return cls(**{n: config[n] for n in wanted if n in config})


