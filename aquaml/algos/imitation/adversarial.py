"""Adversarial imitation on SAC and on PPO: the base algorithm unchanged, its reward relabelled by a
discriminator trained inside its update. No MPI in here: the runtime runs these through the same
schedules as SAC and PPO, and the discriminator trains where the updates run (the optimizer rank).

- ``AdversarialSAC`` (asynchronous replay): every update samples a replay batch as SAC does; the
  discriminator takes one step on that batch's transitions against as many expert samples, then
  the batch's reward is recomputed with the updated discriminator and SAC updates on it. The
  replay keeps the environment's reward, so both are logged (``charts/env_reward`` and
  ``charts/disc_reward``, per sampled step).
- ``AdversarialPPO`` (synchronous rollouts): each round the discriminator trains first, then the
  round's rewards are relabelled (a copy; the rollout buffer keeps the environment's) and PPO
  computes GAE and trains on them.

The reward the policy learns from is ``task_reward_weight * r_env + style_reward_weight * r_D``.

Terminations: a terminated transition's target is its relabelled reward alone (SAC's target and
GAE do not bootstrap through a termination), as if the episode then stayed in an absorbing state
worth 0. With ``-log(1 - D) > 0`` that rewards staying alive (an episode that ends early forgoes
positive rewards); ``log D - log(1 - D)`` can be negative and lets ending be preferred. A learned
absorbing state's value (Kostrikov et al., 2019) is not modelled; truncations bootstrap as usual.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import tensorflow as tf

from aquaml.algos.imitation.discriminator import (DISCRIMINATOR_METRICS, Discriminator, ExpertSampler,
                                                  check_discriminator, expert_inputs, first_episodes,
                                                  refuse_recurrent)
from aquaml.algos.ppo import PPO
from aquaml.algos.sac import SAC
from aquaml.data import DataInfo
from aquaml.datasets import Trajectories, load_data
from aquaml.models.base import ModelSpec, is_discrete_action
from aquaml.models.defaults import mlp_critic

#: Seed offsets of the imitation streams, apart from the base algorithms' own.
EXPERT_SEED, SHUFFLE_SEED, REPLAY_SEED = 15_485_863, 2, 32_452_843
#: Samples per call when scoring a whole round.
REWARD_CHUNK = 8192
DISC_CONSOLE = (("losses/disc_loss", "disc_loss", ".3g"), ("charts/disc_reward", "disc_reward", ".3g"))


def load_expert(params: Any, obs_info: DataInfo, action_info: DataInfo | None, algorithm: str) -> Trajectories:
    """The expert dataset ``params.expert``, checked against the entries the discriminator reads
    (``obs_info``) and, when given, the task's ``action_info``; cut to ``params.expert_episodes``.

    Raises:
        ValueError: no path is given, or the file is not a dataset or holds too few episodes.
        FileNotFoundError: there is no file at the path.
        aquaml.SpecError: the file's observations or action differ from the task's.
    """
    if params.expert is None:
        raise ValueError(f"expert: {algorithm} learns from an expert dataset; give expert='path.h5' (a file "
                         "written by aquaml.save_data; on the command line --expert FILE)")
    data = load_data(params.expert, obs_info=obs_info, action_info=action_info)
    return first_episodes(data, params.expert_episodes, params.expert)


def build_discriminator(spec: ModelSpec, objective: Any, params: Any, obs_info: DataInfo, action_info: DataInfo,
                        algorithm: str) -> Discriminator:
    """The discriminator of ``spec`` on ``objective``, with its expert samples read from ``params.expert``.

    Raises:
        aquaml.ModelContractError: the model does not read what the objective scores.
        (and what ``load_expert`` raises)
    """
    check_discriminator(spec, objective)
    needed = obs_info.select(objective.dataset_names(spec.input_names))
    data = load_expert(params, needed, action_info if objective.reads_action else None, algorithm)
    inputs = expert_inputs(data, objective, spec.input_names, action_info)
    return Discriminator(spec, objective, ExpertSampler(inputs, params.seed + EXPERT_SEED), params.grad_penalty,
                         params.logit_reg, params.disc_weight_decay)


def default_discriminator(view: DataInfo, hidden: Sequence[int], learning_rate: float, activation: str) -> Any:
    """An MLP over every entry of ``view`` (``GailObjective.view`` or ``AmpObjective.view``), one score out."""
    return mlp_critic(view, hidden, learning_rate, takes_action=False, activation=activation)


def mixed_reward(params: Any, env_reward: Any, disc_reward: Any) -> Any:
    """``task_reward_weight * env_reward + style_reward_weight * disc_reward``."""
    return params.task_reward_weight * env_reward + params.style_reward_weight * disc_reward


class DiscriminatorModels:
    """What an adversarial algorithm adds to its base algorithm's models: the discriminator reads
    what its ``objective_class`` scores, and its default is an MLP of the base's ``default_hidden``
    widths with ``discriminator_activation`` (the base's own: ReLU for SAC, tanh for PPO)."""

    objective_class: ClassVar[type]
    discriminator_activation: ClassVar[str]

    @classmethod
    def model_view(cls, key: str, obs_info: DataInfo, action_info: DataInfo) -> DataInfo | None:
        """The discriminator's view; every other model is the base algorithm's."""
        return cls.objective_class.view(obs_info, action_info) if key == "discriminator" else None

    @classmethod
    def default_models(cls, obs_info: DataInfo, action_info: DataInfo, hidden: Sequence[int] | None = None,
                       learning_rate: float | None = None) -> dict[str, Any]:
        """The base algorithm's default models and an MLP discriminator of the same size."""
        models = super().default_models(obs_info, action_info, hidden, learning_rate)
        models["discriminator"] = default_discriminator(cls.objective_class.view(obs_info, action_info),
                                                        tuple(hidden or cls.default_hidden),
                                                        3e-4 if learning_rate is None else learning_rate,
                                                        cls.discriminator_activation)
        return models


class AdversarialSAC(DiscriminatorModels, SAC):
    """SAC whose every update first trains the discriminator on the update's replay batch, then
    learns from the batch's reward relabelled by it. Subclasses set ``name``, ``parameters_class``
    and ``objective_class`` (``GailObjective`` or ``AmpObjective``)."""

    discriminator_activation = "relu"
    required_models = SAC.required_models + ("discriminator",)
    metric_names = SAC.metric_names + DISCRIMINATOR_METRICS
    console_metrics = SAC.console_metrics + DISC_CONSOLE

    def __init__(self, models: Mapping[str, ModelSpec], obs_info: DataInfo, action_info: DataInfo,
                 params: Any) -> None:
        if not isinstance(params, self.parameters_class):
            raise TypeError(f"{self.name} needs {self.parameters_class.__name__}, got {type(params).__name__}")
        refuse_recurrent(models["actor"], self.name)
        super().__init__(models, obs_info, action_info, params)
        self.objective = self.objective_class.from_params(params)
        self.discriminator = build_discriminator(models["discriminator"], self.objective, params, obs_info,
                                                 action_info, self.name)

    def _update_step(self, batch: Mapping[str, tf.Tensor]) -> tf.Tensor:
        disc = self.discriminator
        inputs = self.objective.inputs(batch, disc.input_names, self.action_info)
        rows = self.params.discriminator_batch
        disc_metrics = disc.train_step({k: v[:rows] for k, v in inputs.items()})
        disc_reward = disc.reward(inputs)
        learned = dict(batch, reward=mixed_reward(self.params, batch["reward"], disc_reward))
        metrics = super()._update_step(learned)
        return tf.concat([metrics, disc_metrics,
                          tf.stack([tf.reduce_mean(disc_reward), tf.reduce_mean(batch["reward"])])], 0)

    def state_groups(self) -> dict[str, list]:
        """SAC's variables (the discriminator's weights and optimizer among the models') and the
        expert sampling stream."""
        return {**super().state_groups(), "expert_sampler": self.discriminator.expert.state()}


class AdversarialPPO(DiscriminatorModels, PPO):
    """PPO whose every round first trains the discriminator, then learns from the round's rewards
    relabelled by it (before GAE). Subclasses set ``name``, ``parameters_class`` and
    ``objective_class``, and may change where the discriminator's negatives come from
    (``train_discriminator``)."""

    discriminator_activation = "tanh"
    required_models = ("actor", "discriminator")
    optional_models = ("critic",)
    metric_names = PPO.metric_names + DISCRIMINATOR_METRICS

    def __init__(self, models: Mapping[str, ModelSpec], obs_info: DataInfo, action_info: DataInfo,
                 params: Any) -> None:
        if not isinstance(params, self.parameters_class):
            raise TypeError(f"{self.name} needs {self.parameters_class.__name__}, got {type(params).__name__}")
        refuse_recurrent(models["actor"], self.name)
        super().__init__(models, obs_info, action_info, params)
        self.objective = self.objective_class.from_params(params)
        self.discriminator = build_discriminator(models["discriminator"], self.objective, params, obs_info,
                                                 action_info, self.name)
        view = self.objective.view(obs_info, action_info).select(self.discriminator.input_names)
        self.disc_info = view
        signature = [view.tensor_specs()]
        self._disc_step = tf.function(self.discriminator.train_step, input_signature=signature)
        self._disc_reward = tf.function(self.discriminator.reward, input_signature=signature)
        self.disc_rng = np.random.default_rng(params.seed + SHUFFLE_SEED)

    def policy_columns(self, segments: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A round's steps flattened to ``(W * T * E, ...)``: observations, ``next_`` observations and
        ``action`` as the environment got it (the sample clipped to [-1, 1], or the choice)."""
        n = segments["reward"].size
        names = [k for k in self.obs_info.names] + ["next_" + k for k in self.obs_info.names]
        columns = {k: segments[k].reshape((n,) + segments[k].shape[3:]) for k in names}
        sample = segments["sample"].reshape((n,) + segments["sample"].shape[3:])
        columns["action"] = sample if is_discrete_action(self.action_info) else np.clip(sample, -1.0, 1.0)
        return columns

    def discriminator_inputs(self, segments: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """What the discriminator reads of each step of a round, ``{name: (W * T * E, *shape)}``."""
        inputs = self.objective.inputs(self.policy_columns(segments), self.discriminator.input_names,
                                       self.action_info)
        return {k: np.asarray(v, self.disc_info.dtype(k)) for k, v in inputs.items()}

    def train_discriminator(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """``disc_epochs`` passes over the round's steps in shuffled minibatches of ``disc_batch_size``;
        returns the mean of their metrics."""
        batch = self.params.discriminator_batch
        count = len(next(iter(inputs.values())))
        sums, steps = np.zeros(3), 0
        for _ in range(self.params.disc_epochs):
            order = self.disc_rng.permutation(count)
            for start in range(0, count, batch):
                rows = order[start:start + batch]
                sums += self._disc_step({k: v[rows] for k, v in inputs.items()}).numpy()
                steps += 1
        return sums / steps

    def disc_rewards(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The discriminator's reward of every step, ``(W * T * E,)`` float32."""
        count = len(next(iter(inputs.values())))
        return np.concatenate([self._disc_reward({k: v[i:i + REWARD_CHUNK] for k, v in inputs.items()}).numpy()
                               for i in range(0, count, REWARD_CHUNK)]).astype(np.float32)

    def train(self, segments: Mapping[str, np.ndarray]) -> np.ndarray:
        """Train the discriminator on the round, relabel a copy of its rewards, then PPO's round on
        them; returns PPO's metrics followed by the discriminator's (``metric_names`` order)."""
        inputs = self.discriminator_inputs(segments)
        disc_metrics = self.train_discriminator(inputs)
        env_reward = segments["reward"]
        disc_reward = self.disc_rewards(inputs).reshape(env_reward.shape)
        learned = {**segments, "reward": mixed_reward(self.params, env_reward, disc_reward).astype(np.float32)}
        metrics = super().train(learned)
        return np.concatenate([metrics, disc_metrics, [disc_reward.mean(), env_reward.mean()]])

    def state_groups(self) -> dict[str, list]:
        """PPO's variables (the discriminator's weights and optimizer among the models') and the
        expert sampling stream."""
        return {**super().state_groups(), "expert_sampler": self.discriminator.expert.state()}

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "disc_rng": self.disc_rng.bit_generator.state}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        super().load_extra_state(state)
        self.disc_rng.bit_generator.state = state["disc_rng"]
