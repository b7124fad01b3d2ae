"""Algorithm hyperparameters as dataclasses that reject unknown fields.

``RunParameters`` holds what every algorithm has; ``ReplayParameters`` and ``RolloutParameters``
add their schedule's knobs; an algorithm's class adds its own. The constructors stay flat.

The reference AquaML's names are accepted as aliases so that its tutorial code runs:
``SAC2_parameter(epoch_length=200, n_epochs=10, mini_buffer_size=1000, ...)``.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable


def _check(cond: bool, field: str, expected: str, value: Any) -> None:
    if not cond:
        raise ValueError(f"{field} must be {expected}, got {value!r}")


def _check_ints(params: Any, positive: tuple[str, ...], non_negative: tuple[str, ...]) -> None:
    for name in positive:
        value = getattr(params, name)
        _check(isinstance(value, int) and not isinstance(value, bool) and value > 0, name, "a positive int", value)
    for name in non_negative:
        value = getattr(params, name)
        _check(isinstance(value, int) and not isinstance(value, bool) and value >= 0, name, "an int >= 0", value)


def _check_stall_timeout(value: Any) -> None:
    _check(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0,
           "stall_timeout", "a finite number of seconds >= 0 (0 = never)", value)


def with_aliases(aliases: dict[str, str], derived: Callable[[dict], dict] | None = None):
    """Make a dataclass accept ``aliases`` (reference name -> field) and reject unknown names.

    ``derived`` may turn reference-only arguments (those mapped to ``'*'``) into fields; it gets
    and returns the keyword dict.
    """
    def wrap(cls):
        init = cls.__init__
        valid = [f.name for f in dataclasses.fields(cls)]

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            if args:
                raise TypeError(f"{cls.__name__} takes keyword arguments only (got {len(args)} positional)")
            resolved: dict[str, Any] = {}
            for key, value in kwargs.items():
                name = aliases.get(key, key)
                if name != "*" and name not in valid:
                    raise TypeError(f"{cls.__name__} got an unknown field {key!r}; valid fields are: "
                                    f"{', '.join(valid)} (reference names also accepted: "
                                    f"{', '.join(sorted(aliases))})")
                target = key if name == "*" else name
                if target in resolved:
                    raise TypeError(f"{cls.__name__}: {key!r} and another name both set {target!r}; give one")
                resolved[target] = value
            if derived is not None:
                resolved = derived(resolved)
            init(self, **resolved)

        cls.__init__ = __init__
        cls.aliases = dict(aliases)
        return cls
    return wrap


def _sac_derived(kw: dict) -> dict:
    # The reference counts training in epochs: n_epochs * epoch_length environment steps.
    n_epochs = kw.pop("n_epochs", None)
    if n_epochs is not None:
        _check(isinstance(n_epochs, int) and n_epochs > 0, "n_epochs", "a positive int", n_epochs)
        if "total_steps" in kw:
            raise TypeError("SACParameters: give total_steps or n_epochs (times epoch_length), not both")
        kw["total_steps"] = n_epochs * kw.get("epoch_length", SACParameters.epoch_length)
    update_times = kw.pop("update_times", None)
    if update_times is not None:
        _check(isinstance(update_times, int) and update_times > 0, "update_times", "a positive int",
               update_times)
        if "replay_ratio" in kw:
            raise TypeError("SACParameters: give replay_ratio or update_times (per update_interval), not both")
        kw["replay_ratio"] = update_times / kw.get("update_interval", SACParameters.update_interval)
    return kw


@dataclasses.dataclass(frozen=True)
class RunParameters:
    """What every algorithm's parameters hold: how long to train, where to act, how to report.

    A schedule's knobs are in ``ReplayParameters`` (asynchronous replay) or ``RolloutParameters``
    (synchronous rounds), an algorithm's own in its class; every field means the same in one
    process and under MPI unless its documentation says "Under MPI".
    """

    total_steps: int = 10_000
    """Environment steps to train for, summed over all workers and environments."""
    envs_per_worker: int = 1
    """Environment copies stepped together by each worker (one batched actor call for all)."""
    eval_interval: int = 1_000
    """Environment steps between deterministic evaluations (0 disables them)."""
    calculate_episodes: int = 5
    """Episodes per evaluation."""
    display_interval: int = 1
    """Epochs between progress lines on the console."""
    stall_timeout: float = 300.0
    """Under MPI: seconds the optimizer waits on workers that write nothing before it names the
    silent ranks and aborts the job (a stuck environment step, a lost rank); 0 waits forever."""
    seed: int = 0
    """Seed of every random stream (environments, initial weights, sampling, noise)."""

    def __post_init__(self) -> None:
        _check_ints(self, ("total_steps", "envs_per_worker", "calculate_episodes", "display_interval"),
                    ("eval_interval", "seed"))
        _check_stall_timeout(self.stall_timeout)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ReplayParameters(RunParameters):
    """The asynchronous replay schedule's knobs (``aquaml.schedules.async_replay``): workers store
    transitions, the learner keeps ``replay_ratio`` gradient updates per environment step."""

    epoch_length: int = 1_000
    """Environment steps per epoch: one progress line and one progress.csv row per epoch."""
    buffer_size: int = 1_000_000
    """Replay capacity in transitions, summed over all worker slices."""
    learning_starts: int = 1_000
    """Transitions collected before the first gradient update."""
    random_steps: int | None = None
    """Steps taken with uniform random actions at the start; None means ``learning_starts``."""
    replay_ratio: float = 1.0
    """Gradient updates per environment step."""
    update_interval: int = 1
    """Environment steps between bursts of ``update_interval * replay_ratio`` updates (under MPI:
    steps summed over the workers; they may run ahead until the next burst is due)."""
    max_worker_lead: int = 16
    """Under MPI: environment steps a worker may run ahead of what ``replay_ratio`` allows so far.
    The optimizer then trains ``learning_starts`` plus about ``workers * max_worker_lead`` updates
    behind the step count, where the serial algorithm is ``learning_starts`` behind; 16 keeps that
    gap small and still leaves the optimizer more than ``updates_per_call`` updates due each call."""
    weight_sync_interval: int = 1
    """Under MPI: updates between publications of the actor's weights to the workers (a
    publication happens at the end of a call, see ``updates_per_call``)."""
    updates_per_call: int = 8
    """The most gradient updates the learner runs in one compiled call (fewer when fewer are due).
    The call's batches are sampled together at its start, and under MPI the weights it publishes
    come out of the same call. In one process the last update of a step also computes the next
    action. 1 is one update per call."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_ints(self, ("epoch_length", "buffer_size", "update_interval", "weight_sync_interval",
                           "updates_per_call"), ("learning_starts", "max_worker_lead"))
        _check(self.random_steps is None or (isinstance(self.random_steps, int) and self.random_steps >= 0),
               "random_steps", "None or an int >= 0", self.random_steps)
        _check(self.replay_ratio > 0 and math.isfinite(self.replay_ratio), "replay_ratio",
               "a finite number > 0", self.replay_ratio)

    @property
    def warmup_steps(self) -> int:
        """Steps with uniform random actions."""
        return self.learning_starts if self.random_steps is None else self.random_steps


