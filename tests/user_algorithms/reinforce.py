"""REINFORCE (Williams, 1992) as a user's own algorithm: written outside aquaml against its contract,
registered by name, run by aquaml's synchronous rollout schedule in one process and under MPI.

    import reinforce                       # registers "reinforce"
    RLTaskStarter("CartPole-v1", {"actor": Actor}, algo="reinforce",
                  algo_hyperparameter=reinforce.ReinforceParameters(total_steps=30_000))

or ``aquaml train --import reinforce --algo reinforce --env CartPole-v1``. Discrete actions only:
the actor outputs logits; each round takes one gradient step on ``-mean(log pi(a_t|o_t) * G_t)``
with ``G_t`` the discounted return to the end of the episode within the segment, normalised.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf

import aquaml
from aquaml.acting.inference import HostPolicy
from aquaml.algos.base import OnPolicyAlgorithm
from aquaml.algos.params import RolloutParameters
from aquaml.buffers.rollout import RolloutBuffer
from aquaml.data import DataInfo, SpecError
from aquaml.models.base import is_discrete_action, model_state_groups, save_models
from aquaml.models.defaults import mlp_actor
from aquaml.models.distributions import categorical_entropy, categorical_log_prob


@dataclasses.dataclass(frozen=True)
class ReinforceParameters(RolloutParameters):
    """REINFORCE's own parameters, beside the rollout schedule's (``rollout_steps``...)."""

    rollout_steps: int = 500
    """Steps each environment copy takes per round."""
    gamma: float = 0.99
    """Discount factor."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma!r}")


def returns_to_go(rewards: np.ndarray, done: np.ndarray, gamma: float) -> np.ndarray:
    """``G_t = r_t + gamma * (1 - done_t) * G_{t+1}`` along axis 1 (time) of ``(W, T, E)`` arrays,
    0 after the segment's last step."""
    out = np.zeros_like(rewards, dtype=np.float32)
    running = np.zeros(rewards.shape[:1] + rewards.shape[2:], np.float32)
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * (1.0 - done[:, t]) * running
        out[:, t] = running
    return out


@aquaml.register_algorithm("reinforce")
class Reinforce(OnPolicyAlgorithm):
    """Monte Carlo policy gradient on one actor with a Categorical over its logits."""

    name = "REINFORCE"
    parameters_class = ReinforceParameters
    required_models = ("actor",)
    metric_names = ("losses/policy_loss", "losses/entropy")
    default_hidden = (64, 64)

    def __init__(self, models: Mapping[str, Any], obs_info: DataInfo, action_info: DataInfo,
                 params: ReinforceParameters) -> None:
        self.check_action_info(action_info)
        self.params, self.models, self.actor = params, dict(models), models["actor"]
        self.obs_info, self.action_info = obs_info, action_info
        self.batch_info = (obs_info.merge(DataInfo("action", (), np.int64))
                           .add_info(("reward", "terminated", "truncated"), ((), (), ()), np.float32))
        self.noise = tf.random.Generator.from_seed(params.seed + 7919)
        self.actor.optimizer.build(self.actor.model.trainable_variables)
        obs_spec = [obs_info.select(self.actor.input_names).tensor_specs()]
        n = action_info.meta("action")["n"]
        self._act_given_noise = tf.function(lambda obs, noise: self._act(obs, noise), input_signature=obs_spec + [
            tf.TensorSpec((None, n), tf.float32, name="noise")])
        self._export = tf.function(self.export_act, input_signature=obs_spec)
        self._step = tf.function(self._train_step, input_signature=[
            obs_info.select(self.actor.input_names).tensor_specs(),
            tf.TensorSpec((None,), tf.int64), tf.TensorSpec((None,), tf.float32)])

    @staticmethod
    def check_action_info(action_info: DataInfo) -> None:
        if not (is_discrete_action(action_info) and action_info.shape("action") == ()):
            raise SpecError("REINFORCE here handles one Discrete action only")

    @classmethod
    def default_models(cls, obs_info: DataInfo, action_info: DataInfo, hidden: Sequence[int] | None = None,
                       learning_rate: float | None = None) -> dict[str, Any]:
        return {"actor": mlp_actor(obs_info, action_info, tuple(hidden or cls.default_hidden),
                                   1e-2 if learning_rate is None else learning_rate, log_std=False,
                                   activation="tanh")}

    def make_buffer(self, num_slices: int = 1, store: Any = None) -> RolloutBuffer:
        return RolloutBuffer(self.batch_info, self.params.rollout_steps, self.params.envs_per_worker,
                             num_slices, store)

    def _logits(self, obs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        return self.actor.model(*self.actor.inputs(obs))[0]

    def _act(self, obs: Mapping[str, tf.Tensor], noise: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"action": tf.argmax(self._logits(obs) + noise, axis=-1)}  # Gumbel-max sampling

    def act(self, obs: Mapping[str, np.ndarray], deterministic: bool = False) -> dict[str, np.ndarray]:
        names = {k: obs[k] for k in self.actor.input_names}
        if deterministic:
            return {k: v.numpy() for k, v in self._export(names).items()}
        shape = (len(next(iter(names.values()))), self.action_info.meta("action")["n"])
        u = self.noise.uniform(shape, minval=1e-12, maxval=1.0)
        return {k: v.numpy() for k, v in self._act_given_noise(names, -tf.math.log(-tf.math.log(u))).items()}

    def export_act(self, obs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {"action": tf.argmax(self._logits(obs), axis=-1)}

    def host_policy(self, seed: int) -> HostPolicy:
        return HostPolicy(self._act_given_noise, seed, None, self.actor_weight_variables(), self.set_actor_weights,
                          gumbel=True)

    def actor_weight_variables(self) -> list:
        return list(self.actor.model.weights)

    def _train_step(self, obs: Mapping[str, tf.Tensor], action: tf.Tensor, returns: tf.Tensor) -> tf.Tensor:
        variables = self.actor.model.trainable_variables
        with tf.GradientTape() as tape:
            logits = self._logits(obs)
            loss = -tf.reduce_mean(categorical_log_prob(action, logits) * returns)
        self.actor.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return tf.stack([loss, tf.reduce_mean(categorical_entropy(logits))])

    def train(self, segments: Mapping[str, np.ndarray]) -> np.ndarray:
        done = np.maximum(segments["terminated"], segments["truncated"])
        returns = returns_to_go(segments["reward"], done, self.params.gamma).reshape(-1)
        returns = (returns - returns.mean()) / (returns.std() + 1e-8)
        n = returns.shape[0]
        obs = {k: segments[k].reshape((n,) + segments[k].shape[3:]) for k in self.actor.input_names}
        return self._step(obs, segments["action"].reshape(n).astype(np.int64), returns).numpy()

    def state_groups(self) -> dict[str, list]:
        return {**model_state_groups(self.models), "noise": [self.noise.state]}

    def save(self, directory: str) -> None:
        save_models(directory, self.models, "reinforce_state.npz", {})
