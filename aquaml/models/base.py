"""RLBaseModel, the models' contract, and its start-up check.

A model is a ``keras.Model`` with a few attributes the algorithms read:

- ``input_name``: the observation names (and ``'action'`` for critics) in ``call()`` argument order;
- ``output_info`` (actor only): ``{'action': shape, 'log_std': shape, ...}`` in return order;
- ``learning_rate`` and ``optimizer`` (a Keras optimizer name such as ``'Adam'``, or a class).

``build_models`` instantiates every class, checks all of that with zero inputs, and raises
``ModelContractError`` with a message that says what to change, before any environment step.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from aquaml.data import EMPTY_INFO, DataInfo, SpecError
from aquaml.models.recurrent import recurrent_info, with_recurrent
from aquaml.storage import atomic_path


class ModelContractError(ValueError):
    """A model class does not fulfil what the algorithm needs from it."""


class RLBaseModel(keras.Model):
    """Base class of aquaml models (actors and critics).

    Subclasses create their layers in ``__init__`` and set ``input_name`` (and, for an actor,
    ``output_info``). An actor's ``call`` returns a tuple in ``output_info`` order; a critic's
    returns one tensor of shape ``(batch, 1)`` or ``(batch,)``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.learning_rate = 3e-4
        self.optimizer = "Adam"
        self.input_name: tuple[str, ...] = ("obs",)
        self.output_info: Mapping[str, tuple] | None = None

    def reset(self) -> None:
        """Clear any per-episode state (stateless models need nothing)."""


@dataclasses.dataclass
class ModelSpec:
    """A built, checked model with what the algorithm needs to train it."""
    key: str
    model: keras.Model
    factory: Callable[[], keras.Model]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    learning_rate: float
    optimizer: keras.optimizers.Optimizer
    state_info: DataInfo = EMPTY_INFO
    """The recurrent state entries (inputs that are also outputs); empty for a feed-forward model."""

    @property
    def recurrent(self) -> bool:
        return len(self.state_info) > 0

    def inputs(self, data: Mapping[str, Any], prefix: str = "", action: Any = None) -> list:
        """The ``call()`` arguments from a dict of arrays (``prefix`` selects ``next_`` entries)."""
        return [action if (n == "action" and action is not None) else data[prefix + n if n != "action" else n]
                for n in self.input_names]


def _make_optimizer(key: str, model: keras.Model, lr: float) -> keras.optimizers.Optimizer:
    opt = getattr(model, "optimizer", "Adam")
    if isinstance(opt, keras.optimizers.Optimizer):
        raise ModelContractError(f"{key}.optimizer must be a name such as 'Adam' or an optimizer class, "
                                 "not an instance: aquaml creates it with the model's learning_rate")
    if isinstance(opt, str):
        names = {n.lower(): n for n in dir(keras.optimizers)
                 if isinstance(getattr(keras.optimizers, n), type)
                 and issubclass(getattr(keras.optimizers, n), keras.optimizers.Optimizer)
                 and n != "Optimizer"}
        if opt.lower() not in names:
            raise ModelContractError(f"{key}.optimizer={opt!r} is not a Keras optimizer; use one of "
                                     f"{sorted(names.values())}")
        opt = getattr(keras.optimizers, names[opt.lower()])
    if not (isinstance(opt, type) and issubclass(opt, keras.optimizers.Optimizer)):
        raise ModelContractError(f"{key}.optimizer must be a Keras optimizer name or class, got {opt!r}")
    return opt(learning_rate=lr)


def _input_names(key: str, model: keras.Model, available: DataInfo, critic: bool,
                 what: str = "the observation does not provide") -> tuple[str, ...]:
    names = getattr(model, "input_name", None)
    if isinstance(names, str):
        raise ModelContractError(f"{key}.input_name must be a tuple of names such as ({names!r},), "
                                 f"got the string {names!r}")
    if not names or not all(isinstance(n, str) for n in names):
        raise ModelContractError(f"{key}.input_name must be a non-empty tuple of names, got {names!r}")
    names = tuple(names)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ModelContractError(f"{key}.input_name has {unknown}, which {what}; "
                                 f"available names are {available.names}")
    if critic and "action" not in names:
        raise ModelContractError(f"{key}.input_name={names} must include 'action' (a critic scores "
                                 f"observation and action), e.g. {names + ('action',)}")
    return names


def is_discrete_action(action_info: DataInfo) -> bool:
    """True when ``action`` is an integer choice among ``n`` (a gymnasium Discrete)."""
    return action_info.dtype("action").kind in "iu" and "n" in action_info.meta("action")


