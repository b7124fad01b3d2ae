"""Deep Q-Networks (Mnih et al., 2015) with the options the literature added, each a parameter.

Double DQN (van Hasselt et al., 2016; on by default), dueling heads (Wang et al., 2016), n-step
returns, proportional prioritized replay (Schaul et al., 2016), a target network copied every N
updates or moved by Polyak averaging, Huber or squared loss, gradient-norm clipping; exploration
by epsilon-greedy (linear or exponential schedule) or Boltzmann sampling over the Q-values.

Reads top to bottom: the parameters, the target and loss as the papers write them (public, so
tests check them by hand), the Q-values and the policy, then one compiled update. No MPI in
here: the caller feeds batches and publishes weights, exactly as for SAC.

The Q-network is the actor (``model_class_dict = {'actor': QNet}``): its ``action`` output holds
one Q-value per choice, ``(batch, n)``; with ``dueling=True`` it is the advantage stream and a
second output ``value`` ``(batch, 1)`` the state value, combined here as
``Q = V + A - mean(A)``. The greedy action is ``argmax Q``, so ``export_policy``'s deterministic
policy and ``aquaml eval`` act greedily.

Replay columns (``transition_info``): every observation name, the same prefixed ``next_``,
``action`` (int64 index), ``reward``, ``terminated``, ``truncated``. Training batches
(``train_info``) hold the Q-network's inputs and their ``next_`` versions, ``action``, the
n-step ``reward``, the bootstrap factor ``discount`` (``gamma^m``, 0 after termination) and the
importance ``weight`` (1 without prioritized replay); see ``aquaml.buffers.nstep``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from aquaml.acting.inference import HostPolicy, LivePolicy
from aquaml.algos.base import OffPolicyAlgorithm
from aquaml.algos.exploration import EpsilonSchedule, ExplorationPolicy
from aquaml.algos.params import ReplayParameters, _check, _check_ints, with_aliases
from aquaml.buffers.frames import FrameReplayBuffer, stacked_entries
from aquaml.buffers.nstep import n_step_batch, uniform_rows, window_starts
from aquaml.buffers.prioritized import ProportionalPriorities
from aquaml.buffers.replay import MAX_REDRAWS, ReplayBuffer
from aquaml.data import DataInfo, SpecError
from aquaml.models.base import ModelContractError, ModelSpec, is_discrete_action, model_state_groups, save_models
from aquaml.models.defaults import q_network

EXPLORATIONS = ("epsilon_greedy", "boltzmann")
LOSSES = ("huber", "mse")
#: Batch entries that say where each sampled row came from (for the priority update), not fed to TensorFlow.
SAMPLED_SLICE, SAMPLED_ROW = "sampled/slice", "sampled/row"


def _dqn_derived(kw: dict) -> dict:
    # The reference systems' ways of saying the same things, turned into the fields.
    n_epochs = kw.pop("n_epochs", None)
    if n_epochs is not None:
        _check(isinstance(n_epochs, int) and n_epochs > 0, "n_epochs", "a positive int", n_epochs)
        if "total_steps" in kw:
            raise TypeError("DQNParameters: give total_steps or n_epochs (times epoch_length), not both")
        kw["total_steps"] = n_epochs * kw.get("epoch_length", DQNParameters.epoch_length)
    for name in ("update_times", "gradient_steps"):
        per_burst = kw.pop(name, None)
        if per_burst is None:
            continue
        _check(isinstance(per_burst, int) and per_burst > 0, name, "a positive int", per_burst)
        if "replay_ratio" in kw:
            raise TypeError(f"DQNParameters: give replay_ratio or {name} (per update_interval), not both")
        kw["replay_ratio"] = per_burst / kw.get("update_interval", DQNParameters.update_interval)
    if kw.get("exploration") == "thompson":  # ReAllY's name for sampling from softmax(Q / temperature)
        kw["exploration"] = "boltzmann"
    if "epsilon_decay" in kw and "epsilon_schedule" not in kw:  # KeRLym's epsilon *= 1 - decay
        kw["epsilon_schedule"] = "exponential"
    return kw


@with_aliases({"discount": "gamma", "max_mem": "buffer_size", "update_freq": "update_interval",
               "train_freq": "update_interval", "episode_length": "epoch_length",
               "mini_buffer_size": "learning_starts", "action_sampling_type": "exploration",
               "exploration_initial_eps": "epsilon", "exploration_final_eps": "epsilon_min",
               "n_epochs": "*", "update_times": "*", "gradient_steps": "*"}, _dqn_derived)
@dataclasses.dataclass(frozen=True)
class DQNParameters(ReplayParameters):
    """Deep Q-Network hyperparameters.

    Reference names: KeRLym's ``discount`` = ``gamma``, ``max_mem`` = ``buffer_size``,
    ``update_freq`` = ``update_interval``, ``epsilon``, ``epsilon_decay`` (``epsilon *= 1 - decay``
    per step; giving it selects the exponential schedule), ``epsilon_min``, ``batch_size``,
    ``learning_rate``; ReAllY's ``action_sampling_type`` = ``exploration`` (``'thompson'`` means
    ``'boltzmann'``) and ``temperature``; Stable-Baselines3's ``train_freq`` = ``update_interval``,
    ``gradient_steps`` sets ``replay_ratio`` to ``gradient_steps / update_interval``,
    ``exploration_initial_eps`` = ``epsilon``, ``exploration_final_eps`` = ``epsilon_min``; the
    reference AquaML's ``episode_length``, ``mini_buffer_size``, ``n_epochs``, ``update_times``.
    """

    total_steps: int = 100_000
    """Environment steps to train for, summed over all workers and environments."""
    eval_interval: int = 10_000
    """Environment steps between greedy evaluations (0 disables them)."""
    replay_ratio: float = 0.25
    """Gradient updates per environment step (Stable-Baselines3's default: one per 4 steps)."""
    update_interval: int = 4
    """Environment steps between bursts of ``update_interval * replay_ratio`` updates."""
    batch_size: int = 32
    """Transitions per gradient update."""
    gamma: float = 0.99
    """Discount factor."""
    learning_rate: float | None = None
    """Learning rate of the Q-network's optimizer; None keeps the model's own ``learning_rate``."""
    target_update_interval: int = 2_500
    """Gradient updates between target-network updates."""
    tau: float = 1.0
    """Target update coefficient: 1 copies the Q-network (hard update), below 1 moves the target
    ``tau`` of the way (Polyak averaging; use with ``target_update_interval=1``)."""
    double_q: bool = True
    """Double DQN: the next action is the online network's argmax, valued by the target network."""
    dueling: bool = False
    """The Q-network outputs advantages (``action``) and a state value (``value``), combined as
    ``V + A - mean(A)``."""
    n_steps: int = 1
    """Steps of reward summed before bootstrapping (cut at episode ends)."""
    loss: str = "huber"
    """``'huber'`` (smooth L1 with ``huber_delta``, as the DQN paper's error clipping) or ``'mse'``."""
    huber_delta: float = 1.0
    """Where the Huber loss turns from squared to linear."""
    max_grad_norm: float | None = 10.0
    """Global gradient-norm clip per update; None disables it."""
    prioritized: bool = False
    """Proportional prioritized replay with importance weights."""
    priority_alpha: float = 0.6
    """How much priorities count in sampling (0: uniform)."""
    priority_beta: float = 0.4
    """Importance-weight exponent at the start, annealed linearly to 1 at ``total_steps``."""
    priority_eps: float = 1e-6
    """Added to every absolute TD error."""
    exploration: str = "epsilon_greedy"
    """``'epsilon_greedy'`` or ``'boltzmann'`` (sample from ``softmax(Q / temperature)``)."""
    epsilon: float = 1.0
    """Epsilon at step 0."""
    epsilon_min: float = 0.05
    """The floor epsilon decays to."""
    epsilon_schedule: str = "linear"
    """``'linear'`` over ``exploration_fraction * total_steps`` steps, or ``'exponential'``
    (``epsilon *= 1 - epsilon_decay`` per step)."""
    exploration_fraction: float = 0.1
    """Linear schedule: the fraction of ``total_steps`` over which epsilon reaches ``epsilon_min``."""
    epsilon_decay: float = 1e-4
    """Exponential schedule: the decay per environment step."""
    temperature: float = 1.0
    """Boltzmann exploration's temperature (lower is greedier)."""
    optimize_memory_usage: bool = False
    """Store stacked-frame observations (FrameStackObservation) one frame per step
    (``aquaml.buffers.frames``)."""
    jit_compile: bool = False
    """Compile the update with XLA."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_ints(self, ("batch_size", "target_update_interval", "n_steps"), ())
        _check(0.0 <= self.gamma <= 1.0, "gamma", "in [0, 1]", self.gamma)
        _check(self.learning_rate is None or self.learning_rate > 0, "learning_rate", "None or > 0", self.learning_rate)
        _check(0.0 < self.tau <= 1.0, "tau", "in (0, 1]", self.tau)
        _check(self.loss in LOSSES, "loss", f"one of {LOSSES}", self.loss)
        _check(self.huber_delta > 0, "huber_delta", "> 0", self.huber_delta)
        _check(self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm", "None or > 0",
               self.max_grad_norm)
        _check(self.priority_alpha >= 0, "priority_alpha", ">= 0", self.priority_alpha)
        _check(0.0 <= self.priority_beta <= 1.0, "priority_beta", "in [0, 1]", self.priority_beta)
        _check(self.priority_eps > 0, "priority_eps", "> 0", self.priority_eps)
        _check(self.exploration in EXPLORATIONS, "exploration",
               f"one of {EXPLORATIONS} (or ReAllY's 'thompson' for 'boltzmann')", self.exploration)
        _check(0.0 <= self.epsilon_min <= self.epsilon <= 1.0, "epsilon",
               f"in [epsilon_min={self.epsilon_min}, 1] with epsilon_min >= 0", self.epsilon)
        _check(self.epsilon_schedule in EpsilonSchedule.KINDS, "epsilon_schedule",
               f"one of {EpsilonSchedule.KINDS}", self.epsilon_schedule)
        _check(0.0 <= self.exploration_fraction <= 1.0, "exploration_fraction", "in [0, 1]",
               self.exploration_fraction)
        _check(0.0 <= self.epsilon_decay < 1.0, "epsilon_decay", "in [0, 1)", self.epsilon_decay)
        _check(self.temperature > 0 and math.isfinite(self.temperature), "temperature", "a finite number > 0",
               self.temperature)

    def epsilon_at(self) -> EpsilonSchedule | None:
        """The epsilon schedule over global steps (None for Boltzmann exploration)."""
        if self.exploration != "epsilon_greedy":
            return None
        return EpsilonSchedule(self.epsilon, self.epsilon_min, self.epsilon_schedule,
                               decay_steps=int(self.exploration_fraction * self.total_steps),
                               decay=self.epsilon_decay)

    def priority_beta_at(self, steps: int) -> float:
        """The importance-weight exponent after ``steps`` environment steps."""
        return self.priority_beta + (1.0 - self.priority_beta) * min(1.0, steps / self.total_steps)


def transition_info(obs_info: DataInfo, action_info: DataInfo) -> DataInfo:
    """The replay columns for one transition ``(o, a, r, o', terminated, truncated)``."""
    return (obs_info.merge(obs_info.prefixed("next_"))
            .merge(DataInfo("action", (), np.int64, {"action": action_info.meta("action")}))
            .add_info(("reward", "terminated", "truncated"), ((), (), ()), np.float32))


class _ArrayState:
    """A numpy array seen as a checkpoint variable (``numpy``/``assign``/``shape``), so that the
    priorities in the replay store go into checkpoints with the algorithm's variables."""

    def __init__(self, array: np.ndarray, name: str) -> None:
        self.array, self.name = array, name

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    def numpy(self) -> np.ndarray:
        return self.array.copy()

    def assign(self, value: np.ndarray) -> None:
        self.array[...] = value


class DQN(OffPolicyAlgorithm):
    """Deep Q-learning on one Q-network (``'actor'``), with a target copy of it.

    Raises (at construction):
        TypeError: ``params`` is not DQNParameters.
        SpecError: the action is not one Discrete choice, or ``optimize_memory_usage`` finds no
            stacked-frame observation.
        ModelContractError: the Q-network's outputs do not fit ``dueling``, or it is recurrent.
    """

    name = "DQN"
    parameters_class = DQNParameters
    required_models = ("actor",)
    optional_models: tuple[str, ...] = ()
    critics_take_action = False
    metric_names = ("losses/td_loss", "losses/q_values", "losses/td_abs", "losses/grad_norm")
    console_metrics = (("losses/td_loss", "td_loss", ".3g"), ("losses/q_values", "q", ".3g"))
    default_hidden = (256, 256)  # rl-baselines3-zoo's for CartPole, Acrobot and LunarLander

    def __init__(self, models: Mapping[str, ModelSpec], obs_info: DataInfo, action_info: DataInfo,
                 params: DQNParameters) -> None:
        if not isinstance(params, DQNParameters):
            raise TypeError(f"DQN needs DQNParameters, got {type(params).__name__}")
        self.check_action_info(action_info)
        self.params, self.models = params, dict(models)
        self.actor = models["actor"]
        self._check_outputs(self.actor, params)
        self.obs_info, self.action_info = obs_info, action_info
        self.num_actions = int(action_info.meta("action")["n"])
        self.gamma = float(params.gamma)
        self.batch_info = transition_info(obs_info, action_info)
        self.stacked = stacked_entries(self.batch_info) if params.optimize_memory_usage else ()
        if params.optimize_memory_usage and not self.stacked:
            raise SpecError("optimize_memory_usage=True needs uint8 observations stacked on axis 0 (gymnasium's "
                            f"FrameStackObservation, e.g. (4, 84, 84)); this task's observations are {obs_info}")
        inputs = obs_info.select(self.actor.input_names)
        self.train_info = (inputs.merge(inputs.prefixed("next_")).merge(DataInfo("action", (), np.int64))
                           .add_info(("reward", "discount", "weight"), ((), (), ()), np.float32))
        self.dueling = params.dueling

        sample = self.train_info.zeros((1,))
        self.target = self.actor.factory()
        self.target(*self.actor.inputs(sample))
        self.target.set_weights(self.actor.model.get_weights())
        if params.learning_rate is not None:
            self.actor.optimizer.learning_rate = params.learning_rate
        self.actor.optimizer.build(self.actor.model.trainable_variables)
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="dqn_updates")
        self.workers = 1
        self.buffer: ReplayBuffer | None = None
        self.priorities: ProportionalPriorities | None = None

        obs_sig = [inputs.tensor_specs()]
        noise_sig = [tf.TensorSpec((None, self.num_actions), tf.float32, name="noise")]
        train_sig = [self.train_info.tensor_specs()]
        self._act_given_noise = tf.function(lambda obs, noise: self._act(obs, False, noise),
                                            input_signature=obs_sig + noise_sig)
        self._update = tf.function(self._update_step, input_signature=train_sig, jit_compile=params.jit_compile)
        self._update_many = tf.function(self._update_many_step, input_signature=[
            self.train_info.tensor_specs((None, None))], jit_compile=params.jit_compile)
        self._update_act = tf.function(lambda batch, obs, noise: (self._update_step(batch),
                                                                  self._act(obs, False, noise)),
                                       input_signature=train_sig + obs_sig + noise_sig, jit_compile=params.jit_compile)
        # one process acts with the same numpy noise and epsilon steps as a worker's policy, through
        # numpy where the graph allows (a fifth of TensorFlow's cost per call on a small network),
        # on a copy of the weights taken again whenever they may have changed (``_acting_stale``)
        self._acting = ExplorationPolicy(
            HostPolicy(self._act_given_noise, params.seed + 7919, None, self.actor_weight_variables(),
                       self.set_actor_weights, gumbel=True),
            params.epsilon_at(), self.num_actions, params.warmup_steps)
        self._acting_stale = True

    @staticmethod
    def check_action_info(action_info: DataInfo) -> None:
        """Raise SpecError unless the action is one Discrete choice (DQN takes the argmax of one
        Q-value per choice)."""
        dtype, shape, meta = action_info.dtype("action"), action_info.shape("action"), action_info.meta("action")
        if is_discrete_action(action_info) and shape == ():
            return
        if dtype.kind == "f":
            what, hint = f"continuous (Box) of shape {shape}", "Use SAC (or PPO) for continuous actions."
        else:
            kind = "MultiBinary" if meta.get("binary") else ("MultiDiscrete" if "nvec" in meta else dtype.name)
            what = f"{kind} of shape {shape}"
            hint = ("A product of several choices has no single argmax over one Q-value per choice: use PPO "
                    "(a product of Categoricals or Bernoullis), or wrap the environment into one Discrete action.")
        raise SpecError(f"DQN needs one Discrete action; this environment's action is {what}. {hint}")

    @classmethod
    def default_models(cls, obs_info: DataInfo, action_info: DataInfo, hidden: Sequence[int] | None = None,
                       learning_rate: float | None = None, *, dueling: bool = False) -> dict[str, Any]:
        """A Q-network over every observation name (``aquaml.models.defaults.QNetwork``: uint8
        images through the Nature-DQN trunk, discrete entries one-hot), ``default_hidden`` ReLU
        layers and learning rate 1e-4 (Stable-Baselines3's) by default; ``dueling`` adds the
        state-value head that ``DQNParameters(dueling=True)`` needs.

        Raises:
            SpecError: the action is not one Discrete choice.
            ValueError: a hidden width is not a positive int.
        """
        cls.check_action_info(action_info)
        hidden, lr = tuple(hidden or cls.default_hidden), 1e-4 if learning_rate is None else learning_rate
        return {"actor": q_network(obs_info, action_info, hidden, lr, dueling)}

    @classmethod
    def model_options(cls, params: DQNParameters) -> dict[str, Any]:
        """``dueling`` as the parameters ask, so ``aquaml train --set dueling=true`` gets a value head."""
        return {"dueling": bool(params.dueling)}

    @staticmethod
    def _check_outputs(actor: ModelSpec, params: DQNParameters) -> None:
        if actor.recurrent:
            raise ModelContractError(f"DQN trains feed-forward Q-networks; the actor reads and returns the recurrent "
                                     f"state {actor.state_info.names}. Remove it, or use SAC/PPO for recurrent actors")
        want = ("action", "value") if params.dueling else ("action",)
        if tuple(actor.output_names) != want:
            hint = ("dueling=True needs output_info = {'action': (n,), 'value': (1,)}: the advantage stream and the "
                    "state value (DQN.default_models(obs_info, action_info, dueling=True) builds such a network, "
                    "as the command line does)" if params.dueling else
                    "the Q-network outputs one Q-value per choice, output_info = {'action': (n,)}; an extra 'value' "
                    "output means dueling heads: set dueling=True")
            raise ModelContractError(f"actor.output_info is {tuple(actor.output_names)}: {hint}")

    def make_buffer(self, num_slices: int = 1, store: Any = None) -> ReplayBuffer:
        """The replay memory, one slice per worker, ``buffer_size`` transitions in all: a
        ``FrameReplayBuffer`` with ``optimize_memory_usage``, with priorities in the same store
        when ``prioritized``."""
        p = self.params
        if self.stacked:
            buffer = FrameReplayBuffer(self.batch_info, p.buffer_size, self.stacked, num_slices, store,
                                       stride=p.envs_per_worker)
        else:
            buffer = ReplayBuffer(self.batch_info, p.buffer_size, num_slices, store, stride=p.envs_per_worker)
        if p.prioritized:
            self.priorities = ProportionalPriorities(buffer.store, num_slices, buffer.slice_capacity,
                                                     p.priority_alpha, p.priority_eps)
        self.buffer = buffer
        return buffer

    def check_workers(self, num_workers: int) -> None:
        """Remember how many workers act: the epsilon schedule follows their summed steps."""
        self.workers = int(num_workers)

    # --- target and loss, as in the papers -----------------------------------------------------
    @staticmethod
    def q_target(reward: tf.Tensor, discount: tf.Tensor, next_q_target: tf.Tensor,
                 next_q_online: tf.Tensor | None = None) -> tf.Tensor:
        """``y = r + discount * Q_target(s', a*)`` with ``a* = argmax_a Q_online(s', a)`` (Double DQN,
        when ``next_q_online`` is given) or ``argmax_a Q_target(s', a)`` (DQN).

        ``reward`` is the n-step return and ``discount`` its bootstrap factor ``gamma^m * (1 - terminated)``
        (see ``aquaml.buffers.nstep``): 0 after termination, ``gamma^m`` after truncation.
        Q arrays are ``(batch, n)``; the rest ``(batch,)``.
        """
        chooser = next_q_target if next_q_online is None else next_q_online
        best = tf.argmax(chooser, axis=-1, output_type=tf.int32)
        value = tf.gather(next_q_target, best, axis=-1, batch_dims=1)
        return reward + discount * value

    @staticmethod
    def td_loss(td_error: tf.Tensor, weights: tf.Tensor | None = None, kind: str = "huber",
                delta: float = 1.0) -> tf.Tensor:
        """``mean(w * l(Q - y))``: ``l(x) = 0.5 x^2`` for ``|x| <= delta`` and ``delta (|x| - 0.5 delta)``
        beyond (Huber), or ``l(x) = x^2`` (``'mse'``)."""
        if kind == "mse":
            per_row = tf.square(td_error)
        else:
            magnitude = tf.abs(td_error)
            quadratic = tf.minimum(magnitude, delta)
            per_row = 0.5 * tf.square(quadratic) + delta * (magnitude - quadratic)
        if weights is None:
            return tf.reduce_mean(per_row)
        return tf.reduce_mean(weights * per_row)

    @staticmethod
    def dueling_q(value: tf.Tensor, advantages: tf.Tensor) -> tf.Tensor:
        """``Q = V + A - mean_a(A)`` for ``value`` ``(batch, 1)`` and ``advantages`` ``(batch, n)``."""
        return value + advantages - tf.reduce_mean(advantages, axis=-1, keepdims=True)

    # --- Q-values and the policy ---------------------------------------------------------------
    def q_values(self, obs: Mapping[str, tf.Tensor], prefix: str = "", model: keras.Model | None = None) -> tf.Tensor:
        """Q-values ``(batch, n)`` of the Q-network (or ``model``, e.g. the target) for ``obs``
        (``prefix='next_'`` reads next observations)."""
        model = self.actor.model if model is None else model
        out = dict(zip(self.actor.output_names, model(*self.actor.inputs(obs, prefix))))
        if self.dueling:
            return self.dueling_q(out["value"], out["action"])
        return out["action"]

    def _act(self, obs: Mapping[str, tf.Tensor], deterministic: bool,
             noise: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """The greedy action ``argmax Q`` (deterministic, or epsilon-greedy's greedy part), or with
        Boltzmann exploration ``argmax(Q / temperature + noise)``, a draw from
        ``softmax(Q / temperature)`` for standard Gumbel ``noise`` (zero noise: greedy)."""
        q = self.q_values(obs)
        if not deterministic and noise is not None and self.params.exploration == "boltzmann":
            q = q / self.params.temperature + noise
        return {"action": tf.argmax(q, axis=-1, output_type=tf.int64)}

    def export_act(self, obs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The greedy action ``argmax Q`` ``(batch,)`` int64, as TensorFlow ops."""
        return self._act(obs, True)

    def deterministic_head(self) -> dict[str, Any]:
        """How the greedy action follows from the Q-network's ``action`` output, as JSON data, for
        a policy rebuilt from its weights alone (``aquaml.run.export``): its argmax (with dueling
        heads too: ``V`` and ``mean(A)`` are the same for every choice)."""
        return {"action": "argmax", "normalize": {}}

    def act(self, obs: Mapping[str, np.ndarray], deterministic: bool = False) -> dict[str, np.ndarray]:
        """Actions ``{'action': (batch,) int64}`` for a batch of observations: greedy, or exploring
        (epsilon-greedy or Boltzmann) with the schedule at this process's step count."""
        self._acting_stale = True  # whatever changed the variables since, act on them as they are
        return self._acting_now(obs, deterministic)

    def _acting_now(self, obs: Mapping[str, np.ndarray], deterministic: bool) -> dict[str, np.ndarray]:
        if self._acting_stale:
            self._acting.sync()
            self._acting_stale = False
        return self._acting({n: obs[n] for n in self.actor.input_names}, deterministic)

    def live_policy(self) -> "LiveDQNPolicy":
        """The one-process actor's policy: ``act`` without taking the weights again before every
        call, only after an update of this DQN or the actor's ``sync()`` (each publication)."""
        return LiveDQNPolicy(self)

    def epsilon(self) -> float:
        """Epsilon of the next exploring ``act`` call of this process."""
        return self._acting.epsilon()

    def host_policy(self, seed: int, numpy: bool | None = None) -> ExplorationPolicy:
        """A policy with ``act``'s signature for workers and evaluation: numpy when the Q-network's
        graph allows (see ``aquaml.acting.inference``), its own stream from ``seed``, weights taken
        at ``sync()``/``load()``, epsilon at ``warmup_steps + workers * its steps``."""
        host = HostPolicy(self._act_given_noise, seed, numpy, self.actor_weight_variables(),
                          self.set_actor_weights, gumbel=True)
        return ExplorationPolicy(host, self.params.epsilon_at(), self.num_actions, self.params.warmup_steps,
                                 self.workers)

    # --- sampling ------------------------------------------------------------------------------
    def sample_many(self, buffer: ReplayBuffer, rng: np.random.Generator, count: int) -> dict[str, np.ndarray]:
        """``count`` batches of ``batch_size`` n-step transitions (``train_info`` columns, plus
        where each row came from), stacked on a new first axis. Prioritized: rows in proportion
        to their priority, with importance weights at the current beta.

        With workers writing meanwhile (a node's shared buffer), transitions whose rows a writer
        may have overwritten during their copy are drawn again, as ``ReplayBuffer.sample`` does.

        Raises:
            RuntimeError: writers overwrote the rows drawn ``MAX_REDRAWS`` times in a row.
        """
        p = self.params
        size = p.batch_size * count
        if p.prioritized:
            if self.priorities is None or buffer is not self.buffer:
                raise ValueError("prioritized replay samples the buffer this DQN made (make_buffer)")
            self.priorities.assign_new(buffer.counters)
        counts = buffer.read_counters()
        slices, rows, weight = self._draw(buffer, size, rng, counts)
        batch = n_step_batch(buffer, self.actor.input_names, slices, rows, p.n_steps, self.gamma)
        # the oldest row a transition reads: its first, or the first frame of its stacked observation
        back = (max(buffer.depth.values()) - 1) * buffer.stride if isinstance(buffer, FrameReplayBuffer) else 0
        stale, counts = buffer.overwritten(slices, rows - back, counts)
        redraw = np.flatnonzero(stale)
        for _ in range(MAX_REDRAWS):
            if not len(redraw):
                batch.update({"weight": weight, SAMPLED_SLICE: slices, SAMPLED_ROW: rows})
                return {k: v.reshape((count, p.batch_size) + v.shape[1:]) for k, v in batch.items()}
            s, r, w = self._draw(buffer, len(redraw), rng, counts)
            for k, v in n_step_batch(buffer, self.actor.input_names, s, r, p.n_steps, self.gamma).items():
                batch[k][redraw] = v
            slices[redraw], rows[redraw], weight[redraw] = s, r, w
            stale, counts = buffer.overwritten(s, r - back, counts)
            redraw = redraw[stale]
        raise RuntimeError(f"DQN: writers overwrote the transitions drawn {MAX_REDRAWS} times in a row; the replay "
                           f"buffer's slices ({buffer.slice_capacity} rows each) are too small for their write "
                           "rate: raise buffer_size")

    def _draw(self, buffer: ReplayBuffer, size: int, rng: np.random.Generator, counts: np.ndarray) -> tuple:
        """``size`` n-step window starts (slices, global rows) among the rows held at ``counts``
        (the counters the copy is checked against), and their importance weights."""
        p = self.params
        if not p.prioritized:
            slices, rows = uniform_rows(buffer, p.n_steps, size, rng, counts)
            return slices, rows, np.ones(size, np.float32)
        first, end = window_starts(buffer, p.n_steps, counts)
        valid = buffer.valid if isinstance(buffer, FrameReplayBuffer) else None
        slices, rows, probabilities, smallest = self.priorities.sample(first, end, size, rng, valid)
        beta = p.priority_beta_at(int(counts.sum()))
        return slices, rows, self.priorities.importance_weights(probabilities, smallest, beta)

    # --- update --------------------------------------------------------------------------------
    def _update_step(self, batch: Mapping[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        p = self.params
        next_target = self.q_values(batch, "next_", self.target)
        next_online = self.q_values(batch, "next_") if p.double_q else None
        y = tf.stop_gradient(self.q_target(batch["reward"], batch["discount"], next_target, next_online))
        variables = self.actor.model.trainable_variables
        with tf.GradientTape() as tape:
            q = tf.gather(self.q_values(batch), tf.cast(batch["action"], tf.int32), axis=-1, batch_dims=1)
            td = q - y
            loss = self.td_loss(td, batch["weight"], p.loss, p.huber_delta)
        grads = tape.gradient(loss, variables)
        if p.max_grad_norm is not None:
            grads, norm = tf.clip_by_global_norm(grads, p.max_grad_norm)
        else:
            norm = tf.linalg.global_norm(grads)
        self.actor.optimizer.apply_gradients(zip(grads, variables))
        self.updates.assign_add(1)
        if self.updates % p.target_update_interval == 0:
            self._update_target()
        return tf.stack([loss, tf.reduce_mean(q), tf.reduce_mean(tf.abs(td)), norm]), td

    def _update_target(self) -> None:
        tau = self.params.tau
        for target, online in zip(self.target.weights, self.actor.model.weights):
            target.assign(online if tau == 1.0 else (1.0 - tau) * target + tau * online)

    def _update_many_step(self, batches: Mapping[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        count = tf.shape(batches["reward"])[0]
        metrics = tf.TensorArray(tf.float32, size=count)
        errors = tf.TensorArray(tf.float32, size=count)
        for i in tf.range(count):
            m, td = self._update_step({n: b[i] for n, b in batches.items()})
            metrics, errors = metrics.write(i, m), errors.write(i, td)
        flat = tf.concat([tf.reshape(tf.cast(v, tf.float32), [-1]) for v in self.actor_weight_variables()], 0)
        return metrics.stack(), errors.stack(), flat

    def _tensors(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {n: batch[n] for n in self.train_info.names}

    def _reprioritize(self, batch: Mapping[str, np.ndarray], td: Any) -> None:
        """Give the sampled rows their new TD errors as priorities (prioritized replay only)."""
        if self.priorities is not None and SAMPLED_ROW in batch:
            self.priorities.update(batch[SAMPLED_SLICE], batch[SAMPLED_ROW], np.asarray(td), self.buffer.counters)

    def update(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """One gradient step on ``batch`` (``{column: (B, *s)}``, as ``sample`` gives it), compiled
        on its own (no loop around it); returns the metrics in ``metric_names`` order."""
        metrics, td = self._compiled("update")(self._tensors(batch))
        self._acting_stale = True
        self._reprioritize(batch, td)
        return metrics.numpy()

    def update_many(self, batches: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``k`` gradient steps in one compiled call, one per leading index of ``batches`` (as
        ``sample_many`` gives them). Returns the metrics of each ``(k, len(metric_names))`` and the
        Q-network's weights after the last, flat in ``actor_weights()`` order (float32)."""
        metrics, td, flat = self._compiled("update_many")(self._tensors(batches))
        self._acting_stale = True
        self._reprioritize(batches, td)
        return metrics.numpy(), flat.numpy()

    def update_and_act(self, batch: Mapping[str, np.ndarray], obs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, dict]:
        """``update(batch)`` then ``act(obs)`` with the new weights, in one compiled call."""
        acting = self._acting
        rows = len(obs[self.actor.input_names[0]])
        noise = acting.rng.gumbel(size=(rows, self.num_actions)).astype(np.float32)  # as HostPolicy draws it
        (metrics, td), out = self._compiled("update_act")(self._tensors(batch),
                                                          {n: obs[n] for n in self.actor.input_names}, noise)
        self._acting_stale = True
        self._reprioritize(batch, td)
        return metrics.numpy(), {"action": acting.explore(out["action"].numpy())}

    # --- weights -------------------------------------------------------------------------------
    def actor_weight_variables(self) -> list:
        """What acting reads: the Q-network's weights."""
        return list(self.actor.model.weights)

    def state_groups(self) -> dict[str, list]:
        """Every variable a checkpoint must hold, by group (see ``aquaml.run.checkpoint``): the
        Q-network, its optimizer, the target, the update count and, with prioritized replay,
        the priorities kept in the replay store."""
        groups = model_state_groups(self.models)
        groups["target/actor"] = list(self.target.weights)
        groups["dqn/updates"] = [self.updates]
        if self.priorities is not None:
            groups["replay/priorities"] = [_ArrayState(a, k) for k, a in self.priorities.arrays.items()]
        return groups

    def extra_state(self) -> dict[str, Any]:
        """State that is not a variable: this process's exploration steps and stream (JSON-able)."""
        return {"acting": self._acting.state_dict()}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Restore what ``extra_state`` returned."""
        self._acting.load_state_dict(state["acting"])
        self._acting_stale = True

    def save(self, directory: str) -> None:
        """Write the Q-network's weights (``actor.weights.h5``) and the target's
        (``dqn_state.npz``), each atomically."""
        save_models(directory, self.models, "dqn_state.npz",
                    {f"target/{i}": w for i, w in enumerate(self.target.get_weights())})


class LiveDQNPolicy(LivePolicy):
    """A one-process DQN actor's policy (``DQN.live_policy``): ``DQN.act`` on the weights of the
    DQN's last update, taken into the numpy path again only after an update or a ``sync()``/
    ``load()`` (which the actor calls after each publication: the weights may have changed). The
    noise stream and epsilon steps are the DQN's (``extra_state``), as for every ``LivePolicy``."""

    def __init__(self, dqn: DQN) -> None:
        super().__init__(dqn._acting_now)
        self.dqn = dqn

    def sync(self) -> None:
        self.dqn._acting_stale = True

    def load(self, weights: Sequence[np.ndarray]) -> None:
        self.dqn._acting_stale = True  # a one-process actor's weights are the DQN's own variables
