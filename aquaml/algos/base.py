"""The algorithm contract: everything the runtime asks of an algorithm, and nothing more.

The runtime (schedules, transport, checkpoints, the command line, export) talks to an algorithm only
through these classes, in the spirit of Acme's actor / learner / variable-source interfaces:

- ``Algorithm``: what every algorithm offers. Its models and specs; a buffer to store what workers
  collect; a host policy that acts on worker ranks and in evaluation; the actor's weights as a
  flat list (what workers need to act); every variable and other state a checkpoint must hold;
  the files it saves at the end; a deterministic action for export.
- ``OffPolicyAlgorithm`` (asynchronous replay: SAC, DQN): batches sampled from a replay buffer,
  several gradient updates per compiled call, and an update fused with the next action for the
  one-process case.
- ``OnPolicyAlgorithm`` (synchronous rollouts: PPO): one training round on complete segments.

The schedule an algorithm runs under follows from which of the two it subclasses; algorithms are
found by name in ``aquaml.algos.registry``. No MPI in here: algorithms see arrays, never ranks.

Shapes: ``B`` is a batch, ``k`` a number of updates, ``W`` workers, ``T`` rollout steps, ``E``
environments per worker; ``*s`` is an entry's per-sample shape from its DataInfo.
"""
from __future__ import annotations

import abc
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from aquaml.data import DataInfo
from aquaml.models.base import ModelSpec, assign_variables, read_variables