def action_kind(action_info: DataInfo) -> str:
    """``'discrete'`` (one choice among ``n``), ``'multi_discrete'`` (a choice per component,
    ``nvec``), ``'multi_binary'`` (a bit per component) or ``'continuous'``."""
    meta = action_info.meta("action")
    if action_info.dtype("action").kind in "iu":
        if "n" in meta:
            return "discrete"
        if "nvec" in meta:
            return "multi_discrete"
        if meta.get("binary"):
            return "multi_binary"
    return "continuous"


def actor_action_shape(action_info: DataInfo) -> tuple[int, ...]:
    """What the actor's ``action`` output holds per sample: the action itself; for a discrete
    action of ``n`` choices the ``n`` logits of a Categorical; for a MultiDiscrete one the logits
    of every component's Categorical, concatenated (``sum(nvec)``); for a MultiBinary one a logit
    per bit."""
    kind = action_kind(action_info)
    if kind == "discrete":
        return (int(action_info.meta("action")["n"]),)
    if kind == "multi_discrete":
        return (int(sum(action_info.meta("action")["nvec"])),)
    return tuple(action_info.shape("action"))


def model_state_groups(models: Mapping[str, ModelSpec]) -> dict[str, list]:
    """Each model's weights (``model/<key>``) and its optimizer's variables (``optim/<key>``): slots,
    iteration count and learning rate, for a checkpoint."""
    groups = {f"model/{k}": list(s.model.weights) for k, s in models.items()}
    groups.update({f"optim/{k}": list(s.optimizer.variables) for k, s in models.items()})
    return groups


def read_variables(variables: Sequence[Any]) -> list[np.ndarray]:
    """The values of ``variables``, as numpy arrays in the same order."""
    return [np.asarray(v.numpy()) for v in variables]


def assign_variables(variables: Sequence[Any], values: Sequence[np.ndarray], what: str) -> None:
    """Assign ``values`` (in ``read_variables``' order) to ``variables``.

    Raises:
        ValueError: the count differs (``what`` names the list the values should have come from).
    """
    if len(values) != len(variables):
        raise ValueError(f"{what} holds {len(variables)} arrays, got {len(values)}")
    for v, value in zip(variables, values):
        v.assign(value)


def save_models(directory: str, models: Mapping[str, ModelSpec], state_file: str,
                state: Mapping[str, np.ndarray]) -> None:
    """Write every model's weights (``<key>.weights.h5``) and an algorithm's other state
    (``state_file``, an .npz) into ``directory``, each file atomically."""
    os.makedirs(directory, exist_ok=True)
    for key, spec in models.items():
        with atomic_path(os.path.join(directory, f"{key}.weights.h5")) as tmp:
            spec.model.save_weights(tmp)
    with atomic_path(os.path.join(directory, state_file)) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **state)


def _output_names(key: str, model: keras.Model, action_info: DataInfo | None) -> tuple[str, ...]:
    info = getattr(model, "output_info", None)
    if not isinstance(info, Mapping) or "action" not in info:
        raise ModelContractError(f"{key}.output_info must be a dict that includes 'action', e.g. "
                                 f"{{'action': (1,), 'log_std': (1,)}}; got {info!r}")
    declared = tuple(int(d) for d in np.atleast_1d(info["action"]))
    if action_info is not None and declared != actor_action_shape(action_info):
        want = actor_action_shape(action_info)
        what = (f"a discrete action of {want[0]} choices (the actor outputs its logits)"
                if want != tuple(action_info.shape("action")) else f"an action of shape {want}")
        raise ModelContractError(f"{key}.output_info['action'] is {declared} but the environment has {what}; "
                                 f"set output_info['action'] = {want}")
    return tuple(info)


def _check_call(spec: ModelSpec, sample: Mapping[str, np.ndarray], critic: bool,
                output_info: Mapping[str, Any] | None) -> None:
    key, batch = spec.key, 2
    try:
        out = spec.model(*[tf.convert_to_tensor(a) for a in spec.inputs(sample)])
    except Exception as err:  # the user's call() failed: say which model and with what inputs
        shapes = {n: sample[n].shape for n in spec.input_names}
        raise ModelContractError(f"{key}.call() failed on zero inputs {shapes} "
                                 f"(argument order {spec.input_names}): {type(err).__name__}: {err}") from err
    if critic:
        if isinstance(out, (tuple, list)):
            raise ModelContractError(f"{key}.call() must return one tensor of shape (batch, 1), "
                                     f"got a {type(out).__name__} of {len(out)}")
        if tuple(out.shape) not in ((batch, 1), (batch,)):
            raise ModelContractError(f"{key}.call() returned shape {tuple(out.shape)} for a batch of {batch}; "
                                     f"a critic returns (batch, 1)")
        return
    if not isinstance(out, (tuple, list)):
        raise ModelContractError(f"{key}.call() must return a tuple in output_info order "
                                 f"{tuple(output_info)}, got one {type(out).__name__}; write `return (action,)`")
    if len(out) != len(output_info):
        raise ModelContractError(f"{key}.call() returned {len(out)} outputs but output_info declares "
                                 f"{len(output_info)} {tuple(output_info)}")
    for (name, shape), value in zip(output_info.items(), out):
        want = (batch,) + tuple(int(d) for d in np.atleast_1d(shape))
        if tuple(value.shape) != want:
            raise ModelContractError(f"{key}.call() output {name!r} has shape {tuple(value.shape)} for a "
                                     f"batch of {batch}; output_info says {tuple(want[1:])} per sample")