@dataclasses.dataclass(frozen=True)
class RolloutParameters(RunParameters):
    """The synchronous rollout schedule's knobs (``aquaml.schedules.sync_rollouts``): every worker
    fills a segment of ``rollout_steps`` steps per environment, then the learner trains once."""

    total_steps: int = 100_000
    """Environment steps to train for, summed over all workers and environments."""
    rollout_steps: int = 2_048
    """Steps each environment copy takes per rollout segment (one training round per segment)."""
    eval_interval: int = 10_000
    """Environment steps between deterministic evaluations (0 disables them)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_ints(self, ("rollout_steps",), ())

    @property
    def epoch_length(self) -> int:
        """Steps per logged row: one rollout segment of one worker's environments."""
        return self.rollout_steps * self.envs_per_worker

    def rounds(self, workers: int) -> int:
        """Training rounds: whole segments from each of ``workers`` until ``total_steps`` is reached
        (the last round may overshoot it by less than one round)."""
        return math.ceil(self.total_steps / (self.rollout_steps * self.envs_per_worker * workers))


@with_aliases({"episode_length": "epoch_length", "discount": "gamma", "mini_buffer_size": "learning_starts",
               "n_epochs": "*", "update_times": "*"}, _sac_derived)
@dataclasses.dataclass(frozen=True)
class SACParameters(ReplayParameters):
    """Soft Actor-Critic hyperparameters.

    Reference names: ``episode_length`` = ``epoch_length``, ``discount`` = ``gamma``,
    ``mini_buffer_size`` = ``learning_starts``, ``n_epochs`` sets ``total_steps`` to
    ``n_epochs * epoch_length``, ``update_times`` sets ``replay_ratio`` to
    ``update_times / update_interval``.
    """

    batch_size: int = 256
    """Transitions per gradient update."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak coefficient of the target critics (1 copies the critics every update)."""
    alpha: float = 1.0
    """Entropy temperature: its start value when learned, its value when ``auto_alpha`` is False."""
    auto_alpha: bool = True
    """Learn the temperature towards ``target_entropy``."""
    target_entropy: float | None = None
    """Target policy entropy; None means minus the action dimension."""
    alpha_learning_rate: float = 3e-4
    """Adam learning rate of log(alpha)."""
    log_std_min: float = -20.0
    """Lower clip of the policy's log standard deviation."""
    log_std_max: float = 2.0
    """Upper clip of the policy's log standard deviation."""
    init_log_std: float = 0.0
    """Start value of the learned global log_std, used when the actor outputs none."""
    jit_compile: bool = False
    """Compile the update with XLA (measured: no gain for 256-wide MLPs on CPU, see README)."""
    sequence_length: int = 32
    """Recurrent actors only: steps per replayed sequence (burn-in included)."""
    burn_in: int = 8
    """Recurrent actors only: first steps of each sequence that only warm the state up (no loss).
    A batch then holds ``ceil(batch_size / (sequence_length - burn_in))`` sequences."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_ints(self, ("batch_size", "sequence_length"), ("burn_in",))
        _check(self.burn_in < self.sequence_length, "burn_in", f"below sequence_length={self.sequence_length}",
               self.burn_in)
        _check(self.buffer_size >= self.batch_size, "buffer_size",
               f">= batch_size={self.batch_size} (the transitions one update samples)", self.buffer_size)
        _check(0.0 <= self.gamma <= 1.0, "gamma", "in [0, 1]", self.gamma)
        _check(0.0 < self.tau <= 1.0, "tau", "in (0, 1]", self.tau)
        _check(self.alpha > 0, "alpha", "> 0", self.alpha)
        _check(self.alpha_learning_rate > 0, "alpha_learning_rate", "> 0", self.alpha_learning_rate)
        _check(self.log_std_min < self.log_std_max, "log_std_min",
               f"below log_std_max={self.log_std_max}", self.log_std_min)
        _check(self.target_entropy is None or math.isfinite(self.target_entropy), "target_entropy",
               "None or a finite number", self.target_entropy)

    @property
    def sequences_per_batch(self) -> int:
        """Recurrent actors: sequences per update, so that about ``batch_size`` steps carry loss."""
        return -(-self.batch_size // (self.sequence_length - self.burn_in))


#: The reference AquaML's name for SACParameters.
SAC2_parameter = SACParameters


def _ppo_derived(kw: dict) -> dict:
    # The reference counts training in epochs of epoch_length (= rollout_steps) steps each.
    n_epochs = kw.pop("n_epochs", None)
    if n_epochs is not None:
        _check(isinstance(n_epochs, int) and n_epochs > 0, "n_epochs", "a positive int", n_epochs)
        if "total_steps" in kw:
            raise TypeError("PPOParameters: give total_steps or n_epochs (times epoch_length), not both")
        kw["total_steps"] = n_epochs * kw.get("rollout_steps", PPOParameters.rollout_steps)
    return kw


@with_aliases({"epoch_length": "rollout_steps", "update_times": "update_epochs", "lambada": "gae_lambda",
               "epsilon": "clip_range", "entropy_coeff": "ent_coef", "discount": "gamma",
               "batch_advantage_normalization": "normalize_advantage", "n_epochs": "*"}, _ppo_derived)
@dataclasses.dataclass(frozen=True)
class PPOParameters(RolloutParameters):
    """Proximal Policy Optimization hyperparameters.

    Reference names: ``epoch_length`` = ``rollout_steps``, ``n_epochs`` sets ``total_steps`` to
    ``n_epochs * rollout_steps``, ``update_times`` = ``update_epochs``, ``lambada`` = ``gae_lambda``,
    ``epsilon`` = ``clip_range``, ``entropy_coeff`` = ``ent_coef``, ``batch_advantage_normalization``
    = ``normalize_advantage``; ``update_actor_times``/``update_critic_times`` keep their names.
    """

    batch_size: int = 64
    """Samples per minibatch."""
    update_epochs: int = 10
    """Passes over the rollout per training round, each over freshly shuffled minibatches."""
    update_actor_times: int = 1
    """Actor gradient steps per minibatch."""
    update_critic_times: int = 1
    """Critic gradient steps per minibatch."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE's lambda: 0 is one-step TD, 1 is Monte Carlo (bootstrapped at segment ends and truncations)."""
    clip_range: float = 0.2
    """Clip of the probability ratio in the surrogate objective."""
    clip_range_vf: float | None = None
    """Clip of the value change around the rollout's values in the value loss; None: unclipped."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus."""
    vf_coef: float = 0.5
    """Weight of the value loss when actor and critic share one model and optimizer."""
    max_grad_norm: float | None = 0.5
    """Global gradient-norm clip per optimizer step; None disables it."""
    normalize_advantage: bool = True
    """Normalise advantages to zero mean, unit std within each minibatch."""
    target_kl: float | None = None
    """End a training round at the first minibatch whose approximate KL, measured before its gradient
    step, exceeds 1.5 x this, without taking that step (Stable-Baselines3's rule); None: never."""
    normalize_obs: bool = False
    """Normalise float observations by running mean/std merged from every worker's rollouts."""
    obs_clip: float = 10.0
    """Clip of normalised observations."""
    reward_scale: float = 1.0
    """Factor on rewards before GAE (the value function then learns scaled returns)."""
    anneal_lr: bool = False
    """Decay every model's learning rate linearly to 0 over the training rounds."""
    init_log_std: float = 0.0
    """Start value of the learned state-independent log_std (continuous actions, no log_std output)."""
    log_std_min: float = -20.0
    """Lower clip of the policy's log standard deviation."""
    log_std_max: float = 2.0
    """Upper clip of the policy's log standard deviation."""
    sequence_length: int = 64
    """Recurrent actors only: steps per training sequence; minibatches then hold
    ``max(1, batch_size // sequence_length)`` sequences."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_ints(self, ("batch_size", "update_epochs", "update_actor_times", "update_critic_times",
                           "sequence_length"), ())
        _check(0.0 <= self.gamma <= 1.0, "gamma", "in [0, 1]", self.gamma)
        _check(0.0 <= self.gae_lambda <= 1.0, "gae_lambda", "in [0, 1]", self.gae_lambda)
        _check(self.clip_range > 0, "clip_range", "> 0", self.clip_range)
        _check(self.clip_range_vf is None or self.clip_range_vf > 0, "clip_range_vf", "None or > 0",
               self.clip_range_vf)
        _check(self.ent_coef >= 0, "ent_coef", ">= 0", self.ent_coef)
        _check(self.vf_coef > 0, "vf_coef", "> 0", self.vf_coef)
        _check(self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm", "None or > 0",
               self.max_grad_norm)
        _check(self.target_kl is None or self.target_kl > 0, "target_kl", "None or > 0", self.target_kl)
        _check(self.obs_clip > 0, "obs_clip", "> 0", self.obs_clip)
        _check(self.reward_scale > 0 and math.isfinite(self.reward_scale), "reward_scale",
               "a finite number > 0", self.reward_scale)
        _check(self.log_std_min < self.log_std_max, "log_std_min",
               f"below log_std_max={self.log_std_max}", self.log_std_min)

    @property
    def sequences_per_batch(self) -> int:
        """Recurrent actors: sequences per minibatch, about ``batch_size`` steps."""
        return max(1, self.batch_size // self.sequence_length)


#: The reference AquaML's name for PPOParameters.
PPO_parameter = PPOParameters