class Algorithm(abc.ABC):
    """Base of every algorithm.

    Class attributes (read before any model is built):
        name: the algorithm's name in logs and config.json (e.g. ``'SAC'``).
        parameters_class: its parameters dataclass (a ``RunParameters`` subclass).
        required_models: the keys of ``model_class_dict`` it needs; ``'actor'`` is the model with
            ``output_info`` that acts.
        optional_models: keys it also accepts.
        critics_take_action: whether its non-actor models read ``'action'`` (SAC's Q) or not (PPO's V).
        metric_names: what each update reports, in order (``losses/...`` names, CleanRL style).
        console_metrics: ``(metric, label, format)`` triples shown on the progress line.
        default_hidden: the hidden layer widths of ``default_models`` when none are given.

    Instance attributes set by ``__init__``: ``params``, ``models`` (ModelSpec by key), ``actor``
    (``models['actor']``), ``obs_info``, ``action_info`` and ``batch_info`` (the columns of one
    buffer row).
    """

    name: ClassVar[str]
    parameters_class: ClassVar[type]
    required_models: ClassVar[tuple[str, ...]]
    optional_models: ClassVar[tuple[str, ...]] = ()
    critics_take_action: ClassVar[bool] = False
    metric_names: ClassVar[tuple[str, ...]]
    console_metrics: ClassVar[tuple[tuple[str, str, str], ...]] = ()
    default_hidden: ClassVar[tuple[int, ...]] = (256, 256)

    params: Any
    models: dict[str, ModelSpec]
    actor: ModelSpec
    obs_info: DataInfo
    action_info: DataInfo
    batch_info: DataInfo

    @abc.abstractmethod
    def __init__(self, models: Mapping[str, ModelSpec], obs_info: DataInfo, action_info: DataInfo,
                 params: Any) -> None:
        """Build the algorithm on checked models (``aquaml.models.base.build_models``).

        Raises:
            TypeError: ``params`` is not a ``parameters_class``.
            aquaml.SpecError, aquaml.ModelContractError: the action or a model does not fit.
        """

    @staticmethod
    @abc.abstractmethod
    def check_action_info(action_info: DataInfo) -> None:
        """Raise ``SpecError`` (saying what is supported) unless the algorithm handles this action."""

    @classmethod
    def default_models(cls, obs_info: DataInfo, action_info: DataInfo, hidden: Sequence[int] | None = None,
                       learning_rate: float | None = None) -> dict[str, Any]:
        """A ``model_class_dict`` of ready models for any environment (what ``aquaml train`` uses).

        Raises:
            NotImplementedError: the algorithm has none; pass ``model_class_dict`` yourself.
        """
        raise NotImplementedError(f"{cls.name} has no default models; give RLTaskStarter a model_class_dict")

    @classmethod
    def model_options(cls, params: Any) -> dict[str, Any]:
        """Keyword arguments of ``default_models`` that follow from the run's parameters (DQN's
        ``dueling`` needs a value head): what ``aquaml train`` passes with the specs. None by default."""
        return {}

    @classmethod
    def model_view(cls, key: str, obs_info: DataInfo, action_info: DataInfo) -> DataInfo | None:
        """The entries the non-actor model ``key`` may read, when it is not a critic: a
        discriminator of transitions reads ``next_`` observations, or an action beside PPO's
        value critic. None (the default): a critic, reading observations (and ``'action'``,
        required, when ``critics_take_action``). The start-up check calls the model on this
        view's zeros."""
        return None

    def check_workers(self, num_workers: int) -> None:
        """Raise ValueError if the parameters cannot work with ``num_workers`` worker slices."""

    @abc.abstractmethod
    def make_buffer(self, num_slices: int = 1, store: Any = None) -> Any:
        """Where workers store rows of ``batch_info``: one slice per worker, its arrays allocated
        through ``store`` (an ``aquaml.buffers.replay.ArrayStore``; local arrays when None)."""

    @abc.abstractmethod
    def host_policy(self, seed: int) -> Any:
        """An ``aquaml.acting.inference.HostPolicy`` acting like ``act`` with its own noise stream
        from ``seed``; it sees new weights only at ``sync()`` or ``load()``. Its ``state_dict()``
        (JSON-able) is what a worker's snapshot keeps of it, restored by ``load_state_dict``."""

    @abc.abstractmethod
    def act(self, obs: Mapping[str, np.ndarray], deterministic: bool = False) -> dict[str, np.ndarray]:
        """Actions for a batch: ``{'action': (B, *s), ...}`` plus whatever the buffer stores with
        them (PPO's ``sample`` and ``log_prob``) and a recurrent actor's next state."""

    @abc.abstractmethod
    def export_act(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        """The deterministic action as TensorFlow ops, for tracing into an exported policy:
        ``{'action': (B, *s)}`` (continuous actions in [-1, 1], discrete ones as indices) plus a
        recurrent actor's next state. ``obs`` holds the actor's input names."""

    def deterministic_head(self) -> dict[str, Any] | None:
        """How ``export_act`` follows from the actor's outputs, as JSON data, so that an exported
        policy can be rebuilt from the actor's weights alone without running its SavedModel
        (``aquaml.run.export``): ``{'action': 'tanh' | 'clip' | 'argmax', 'normalize': {name:
        {'mean', 'var'}}, 'obs_clip': c}``. None (the default) when no such head describes it: a
        policy exported from someone else is then only run with ``trust=True``."""
        return None

    def cloning_inputs(self, obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Recorded observations as the actor sees them when this algorithm acts, for
        ``aquaml.behaviour_cloning`` (e.g. normalised); unchanged by default."""
        return dict(obs)

    @abc.abstractmethod
    def actor_weight_variables(self) -> list:
        """The variables acting reads (actor weights, and e.g. a global log_std or normaliser
        statistics), in a fixed order: what workers receive."""

    def actor_weights(self) -> list[np.ndarray]:
        """The values of ``actor_weight_variables()``, in order."""
        return read_variables(self.actor_weight_variables())

    def set_actor_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Assign values in ``actor_weights()`` order.

        Raises:
            ValueError: the number of arrays differs.
        """
        assign_variables(self.actor_weight_variables(), weights, "actor_weights()")

    @abc.abstractmethod
    def state_groups(self) -> dict[str, list]:
        """Every variable a checkpoint must hold, by group name (weights, targets, optimizer slots,
        noise generators...); a resumed run assigns them back in the same order."""

    def extra_state(self) -> dict[str, Any]:
        """State that is not a variable (counters, numpy RNG states), JSON-serialisable."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Restore what ``extra_state`` returned."""

    @abc.abstractmethod
    def save(self, directory: str) -> None:
        """Write the trained models (``<key>.weights.h5``) and the algorithm's other state into
        ``directory``, each file atomically."""

    def _compiled(self, name: str) -> Any:
        """``self._<name>`` (a ``tf.function`` with an input signature), traced at its first use (a
        test may replace what it calls before, as test_sac replaces SAC's ``_noise``) and called
        through ``aquaml.compiled.CompiledCall`` (less Python per call than the public call)."""
        calls = self.__dict__.setdefault("_compiled_calls", {})
        call = calls.get(name)
        if call is None:
            from aquaml.compiled import CompiledCall
            call = calls[name] = CompiledCall(getattr(self, "_" + name))
        return call


class OffPolicyAlgorithm(Algorithm):
    """An algorithm trained by asynchronous replay (``aquaml.schedules.async_replay``): workers
    keep writing transitions; the learner samples batches and runs ``replay_ratio`` updates per
    environment step. Its parameters are ``ReplayParameters``."""

    @abc.abstractmethod
    def sample_many(self, buffer: Any, rng: np.random.Generator, count: int) -> dict[str, np.ndarray]:
        """``count`` batches stacked on a new first axis: ``{column: (count, B, *s)}`` (or
        ``(count, B, L, *s)`` for sequences of length L)."""

    @abc.abstractmethod
    def update_many(self, batches: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One gradient update per leading index of ``batches`` in one compiled call.

        Returns the metrics of each update ``(count, len(metric_names))`` and the actor's weights
        after the last one, flat (float32, ``actor_weights()`` order), ready to publish.
        """

    @abc.abstractmethod
    def update_and_act(self, batch: Mapping[str, np.ndarray], obs: Mapping[str, np.ndarray]) -> tuple[Any, dict]:
        """One update on ``batch`` (``{column: (B, *s)}``), then ``act(obs)`` with the new weights,
        in one call (in one process every step both trains and acts). Returns the update's metrics
        ``(len(metric_names),)`` and the actions as ``act`` returns them."""

    def live_policy(self) -> Any:
        """The policy a one-process actor acts with (learner and actor share the variables): by
        default ``act`` itself, on the live variables (``aquaml.acting.inference.LivePolicy``). An
        algorithm may return a faster one that takes the weights at ``sync()``, which the actor
        calls after each publication, as long as every action equals ``act``'s on the weights of
        the last update (the state it draws from is the algorithm's, in ``extra_state``)."""
        from aquaml.acting.inference import LivePolicy
        return LivePolicy(self.act)

    def sample(self, buffer: Any, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One update's batch: ``{column: (B, *s)}``."""
        return {k: v[0] for k, v in self.sample_many(buffer, rng, 1).items()}

    def update(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """One gradient update; returns its metrics ``(len(metric_names),)``."""
        metrics, _ = self.update_many({k: np.asarray(v)[None] for k, v in batch.items()})
        return metrics[0]


class OnPolicyAlgorithm(Algorithm):
    """An algorithm trained in synchronous rounds (``aquaml.schedules.sync_rollouts``): every
    worker fills a segment of ``rollout_steps`` steps with the same weights, the learner trains
    once on all of them. Its parameters are ``RolloutParameters``."""

    @abc.abstractmethod
    def train(self, segments: Mapping[str, np.ndarray]) -> np.ndarray:
        """One training round on complete segments ``{column: (W, T, E, *s)}``; returns the round's
        metrics ``(len(metric_names),)``."""
