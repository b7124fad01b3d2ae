"""Proximal Policy Optimization (Schulman et al., 2017) with GAE, for continuous, discrete,
MultiDiscrete (a product of Categoricals) and MultiBinary (a product of Bernoullis) actions.

Reads top to bottom: GAE and the losses (public, so tests check them by hand), the policy, then a
training round over one rollout. No MPI in here: the caller fills the rollout segments and
publishes the weights this returns.

Rollout layout (from ``rollout_info``): every observation name and the same names prefixed
``next_`` (the observation *returned by* the step, also the true final one on truncation),
``sample`` (the policy's draw: a Gaussian sample before clipping, or a category index),
``log_prob`` (of ``sample`` under the policy that acted), ``reward``, ``terminated``, ``truncated``.

A recurrent actor (see ``aquaml.models.recurrent``) trains on sequences: every environment's time series
is cut into chunks of ``sequence_length`` steps (``to_sequences``), and each chunk is replayed from
the state stored with its first step, restarting from the stored (zero) state at every episode
start inside it. Values, advantages and the critic stay per step.
"""
from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from aquaml.algos.base import OnPolicyAlgorithm
from aquaml.algos.params import PPOParameters
from aquaml.buffers.rollout import RolloutBuffer
from aquaml.data import DataInfo, SpecError
from aquaml.models.distributions import (bernoulli_entropy, bernoulli_log_prob, bernoulli_sample,
                                         categorical_entropy, categorical_log_prob, gaussian_entropy,
                                         gaussian_log_prob, multi_categorical_entropy, multi_categorical_log_prob,
                                         multi_categorical_sample)
from aquaml.acting.inference import HostPolicy
from aquaml.models.base import ModelContractError, ModelSpec, action_kind, model_state_groups, save_models
from aquaml.models.defaults import mlp_actor, mlp_critic
from aquaml.models.normalizer import RunningMeanStd
from aquaml.models.recurrent import flatten_time, unroll, weighted_mean


def rollout_info(obs_info: DataInfo, action_info: DataInfo) -> DataInfo:
    """The columns stored for one step of a rollout."""
    kind = action_kind(action_info)
    sample = DataInfo("sample", action_info.shape("action"), np.int64 if kind != "continuous" else np.float32)
    return (obs_info.merge(obs_info.prefixed("next_")).merge(sample)
            .add_info(("log_prob", "reward", "terminated", "truncated"), ((), (), (), ()), np.float32))