def _instantiate(key: str, factory: Any) -> keras.Model:
    if not callable(factory):
        raise ModelContractError(f"model_class_dict[{key!r}] must be a model class, got {factory!r}")
    model = factory()
    if not isinstance(model, keras.Model):
        raise ModelContractError(f"model_class_dict[{key!r}] built a {type(model).__name__}, "
                                 "not a keras.Model; subclass aquaml.RLBaseModel")
    lr = getattr(model, "learning_rate", None)
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
        raise ModelContractError(f"{key}.learning_rate must be a positive number, got {lr!r}")
    return model


def build_models(model_class_dict: Mapping[str, Callable[[], keras.Model]], required: tuple[str, ...],
                 obs_info: DataInfo, action_info: DataInfo | None, optional: tuple[str, ...] = (),
                 critics_take_action: bool = True,
                 model_view: Callable[[str, DataInfo, DataInfo], DataInfo | None] | None = None,
                 ) -> tuple[dict[str, ModelSpec], DataInfo]:
    """Instantiate and check every model; return them by key, with the action spec.

    Args:
        model_class_dict: ``{'actor': ActorClass, 'qf1': QClass, ...}`` (classes or zero-arg factories).
        required: the keys the algorithm needs; ``'actor'`` is the one with ``output_info``.
        obs_info: the observation spec the models read from.
        action_info: the spec of ``action``; None takes the shape from the actor's
            ``output_info['action']`` (float32), for environments that declare no action spec.
        optional: keys the algorithm also accepts (PPO's ``'critic'``, absent when the actor
            outputs ``'value'`` itself).
        critics_take_action: critics score (observation, action) pairs (SAC's Q) rather than
            observations alone (PPO's V).
        model_view: ``model_view(key, obs_info, action_info)`` (``Algorithm.model_view``): the
            entries a non-actor model may read when they are not a critic's (a discriminator's
            transitions), or None for a critic. Such a model's ``input_name`` is checked against
            that view and it is called on the view's zeros.

    An actor input that is also one of its outputs is recurrent state (an LSTM's ``hidden1``,
    ``hidden2``): it joins the observation spec (see ``aquaml.models.recurrent``) and the actor's spec
    records it in ``state_info``.

    Raises:
        ModelContractError: a key is missing or unknown, or a model breaks its contract.
    """
    if not isinstance(model_class_dict, Mapping):
        raise ModelContractError(f"model_class_dict must be a dict like {{'actor': Actor, ...}} with keys "
                                 f"{required}, got {type(model_class_dict).__name__}")
    missing = [k for k in required if k not in model_class_dict]
    extra = [k for k in model_class_dict if k not in required + optional]
    if missing or extra:
        also = f" (and optionally {optional})" if optional else ""
        raise ModelContractError(f"model_class_dict needs the keys {required}{also}; "
                                 f"missing {missing}, unexpected {extra}")
    actor = _instantiate("actor", model_class_dict["actor"])
    output_names = _output_names("actor", actor, action_info)
    if action_info is None:
        action_info = DataInfo("action", tuple(np.atleast_1d(actor.output_info["action"])), np.float32)
    state_info = recurrent_info(actor)
    try:
        obs_info = with_recurrent(obs_info, state_info)
    except SpecError as err:
        raise ModelContractError(str(err)) from None
    critic_view = obs_info.merge(action_info)
    sample = critic_view.zeros((2,))
    specs = {}
    for key in required + tuple(k for k in optional if k in model_class_dict):
        critic = key != "actor"
        model = _instantiate(key, model_class_dict[key]) if critic else actor
        view = model_view(key, obs_info, action_info) if critic and model_view is not None else None
        q_critic = critic and critics_take_action and view is None
        if view is not None:
            names = _input_names(key, model, view, False, "this algorithm does not give that model")
        else:
            names = _input_names(key, model, critic_view if q_critic else obs_info, q_critic)
        spec = ModelSpec(key=key, model=model, factory=model_class_dict[key], input_names=names,
                         output_names=() if critic else output_names,
                         learning_rate=float(model.learning_rate),
                         optimizer=_make_optimizer(key, model, float(model.learning_rate)),
                         state_info=EMPTY_INFO if critic else state_info)
        _check_call(spec, sample if view is None else view.zeros((2,)), critic,
                    None if critic else dict(model.output_info))
        specs[key] = spec
    return specs, action_info