def compute_gae(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray, terminated: np.ndarray,
                truncated: np.ndarray, gamma: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimates and returns along axis 0 (time) of one segment.

    ``values[t]`` is V(o_t) and ``next_values[t]`` is V of the observation step t returned: the next
    observation inside an episode, the true final observation on truncation, and the observation
    after the segment's last step. So::

        delta_t = r_t + gamma * (1 - terminated_t) * next_values[t] - values[t]
        A_t     = delta_t + gamma * lam * (1 - done_t) * A_{t+1},   done = terminated or truncated

    with ``A_T = 0``: a truncated step bootstraps from its final observation, a terminated one from
    nothing, and the segment's end from the next observation; no estimate crosses an episode end.
    Returns ``(advantages, returns = advantages + values)``.
    """
    advantages = np.zeros_like(values, dtype=np.float64)
    not_terminated = 1.0 - np.asarray(terminated, np.float64)
    continues = 1.0 - np.maximum(terminated, truncated).astype(np.float64)
    last = np.zeros_like(values[0], dtype=np.float64)
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + gamma * not_terminated[t] * next_values[t] - values[t]
        last = delta + gamma * lam * continues[t] * last
        advantages[t] = last
    return advantages.astype(np.float32), (advantages + values).astype(np.float32)


def to_sequences(columns: Mapping[str, np.ndarray], done: np.ndarray, length: int) -> dict[str, np.ndarray]:
    """Cut rollout columns ``(workers, steps, envs, ...)`` into chunks ``(n_chunks, length, ...)``.

    Each (worker, env) time series is cut into consecutive chunks; when ``steps`` is not a multiple
    of ``length`` its last chunk is padded with zeros. Adds ``mask`` (1.0 for a real step, 0.0 for
    padding) and ``reset`` (True at step t > 0 of a chunk when step t - 1 ended an episode, i.e.
    ``done``, terminated or truncated, was set there).
    """
    w, t, e = done.shape[:3]
    per_series = -(-t // length)
    pad = per_series * length - t

    def cut(a: np.ndarray) -> np.ndarray:
        a = np.swapaxes(a, 1, 2).reshape((w * e, t) + a.shape[3:])  # one row per time series
        if pad:
            a = np.concatenate([a, np.zeros((w * e, pad) + a.shape[2:], a.dtype)], axis=1)
        return a.reshape((w * e * per_series, length) + a.shape[2:])

    out = {k: cut(np.asarray(v)) for k, v in columns.items()}
    out["mask"] = cut(np.ones((w, t, e), np.float32))
    ended = cut(np.asarray(done, bool))
    reset = np.zeros_like(ended)
    reset[:, 1:] = ended[:, :-1]
    out["reset"] = reset
    return out


class PPO(OnPolicyAlgorithm):
    """PPO on an actor (``'actor'``) and a value critic (``'critic'``), or on one shared model.

    The actor's ``action`` output is the mean of a diagonal Gaussian (continuous actions; its
    ``log_std`` output is used when present, otherwise a learned state-independent ``log_std``) or
    the logits of a Categorical (discrete actions). Without a ``'critic'`` model the actor must also
    output ``'value'``; actor and critic then share one model and one optimizer, trained on
    ``policy_loss - ent_coef * entropy + vf_coef * value_loss``. Continuous actions are clipped to
    [-1, 1] (the environment's bounds after rescaling) for the environment only: the unclipped
    sample is what the log-probability and the update see.

    A recurrent actor (one that reads and returns state, e.g. an LSTM's ``hidden1``/``hidden2``)
    trains on chunks of ``sequence_length`` steps of one environment, ``sequences_per_batch``
    chunks per minibatch; its state entries are never normalised. ``act`` returns the next state
    with the action.
    """

    name = "PPO"
    parameters_class = PPOParameters
    required_models = ("actor",)
    optional_models = ("critic",)
    critics_take_action = False
    default_hidden = (64, 64)  # CleanRL's and Stable-Baselines3's sizes
    metric_names = ("losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl",
                    "losses/clip_fraction", "losses/explained_variance", "losses/epochs")

    def __init__(self, models: Mapping[str, ModelSpec], obs_info: DataInfo, action_info: DataInfo,
                 params: PPOParameters) -> None:
        if not isinstance(params, PPOParameters):
            raise TypeError(f"PPO needs PPOParameters, got {type(params).__name__}")
        self.check_action_info(action_info)
        self.params, self.models = params, dict(models)
        self.actor, self.critic = models["actor"], models.get("critic")
        self.shared = self.critic is None
        if self.shared and "value" not in self.actor.output_names:
            raise ModelContractError("PPO needs a value estimate: add a 'critic' model to model_class_dict "
                                     "(input_name of observations, returning (batch, 1)), or make the actor "
                                     "output 'value' too, e.g. output_info = {'action': ..., 'value': (1,)}")
        self.obs_info, self.action_info = obs_info, action_info
        self.kind = action_kind(action_info)
        self.discrete = self.kind != "continuous"  # the actor outputs logits
        self.nvec = tuple(action_info.meta("action").get("nvec", ()))
        self.batch_info = rollout_info(obs_info, action_info)
        self.state_names = self.actor.state_info.names
        self.recurrent = bool(self.state_names)

        self.actor_has_log_std = "log_std" in self.actor.output_names
        self.log_std = None if (self.discrete or self.actor_has_log_std) else keras.Variable(
            np.full(action_info.shape("action"), params.init_log_std, np.float32), name="log_std")

        value_inputs = self.actor.input_names if self.shared else self.critic.input_names
        self.value_inputs = tuple(value_inputs)
        used = tuple(dict.fromkeys(self.actor.input_names + self.value_inputs))
        self.norm_names = tuple(n for n in used if params.normalize_obs and obs_info.dtype(n).kind == "f"
                                and n not in self.state_names)
        self.obs_rms = {n: RunningMeanStd(obs_info.shape(n)) for n in self.norm_names}
        self.norm_mean = {n: keras.Variable(np.zeros(obs_info.shape(n), np.float32), name=f"mean_{n}")
                          for n in self.norm_names}
        self.norm_var = {n: keras.Variable(np.ones(obs_info.shape(n), np.float32), name=f"var_{n}")
                         for n in self.norm_names}

        self.actor.optimizer.build(self._actor_variables())
        if not self.shared:
            self.critic.optimizer.build(self.critic.model.trainable_variables)
        self.noise = tf.random.Generator.from_seed(params.seed + 7919)
        self.rng = np.random.default_rng(params.seed + 1)
        self.rounds_done = 0

        act_sig = [obs_info.select(self.actor.input_names).tensor_specs()]
        self._act_explore = tf.function(lambda obs: self._act(obs, False), input_signature=act_sig)
        self._act_deterministic = tf.function(lambda obs: self._act(obs, True), input_signature=act_sig)
        noise_shape = self._noise_shape(action_info)
        self._act_given_noise = tf.function(lambda obs, noise: self._act(obs, False, noise), input_signature=act_sig + [
            tf.TensorSpec((None,) + noise_shape, tf.float32, name="noise")])
        self._values = tf.function(self._value, input_signature=[obs_info.select(self.value_inputs).tensor_specs()])
        self.minibatch_info = (obs_info.select(used).merge(self.batch_info.select(("sample", "log_prob")))
                               .add_info(("advantage", "return", "value"), ((), (), ()), np.float32))
        self._step = tf.function(self._train_step, input_signature=[self.minibatch_info.tensor_specs()])
        if self.recurrent:  # minibatches of whole chunks (n, sequence_length, ...), see to_sequences
            self.sequence_info = self.minibatch_info.add_info("mask", (), np.float32).add_info("reset", (), np.bool_)
            self._sequence_step = tf.function(self._sequence_train_step, input_signature=[
                self.sequence_info.tensor_specs((None, params.sequence_length))])

    def _noise_shape(self, action_info: DataInfo) -> tuple[int, ...]:
        """Per sample, what the act noise holds: standard normal per action dimension (continuous),
        standard Gumbel per logit (discrete, MultiDiscrete) or two per bit (MultiBinary)."""
        if self.kind == "discrete":
            return (int(action_info.meta("action")["n"]),)
        if self.kind == "multi_discrete":
            return (int(sum(self.nvec)),)
        if self.kind == "multi_binary":
            return (2 * int(np.prod(action_info.shape("action"))),)
        return action_info.shape("action")

    @staticmethod
    def check_action_info(action_info: DataInfo) -> None:
        """Raise SpecError unless the action is continuous (float), one Discrete choice, or a
        one-dimensional MultiDiscrete or MultiBinary."""
        kind, shape = action_kind(action_info), action_info.shape("action")
        if kind == "continuous" and action_info.dtype("action").kind == "f":
            return
        if (kind == "discrete" and shape == ()) or (kind in ("multi_discrete", "multi_binary") and len(shape) == 1):
            return
        raise SpecError(f"PPO needs a continuous (Box) action, one Discrete choice, or a one-dimensional "
                        f"MultiDiscrete or MultiBinary; this environment's action is "
                        f"{action_info.dtype('action').name} of shape {shape} with "
                        f"{action_info.meta('action') or 'no number of choices'}")

    @classmethod
    def default_models(cls, obs_info: DataInfo, action_info: DataInfo, hidden: Sequence[int] | None = None,
                       learning_rate: float | None = None) -> dict[str, Any]:
        """tanh MLPs over every observation name (``default_hidden`` by default): an actor (log_std
        left to the algorithm's state-independent parameter) and a value critic."""
        hidden, lr = tuple(hidden or cls.default_hidden), 3e-4 if learning_rate is None else learning_rate
        return {"actor": mlp_actor(obs_info, action_info, hidden, lr, log_std=False, activation="tanh"),
                "critic": mlp_critic(obs_info, hidden, lr, takes_action=False, activation="tanh")}

    def make_buffer(self, num_slices: int = 1, store: Any = None) -> RolloutBuffer:
        """One rollout segment per worker."""
        return RolloutBuffer(self.batch_info, self.params.rollout_steps, self.params.envs_per_worker,
                             num_slices, store)

    # --- losses, as in the paper ---------------------------------------------------------------
    @staticmethod
    def policy_loss(log_prob: tf.Tensor, old_log_prob: tf.Tensor, advantage: tf.Tensor,
                    clip_range: float, weights: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """``-mean(min(r * A, clip(r, 1 - eps, 1 + eps) * A))`` with ``r = exp(log_prob - old_log_prob)``;
        also returns the fraction of samples whose ratio was clipped (means weighted by ``weights``
        if given)."""
        ratio = tf.exp(log_prob - old_log_prob)
        unclipped = ratio * advantage
        clipped = tf.clip_by_value(ratio, 1.0 - clip_range, 1.0 + clip_range) * advantage
        clip_fraction = weighted_mean(tf.cast(tf.abs(ratio - 1.0) > clip_range, tf.float32), weights)
        return -weighted_mean(tf.minimum(unclipped, clipped), weights), clip_fraction

    @staticmethod
    def value_loss(value: tf.Tensor, old_value: tf.Tensor, returns: tf.Tensor, clip_range_vf: float | None,
                   weights: tf.Tensor | None = None) -> tf.Tensor:
        """``mean((V - R)^2)``; with a clip, ``mean(max((V - R)^2, (V_clip - R)^2))`` where
        ``V_clip = V_old + clip(V - V_old, -c, c)`` (means weighted by ``weights`` if given)."""
        loss = tf.square(value - returns)
        if clip_range_vf is not None:
            clipped = old_value + tf.clip_by_value(value - old_value, -clip_range_vf, clip_range_vf)
            loss = tf.maximum(loss, tf.square(clipped - returns))
        return weighted_mean(loss, weights)

    @staticmethod
    def approx_kl(log_prob: tf.Tensor, old_log_prob: tf.Tensor, weights: tf.Tensor | None = None) -> tf.Tensor:
        """``mean((r - 1) - log r)``: a low-variance, non-negative estimate of KL(old || new)
        (weighted by ``weights`` if given)."""
        log_ratio = log_prob - old_log_prob
        return weighted_mean(tf.exp(log_ratio) - 1.0 - log_ratio, weights)

    # --- policy --------------------------------------------------------------------------------
    def _actor_variables(self) -> list:
        return list(self.actor.model.trainable_variables) + ([] if self.log_std is None else [self.log_std])

    def _normalize(self, obs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        out = dict(obs)
        clip = self.params.obs_clip
        for n in self.norm_names:
            if n in out:
                scaled = (out[n] - self.norm_mean[n]) * tf.math.rsqrt(self.norm_var[n] + 1e-8)
                out[n] = tf.clip_by_value(scaled, -clip, clip)
        return out

    def _actor_outputs(self, obs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        out = self.actor.model(*self.actor.inputs(obs))
        out = dict(zip(self.actor.output_names, out))
        if not self.discrete:
            mean = out["action"]
            log_std = out["log_std"] if self.actor_has_log_std else tf.broadcast_to(self.log_std, tf.shape(mean))
            out["log_std"] = tf.clip_by_value(log_std, self.params.log_std_min, self.params.log_std_max)
        return out

    def log_prob_entropy(self, out: Mapping[str, tf.Tensor], sample: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Log-probability of ``sample`` and the entropy, under the distribution ``out`` describes."""
        logits = out["action"]
        if self.kind == "discrete":
            return categorical_log_prob(sample, logits), categorical_entropy(logits)
        if self.kind == "multi_discrete":
            return (multi_categorical_log_prob(sample, logits, self.nvec),
                    multi_categorical_entropy(logits, self.nvec))
        if self.kind == "multi_binary":
            return bernoulli_log_prob(sample, logits), bernoulli_entropy(logits)
        return gaussian_log_prob(sample, out["action"], out["log_std"]), gaussian_entropy(out["log_std"])

    def _value(self, obs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        return self._value_normalized(self._normalize(obs))

    def _value_normalized(self, obs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """V of already normalised observations (from the critic, or the shared model's ``value``)."""
        if self.shared:
            return tf.reshape(self._actor_outputs(obs)["value"], [-1])
        return tf.reshape(self.critic.model(*self.critic.inputs(obs)), [-1])

    def _act(self, obs: Mapping[str, tf.Tensor], deterministic: bool,
             noise: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """Sample (or, deterministic, the mode) for ``obs``. ``noise``, when given, is the draw:
        standard normal (continuous) or standard Gumbel per choice (discrete); zero gives the mode."""
        out = self._actor_outputs(self._normalize(obs))
        if self.discrete:
            logits = out["action"]
            batch = tf.shape(logits)[0]
            shape = tf.concat([[batch], self._noise_shape(self.action_info)], 0)
            if deterministic:
                noise = tf.zeros(shape)
            elif noise is None:  # Gumbel-max: argmax(logits + Gumbel noise) is a draw from softmax(logits)
                u = self.noise.uniform(shape, minval=1e-12, maxval=1.0)
                noise = -tf.math.log(-tf.math.log(u))
            if self.kind == "multi_discrete":
                sample = multi_categorical_sample(logits, noise, self.nvec)
            elif self.kind == "multi_binary":
                sample = bernoulli_sample(logits, noise)
            else:
                sample = tf.argmax(logits + noise, axis=-1)
            action = sample
        else:
            mean = out["action"]
            if noise is None and not deterministic:
                noise = self.noise.normal(tf.shape(mean))
            sample = mean if deterministic else mean + tf.exp(out["log_std"]) * noise
            action = tf.clip_by_value(sample, -1.0, 1.0)
        log_prob, _ = self.log_prob_entropy(out, sample)
        extra = {k: v for k, v in out.items() if k not in ("action", "log_std", "value")}
        return {"action": action, "sample": sample, "log_prob": log_prob, **extra}

    def deterministic_head(self) -> dict[str, Any]:
        """How ``act(obs, deterministic=True)`` follows from the actor's outputs, as JSON data, for a
        policy rebuilt from the actor's weights alone (``aquaml.run.export``): observations
        normalised with the current statistics and clipped to ``obs_clip``, then the most likely
        choice (``argmax``) or the mean clipped to [-1, 1] (``clip``)."""
        return {"action": "argmax" if self.discrete else "clip", "obs_clip": float(self.params.obs_clip),
                "normalize": {n: {"mean": self.norm_mean[n].numpy().tolist(), "var": self.norm_var[n].numpy().tolist()}
                              for n in self.norm_names}}

    def act(self, obs: Mapping[str, np.ndarray], deterministic: bool = False) -> dict[str, np.ndarray]:
        """For a batch of observations: ``action`` (for the environment), ``sample`` and ``log_prob``,
        and a recurrent actor's next state (``hidden1``, ...)."""
        fn = self._compiled("act_deterministic" if deterministic else "act_explore")
        return {k: v.numpy() for k, v in fn({n: obs[n] for n in self.actor.input_names}).items()}

    def export_act(self, obs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The Gaussian mean clipped to [-1, 1] or the most likely choice (observation
        normalisation included), and a recurrent actor's next state, as TensorFlow ops."""
        out = self._act(obs, True)
        return {"action": out["action"], **{n: out[n] for n in self.state_names}}

    def host_policy(self, seed: int, numpy: bool | None = None) -> HostPolicy:
        """A policy with ``act``'s signature for code that knows when the weights change (worker
        ranks, evaluation): numpy when the actor's graph allows, its own noise stream from
        ``seed``, weights (and normalisation statistics) taken at ``sync()``. See ``aquaml.acting.inference``."""
        return HostPolicy(self._act_given_noise, seed, numpy, self.actor_weight_variables(), self.set_actor_weights,
                          gumbel=self.discrete)

    def values(self, obs: Mapping[str, np.ndarray], chunk: int = 8192) -> np.ndarray:
        """V(obs) for a batch of any size, computed in chunks."""
        fn = self._compiled("values")
        total = len(obs[self.value_inputs[0]])
        return np.concatenate([fn({n: obs[n][i:i + chunk] for n in self.value_inputs}).numpy()
                               for i in range(0, total, chunk)]) if total else np.zeros(0, np.float32)

    # --- training ------------------------------------------------------------------------------
    def _apply(self, optimizer: keras.optimizers.Optimizer, tape: tf.GradientTape, loss: tf.Tensor,
               variables: list) -> None:
        self._apply_gradients(optimizer, tape.gradient(loss, variables), variables)

    def _apply_gradients(self, optimizer: keras.optimizers.Optimizer, grads: list, variables: list) -> None:
        if self.params.max_grad_norm is not None:
            grads, _ = tf.clip_by_global_norm(grads, self.params.max_grad_norm)
        optimizer.apply_gradients(zip(grads, variables))

    def _flat_losses(self, obs: Mapping[str, tf.Tensor], mb: Mapping[str, tf.Tensor],
                     advantage: tf.Tensor) -> dict[str, tf.Tensor]:
        """PPO's losses on a minibatch of single steps (``obs`` normalised), as ``sequence_losses``
        gives them for chunks."""
        p = self.params
        out = self._actor_outputs(obs)
        log_prob, entropy = self.log_prob_entropy(out, mb["sample"])
        pi_loss, clip_fraction = self.policy_loss(log_prob, mb["log_prob"], advantage, p.clip_range)
        entropy = tf.reduce_mean(entropy)
        losses = {"policy_loss": pi_loss, "entropy": entropy, "clip_fraction": clip_fraction,
                  "approx_kl": self.approx_kl(log_prob, mb["log_prob"]), "loss": pi_loss - p.ent_coef * entropy}
        if self.shared:
            losses["value_loss"] = self.value_loss(tf.reshape(out["value"], [-1]), mb["value"], mb["return"],
                                                   p.clip_range_vf)
            losses["loss"] += p.vf_coef * losses["value_loss"]
        return losses

    def _train_step(self, mb: Mapping[str, tf.Tensor]) -> tf.Tensor:
        p = self.params
        advantage = mb["advantage"]
        if p.normalize_advantage:
            mean, var = tf.nn.moments(advantage, axes=[0])
            advantage = (advantage - mean) * tf.math.rsqrt(var + 1e-8)
        obs = self._normalize(mb)
        return self._minibatch_steps(functools.partial(self._flat_losses, obs, mb, advantage),
                                     (obs, mb["value"], mb["return"], None))

    def _minibatch_steps(self, actor_losses: Any, critic_batch: tuple) -> tf.Tensor:
        """The gradient steps on one minibatch: ``update_critic_times`` of a separate critic on
        ``critic_batch`` (observations, old values, returns, weights) and ``update_actor_times`` of
        the actor on ``actor_losses()``, unless the minibatch's KL before them exceeds
        1.5 x ``target_kl`` (Stable-Baselines3's rule: the round ends without the step that would
        overshoot). Returns the metrics of the minibatch before its first step, then 1.0 if the
        steps were taken and 0.0 if not."""
        p = self.params
        variables = self._actor_variables()
        with tf.GradientTape() as tape:
            first = actor_losses()
        grads = tape.gradient(first["loss"], variables)
        proceed = True if p.target_kl is None else first["approx_kl"] <= 1.5 * p.target_kl
        if proceed:  # a tf.cond when target_kl is set
            v_loss = first["value_loss"] if self.shared else self._train_critic(*critic_batch)
            self._apply_gradients(self.actor.optimizer, grads, variables)
            for _ in range(p.update_actor_times - 1):
                with tf.GradientTape() as tape:
                    loss = actor_losses()["loss"]
                self._apply(self.actor.optimizer, tape, loss, variables)
        else:
            v_loss = first["value_loss"] if self.shared else self._critic_loss(*critic_batch)
        return tf.stack([first["policy_loss"], v_loss, first["entropy"], first["approx_kl"], first["clip_fraction"],
                         tf.cast(proceed, tf.float32)])

    def sequence_outputs(self, chunks: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The actor replayed over chunks ``(n, sequence_length, ...)`` of raw observations.

        Each chunk starts from the state stored with its first step and restarts from the stored
        state (zeros, an episode's start) wherever ``chunks['reset']`` is True, so nothing is carried
        across an episode end. Returns the outputs per step, flattened to ``(n * sequence_length, ...)``
        (``log_std`` clipped).
        """
        obs = self._normalize({n: chunks[n] for n in self.actor.input_names})
        outs, _ = unroll(self._actor_outputs, obs, self.state_names, self.params.sequence_length,
                         resets=chunks["reset"])
        return {k: flatten_time(v) for k, v in outs.items()}

    def sequence_losses(self, chunks: Mapping[str, tf.Tensor], critic: bool = True) -> dict[str, tf.Tensor]:
        """PPO's losses on chunks (``to_sequences`` columns plus ``advantage``, ``return``, ``value``),
        every mean taken over real steps only (weighted by ``mask``; advantages normalised over them).

        Returns ``policy_loss``, ``entropy``, ``approx_kl``, ``clip_fraction``, ``value_loss`` (of
        the critic, unless ``critic`` is False with a separate critic, or of the shared model's
        ``value``), ``loss`` (what the actor's optimizer minimises) and ``log_prob`` per step.
        """
        p = self.params
        flat = {k: flatten_time(tf.convert_to_tensor(chunks[k]))
                for k in ("sample", "log_prob", "advantage", "return", "value", "mask")}
        mask = flat["mask"]
        advantage = flat["advantage"]
        if p.normalize_advantage:
            mean = weighted_mean(advantage, mask)
            advantage = (advantage - mean) * tf.math.rsqrt(weighted_mean(tf.square(advantage - mean), mask) + 1e-8)
        out = self.sequence_outputs(chunks)
        log_prob, entropy = self.log_prob_entropy(out, flat["sample"])
        pi_loss, clip_fraction = self.policy_loss(log_prob, flat["log_prob"], advantage, p.clip_range, mask)
        entropy = weighted_mean(entropy, mask)
        losses = {"policy_loss": pi_loss, "entropy": entropy, "clip_fraction": clip_fraction,
                  "approx_kl": self.approx_kl(log_prob, flat["log_prob"], mask), "log_prob": log_prob,
                  "loss": pi_loss - p.ent_coef * entropy}
        if self.shared or critic:
            value = (tf.reshape(out["value"], [-1]) if self.shared else
                     self._value({n: flatten_time(tf.convert_to_tensor(chunks[n])) for n in self.value_inputs}))
            losses["value_loss"] = self.value_loss(value, flat["value"], flat["return"], p.clip_range_vf, mask)
            if self.shared:
                losses["loss"] += p.vf_coef * losses["value_loss"]
        return losses

    def _critic_loss(self, obs: Mapping[str, tf.Tensor], old_value: tf.Tensor, returns: tf.Tensor,
                     weights: tf.Tensor | None = None) -> tf.Tensor:
        """The separate critic's value loss on normalised observations (no step)."""
        return self.value_loss(self._value_normalized(obs), old_value, returns, self.params.clip_range_vf, weights)

    def _train_critic(self, obs: Mapping[str, tf.Tensor], old_value: tf.Tensor, returns: tf.Tensor,
                      weights: tf.Tensor | None = None) -> tf.Tensor:
        """``update_critic_times`` steps of the separate critic on normalised observations; returns
        the last value loss."""
        p = self.params
        for _ in range(p.update_critic_times):
            with tf.GradientTape() as tape:
                v_loss = self._critic_loss(obs, old_value, returns, weights)
                loss = p.vf_coef * v_loss
            self._apply(self.critic.optimizer, tape, loss, self.critic.model.trainable_variables)
        return v_loss

    def _sequence_train_step(self, mb: Mapping[str, tf.Tensor]) -> tf.Tensor:
        critic_batch = None
        if not self.shared:  # the critic is per step: every real step of the chunks is one sample
            obs = self._normalize({n: flatten_time(mb[n]) for n in self.value_inputs})
            critic_batch = (obs, flatten_time(mb["value"]), flatten_time(mb["return"]), flatten_time(mb["mask"]))
        return self._minibatch_steps(functools.partial(self.sequence_losses, mb, critic=False), critic_batch)

    def advantages(self, segments: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Values, advantages and returns of rollout segments ``(workers, steps, envs, ...)``, flattened."""
        p = self.params
        w, t, e = segments["reward"].shape[:3]
        flat = lambda a: a.reshape((w * t * e,) + a.shape[3:])  # noqa: E731
        values = self.values({n: flat(segments[n]) for n in self.value_inputs}).reshape(w, t, e)
        next_values = self.values({n: flat(segments["next_" + n]) for n in self.value_inputs}).reshape(w, t, e)
        time_first = lambda a: np.swapaxes(a, 0, 1)  # noqa: E731  GAE runs along time
        adv, ret = compute_gae(time_first(segments["reward"] * p.reward_scale), time_first(values),
                               time_first(next_values), time_first(segments["terminated"]),
                               time_first(segments["truncated"]), p.gamma, p.gae_lambda)
        return {"advantage": flat(time_first(adv)), "return": flat(time_first(ret)), "value": flat(values)}

    def train(self, segments: Mapping[str, np.ndarray]) -> np.ndarray:
        """One training round on complete rollout segments; returns the metrics in ``metric_names`` order.

        Uses the observation statistics the rollout was collected with, then folds the rollout's
        observations into them (the workers get the new statistics with the new weights).
        """
        p = self.params
        w, t, e = segments["reward"].shape[:3]
        n = w * t * e
        data = {k: segments[k].reshape((n,) + segments[k].shape[3:])
                for k in self.minibatch_info.names if k in segments}
        data.update(self.advantages(segments))
        if p.anneal_lr:
            remaining = max(0.0, 1.0 - self.rounds_done / p.rounds(w))
            for spec in self.models.values():
                spec.optimizer.learning_rate = spec.learning_rate * remaining
        self.rounds_done += 1
        if self.recurrent:
            sums, count, epochs = self._train_sequences(segments, data)
        else:
            sums, count, epochs = self._train_flat(data)
        explained = 1.0 - np.var(data["return"] - data["value"]) / max(np.var(data["return"]), 1e-12)
        self._fold_statistics(data)
        return np.concatenate([sums / max(count, 1), [explained, epochs]])

    def _fold_statistics(self, obs: Mapping[str, np.ndarray]) -> None:
        """Fold observations (rows of every normalised name) into the statistics acting uses."""
        for name in self.norm_names:
            self.obs_rms[name].update(obs[name])
            self.norm_mean[name].assign(self.obs_rms[name].mean.astype(np.float32))
            self.norm_var[name].assign(self.obs_rms[name].var.astype(np.float32))

    def cloning_inputs(self, obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Recorded observations (the actor's inputs, ``(rows, *shape)``) as the actor sees them when
        this PPO acts, for ``aquaml.behaviour_cloning``: with ``normalize_obs``, folded into the
        observation statistics first (as a training round folds in its rollout), then normalised."""
        missing = [n for n in self.norm_names if n not in obs]
        if missing:
            raise SpecError(f"PPO normalises {missing} too (its critic reads them); give every one of "
                            f"{list(self.norm_names)}")
        self._fold_statistics(obs)
        scaled = self._normalize({n: tf.convert_to_tensor(obs[n]) for n in self.norm_names})
        return {n: np.asarray(scaled[n]) if n in scaled else np.asarray(obs[n]) for n in obs}

    def _train_flat(self, data: Mapping[str, np.ndarray]) -> tuple[np.ndarray, int, int]:
        """The epochs of a round over shuffled single steps; returns (summed metrics, minibatches, epochs)."""
        n = len(data["advantage"])
        return self._epochs(self._compiled("step"), data, np.ones(n), self.params.batch_size)

    def _train_sequences(self, segments: Mapping[str, np.ndarray],
                         data: Mapping[str, np.ndarray]) -> tuple[np.ndarray, int, int]:
        """The epochs of a round over shuffled chunks of ``sequence_length`` steps (recurrent actor)."""
        p = self.params
        shape = segments["reward"].shape[:3]
        columns = {k: v.reshape(shape + v.shape[1:]) for k, v in data.items()}
        done = np.maximum(segments["terminated"], segments["truncated"]) > 0
        chunks = to_sequences(columns, done, p.sequence_length)
        return self._epochs(self._compiled("sequence_step"), chunks, chunks["mask"].sum(axis=1),
                            p.sequences_per_batch)

    def _epochs(self, step: Any, columns: Mapping[str, np.ndarray], real: np.ndarray,
                per_batch: int) -> tuple[np.ndarray, int, int]:
        """``update_epochs`` passes over freshly shuffled minibatches of ``per_batch`` units (steps,
        or chunks holding ``real`` steps each), stopping at the minibatch ``target_kl`` holds back;
        returns (summed metrics, minibatches, epochs)."""
        p = self.params
        total = real.sum()
        sums, count, epochs = np.zeros(5), 0, 0
        for _ in range(p.update_epochs):
            epochs += 1
            order = self.rng.permutation(len(real))
            for start in range(0, len(order), per_batch):
                idx = order[start:start + per_batch]
                if real[idx].sum() < 2 and total >= 2:
                    continue  # a one-step minibatch has no advantage statistics to normalise by
                *metrics, stepped = step({k: v[idx] for k, v in columns.items()}).numpy()
                sums += metrics
                count += 1
                if not stepped:  # its KL before the step exceeded 1.5 x target_kl: the round ends here
                    return sums, count, epochs
        return sums, count, epochs

    # --- weights -------------------------------------------------------------------------------
    def actor_weight_variables(self) -> list:
        """What acting needs: actor weights, the global log_std if any, the observation statistics."""
        return (list(self.actor.model.weights) + ([] if self.log_std is None else [self.log_std])
                + [v for n in self.norm_names for v in (self.norm_mean[n], self.norm_var[n])])

    def state_groups(self) -> dict[str, list]:
        """Every variable a checkpoint must hold, by group (see ``aquaml.run.checkpoint``)."""
        groups = model_state_groups(self.models)
        groups["noise"] = [self.noise.state]
        if self.log_std is not None:
            groups["log_std"] = [self.log_std]
        for n in self.norm_names:
            groups[f"obs_norm/{n}"] = [self.norm_mean[n], self.norm_var[n]]
        return groups

    def extra_state(self) -> dict[str, Any]:
        """State that is not a variable: minibatch shuffling RNG, rounds trained, normaliser sums."""
        return {"rng": self.rng.bit_generator.state, "rounds_done": self.rounds_done,
                "obs_rms": {n: rms.state() for n, rms in self.obs_rms.items()}}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.rounds_done = int(state["rounds_done"])
        for n, rms in self.obs_rms.items():
            rms.load(state["obs_rms"][n])

    def save(self, directory: str) -> None:
        """Write every model's weights (``<key>.weights.h5``) and ``ppo_state.npz``, each atomically."""
        state: dict[str, np.ndarray] = {}
        if self.log_std is not None:
            state["log_std"] = self.log_std.numpy()
        for n, rms in self.obs_rms.items():
            state.update({f"obs_rms/{n}/{k}": v for k, v in rms.state().items()})
        save_models(directory, self.models, "ppo_state.npz", state)
