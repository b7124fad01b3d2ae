"""The discriminator of adversarial imitation: its losses, regularisers and rewards, the expert batches
it is trained against, and its training step. No MPI in here: the algorithm that owns it trains it on
the optimizer rank, where the updates run.

A discriminator is an ``RLBaseModel`` returning one score per sample, ``(B, 1)``. What it reads
depends on the objective:

- ``GailObjective`` (Ho & Ermon, 2016): a transition's observation entries and its ``action``
  (float in [-1, 1] for a continuous action; a one-hot float vector for a discrete one). The score
  is a logit, ``D = sigmoid(score)`` the probability that the sample is the expert's.
- ``AmpObjective`` (Peng et al., 2021): a state transition, the observation entries it names and
  their ``next_`` counterparts. The score ``D`` is trained towards +1 on expert transitions and
  -1 on the policy's (least squares).

The functions below are the losses and rewards as the papers write them, public so that tests
check them against hand computations; every mean is over the batch (axis 0).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import tensorflow as tf

from aquaml.data import DataInfo, SpecError
from aquaml.datasets import Trajectories
from aquaml.models.base import ModelContractError, ModelSpec, is_discrete_action

#: What a discriminator reports with every training step, in this order (per-update metrics).
DISCRIMINATOR_METRICS = ("losses/disc_loss", "losses/disc_grad_penalty", "losses/disc_accuracy",
                         "charts/disc_reward", "charts/env_reward")
NEXT = "next_"


# --- losses and regularisers -----------------------------------------------------------------------

def bce_discriminator_loss(expert_logits: tf.Tensor, policy_logits: tf.Tensor) -> tf.Tensor:
    """GAIL's binary cross-entropy over equal halves of expert and policy samples, ``(B,)`` logits each:
    ``0.5 * (mean(-log D(expert)) + mean(-log(1 - D(policy))))`` with ``D = sigmoid(logit)``, computed
    as ``0.5 * (mean(softplus(-expert)) + mean(softplus(policy)))``; ``log 2`` when D cannot tell."""
    return 0.5 * (tf.reduce_mean(tf.nn.softplus(-expert_logits)) + tf.reduce_mean(tf.nn.softplus(policy_logits)))


def least_squares_discriminator_loss(expert_scores: tf.Tensor, policy_scores: tf.Tensor) -> tf.Tensor:
    """AMP's least-squares objective (Peng et al. 2021, eq. 8 without its penalty):
    ``mean((D(expert) - 1)^2) + mean((D(policy) + 1)^2)``."""
    return (tf.reduce_mean(tf.square(expert_scores - 1.0))
            + tf.reduce_mean(tf.square(policy_scores + 1.0)))


def gradient_penalty(score_fn: Callable[[Mapping[str, tf.Tensor]], tf.Tensor],
                     inputs: Mapping[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
    """``mean over the batch of ||d score / d inputs||^2``, the squared gradient norm summed over every
    float input entry (AMP's penalty, taken on expert samples). Returns ``(scores (B,), penalty)``."""
    floats = {k: tf.convert_to_tensor(v) for k, v in inputs.items()}
    watched = [v for v in floats.values() if v.dtype.is_floating]
    with tf.GradientTape() as tape:
        tape.watch(watched)
        scores = score_fn(floats)
        total = tf.reduce_sum(scores)  # each sample's score depends on its own inputs only
    grads = tape.gradient(total, watched)
    per_sample = tf.add_n([tf.reduce_sum(tf.reshape(tf.square(g), [tf.shape(g)[0], -1]), axis=1)
                           for g in grads if g is not None] or [tf.zeros_like(scores)])
    return scores, tf.reduce_mean(per_sample)


def logit_penalty(expert_scores: tf.Tensor, policy_scores: tf.Tensor) -> tf.Tensor:
    """``0.5 * (mean(expert^2) + mean(policy^2))``: keeps the scores from growing without bound."""
    return 0.5 * (tf.reduce_mean(tf.square(expert_scores)) + tf.reduce_mean(tf.square(policy_scores)))


def weight_penalty(variables: list) -> tf.Tensor:
    """The sum of squares of every weight matrix (variables of two or more dimensions; biases are
    left out): L2 weight decay as a loss term."""
    matrices = [tf.reduce_sum(tf.square(v)) for v in variables if len(v.shape) >= 2]
    return tf.add_n(matrices) if matrices else tf.constant(0.0)


def discriminator_loss(data_loss: tf.Tensor, penalty: tf.Tensor, logits_sq: tf.Tensor, weights_sq: tf.Tensor,
                       grad_penalty: float, logit_reg: float, weight_decay: float) -> tf.Tensor:
    """What the discriminator's optimizer minimises: ``data_loss + grad_penalty / 2 * penalty
    + logit_reg * logits_sq + weight_decay * weights_sq`` (AMP writes the penalty's weight as
    ``w_gp / 2``)."""
    return data_loss + 0.5 * grad_penalty * penalty + logit_reg * logits_sq + weight_decay * weights_sq


# --- rewards ---------------------------------------------------------------------------------------

#: GAIL's reward forms (``GailParameters.reward_form``).
GAIL_REWARD_FORMS = ("gail", "airl")


def gail_reward(logits: tf.Tensor, form: str = "gail") -> tf.Tensor:
    """The reward of samples with discriminator logits ``(B,)``, ``D = sigmoid(logit)``:

    - ``'gail'``: ``-log(1 - D) = softplus(logit)``, always positive;
    - ``'airl'``: ``log D - log(1 - D) = logit``, positive where D favours the expert, negative elsewhere.

    Raises:
        ValueError: ``form`` is not one of ``GAIL_REWARD_FORMS``.
    """
    if form == "gail":
        return tf.nn.softplus(logits)
    if form == "airl":
        return tf.identity(logits)
    raise ValueError(f"reward_form must be one of {GAIL_REWARD_FORMS}, got {form!r}")


def amp_reward(scores: tf.Tensor) -> tf.Tensor:
    """AMP's style reward of least-squares scores ``(B,)``: ``max(0, 1 - 0.25 * (D - 1)^2)``, 1 where
    D is sure of the expert (D = 1), 0 at D <= -1."""
    return tf.maximum(0.0, 1.0 - 0.25 * tf.square(scores - 1.0))


# --- objectives: what the discriminator reads and how it scores ------------------------------------

def _discrete_n(action_info: DataInfo) -> int | None:
    return int(action_info.meta("action")["n"]) if is_discrete_action(action_info) else None


class GailObjective:
    """GAIL's discriminator on (observation, action): binary cross-entropy, reward ``-log(1 - D)``
    or ``log D - log(1 - D)`` (``reward_form``)."""

    name = "GAIL"
    reads_action = True

    def __init__(self, reward_form: str = "gail") -> None:
        if reward_form not in GAIL_REWARD_FORMS:
            raise ValueError(f"reward_form must be one of {GAIL_REWARD_FORMS}, got {reward_form!r}")
        self.reward_form = reward_form

    @classmethod
    def from_params(cls, params: Any) -> "GailObjective":
        return cls(params.reward_form)

    @staticmethod
    def view(obs_info: DataInfo, action_info: DataInfo) -> DataInfo:
        """Every observation entry and ``action`` as the discriminator gets it (float32; a discrete
        action of ``n`` choices as a one-hot ``(n,)``)."""
        n = _discrete_n(action_info)
        shape = (n,) if n is not None else action_info.shape("action")
        return obs_info.merge(DataInfo("action", shape, np.float32))

    @staticmethod
    def check_inputs(input_names: tuple[str, ...]) -> None:
        """Raise ModelContractError unless the discriminator reads the action and an observation."""
        if "action" not in input_names or len(input_names) < 2:
            raise ModelContractError(f"discriminator.input_name={input_names} must hold observation names and "
                                     f"'action' (GAIL scores observation-action pairs), e.g. ('obs', 'action')")

    @staticmethod
    def dataset_names(input_names: tuple[str, ...]) -> tuple[str, ...]:
        """The observation entries the expert dataset must hold."""
        return tuple(n for n in input_names if n != "action")

    @staticmethod
    def expert_rows(data: Trajectories) -> dict[str, np.ndarray]:
        """Every recorded step: its observation entries and ``action`` (clipped to [-1, 1] if continuous)."""
        columns = dict(data.obs)
        action = data.columns["action"]
        columns["action"] = action if action.dtype.kind in "iu" else np.clip(action, -1.0, 1.0)
        return columns

    @staticmethod
    def inputs(columns: Mapping[str, Any], input_names: tuple[str, ...], action_info: DataInfo) -> dict[str, Any]:
        """The discriminator's inputs from transition columns (``action`` in the environment's
        convention: floats in [-1, 1], or a choice's index)."""
        n = _discrete_n(action_info)
        out = {k: columns[k] for k in input_names if k != "action"}
        action = columns["action"]
        out["action"] = tf.one_hot(tf.cast(action, tf.int64), n) if n is not None else tf.cast(action, tf.float32)
        return out

    @staticmethod
    def data_loss(expert_scores: tf.Tensor, policy_scores: tf.Tensor) -> tf.Tensor:
        return bce_discriminator_loss(expert_scores, policy_scores)

    def reward(self, scores: tf.Tensor) -> tf.Tensor:
        return gail_reward(scores, self.reward_form)

    @staticmethod
    def accuracy(expert_scores: tf.Tensor, policy_scores: tf.Tensor) -> tf.Tensor:
        """The fraction classified right (D > 0.5 on expert samples, below on the policy's)."""
        return 0.5 * (tf.reduce_mean(tf.cast(expert_scores > 0.0, tf.float32))
                      + tf.reduce_mean(tf.cast(policy_scores < 0.0, tf.float32)))


class AmpObjective:
    """AMP's discriminator on state transitions (o, o'): least squares, reward
    ``max(0, 1 - 0.25 (D - 1)^2)``. The observation entries it reads are the ones its
    ``input_name`` names, each with its ``next_`` counterpart."""

    name = "AMP"
    reads_action = False

    @classmethod
    def from_params(cls, params: Any) -> "AmpObjective":
        return cls()

    @staticmethod
    def view(obs_info: DataInfo, action_info: DataInfo) -> DataInfo:
        """Every observation entry and its ``next_`` counterpart (the observation the step returned)."""
        return obs_info.merge(obs_info.prefixed(NEXT))

    @staticmethod
    def check_inputs(input_names: tuple[str, ...]) -> None:
        """Raise ModelContractError unless each entry the discriminator reads comes with its ``next_`` one."""
        base = [n for n in input_names if not n.startswith(NEXT)]
        missing = [NEXT + n for n in base if NEXT + n not in input_names] + \
                  [n for n in input_names if n.startswith(NEXT) and n[len(NEXT):] not in input_names]
        if not base or missing:
            raise ModelContractError(f"discriminator.input_name={input_names} must name observation entries and "
                                     f"their next_ counterparts (AMP scores transitions o -> o'), e.g. "
                                     f"('obs', 'next_obs'); missing {missing}")

    @staticmethod
    def dataset_names(input_names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(n for n in input_names if not n.startswith(NEXT))

    @staticmethod
    def expert_rows(data: Trajectories) -> dict[str, np.ndarray]:
        """Every recorded transition inside an episode: row t's observation entries and, as ``next_``,
        row t + 1's (the last row of an episode has no recorded successor and is left out)."""
        ends = np.append(data.episode_starts[1:], len(data)) - 1
        keep = np.setdiff1d(np.arange(len(data)), ends)
        columns = {n: a[keep] for n, a in data.obs.items()}
        columns.update({NEXT + n: a[keep + 1] for n, a in data.obs.items()})
        return columns

    @staticmethod
    def inputs(columns: Mapping[str, Any], input_names: tuple[str, ...], action_info: DataInfo) -> dict[str, Any]:
        return {k: columns[k] for k in input_names}

    @staticmethod
    def data_loss(expert_scores: tf.Tensor, policy_scores: tf.Tensor) -> tf.Tensor:
        return least_squares_discriminator_loss(expert_scores, policy_scores)

    @staticmethod
    def reward(scores: tf.Tensor) -> tf.Tensor:
        return amp_reward(scores)

    @staticmethod
    def accuracy(expert_scores: tf.Tensor, policy_scores: tf.Tensor) -> tf.Tensor:
        """The fraction on the right side of 0 (expert above, policy below)."""
        return 0.5 * (tf.reduce_mean(tf.cast(expert_scores > 0.0, tf.float32))
                      + tf.reduce_mean(tf.cast(policy_scores < 0.0, tf.float32)))


# --- expert batches --------------------------------------------------------------------------------

class ExpertSampler:
    """The expert's discriminator inputs, held as (non-trainable) variables, sampled uniformly with
    replacement inside the compiled update by a generator whose state checkpoints hold.

    Args:
        inputs: ``{input name: (N, *shape)}`` as the discriminator reads them.
        seed: seeds the sampling stream.

    Raises:
        ValueError: there are no rows.
    """

    def __init__(self, inputs: Mapping[str, np.ndarray], seed: int) -> None:
        sizes = {len(v) for v in inputs.values()}
        if sizes == {0} or not sizes:
            raise ValueError("the expert dataset holds no samples the discriminator can read")
        self.size = sizes.pop()
        self.columns = {k: tf.Variable(np.asarray(v), trainable=False, name=f"expert_{k}") for k, v in inputs.items()}
        self.generator = tf.random.Generator.from_seed(seed)

    def sample(self, count: tf.Tensor) -> dict[str, tf.Tensor]:
        """``count`` rows, ``{name: (count, *shape)}``."""
        rows = self.generator.uniform(tf.reshape(count, [1]), maxval=self.size, dtype=tf.int64)
        return {k: tf.gather(v, rows) for k, v in self.columns.items()}

    def state(self) -> list:
        """What a checkpoint keeps: the sampling stream (the data come from the file again)."""
        return [self.generator.state]


def expert_inputs(data: Trajectories, objective: Any, input_names: tuple[str, ...],
                  action_info: DataInfo) -> dict[str, np.ndarray]:
    """The discriminator's inputs for every expert sample of ``data`` (numpy, ``(N, *shape)``).

    Raises:
        ValueError: the dataset has no sample (AMP: no two consecutive steps of one episode).
    """
    rows = objective.expert_rows(data)
    if not rows or len(next(iter(rows.values()))) == 0:
        what = "two consecutive steps of one episode" if isinstance(objective, AmpObjective) else "steps"
        raise ValueError(f"the expert dataset holds no {what} ({len(data)} rows in {data.num_episodes} episodes)")
    return {k: np.asarray(v) for k, v in objective.inputs(rows, input_names, action_info).items()}


def first_episodes(data: Trajectories, episodes: int | None, path: str) -> Trajectories:
    """``data`` cut to its first ``episodes`` episodes (all of them for None).

    Raises:
        ValueError: the file holds fewer episodes.
    """
    if episodes is None:
        return data
    if episodes > data.num_episodes:
        raise ValueError(f"expert_episodes={episodes} but {path} holds {data.num_episodes} episodes")
    end = int(data.episode_starts[episodes]) if episodes < data.num_episodes else len(data)
    return Trajectories(data.obs_info, data.action_info, {k: v[:end] for k, v in data.columns.items()},
                        data.episode_starts[:episodes])


# --- the discriminator -----------------------------------------------------------------------------

class Discriminator:
    """A discriminator model, its objective and the expert batches it is trained against.

    Args:
        spec: the built, checked model (``model_class_dict['discriminator']``) and its optimizer.
        objective: ``GailObjective`` or ``AmpObjective``.
        expert: the expert's inputs to sample from.
        grad_penalty, logit_reg, weight_decay: the regularisers' weights (``discriminator_loss``).
    """

    def __init__(self, spec: ModelSpec, objective: Any, expert: ExpertSampler, grad_penalty: float,
                 logit_reg: float, weight_decay: float) -> None:
        self.spec, self.objective, self.expert = spec, objective, expert
        self.grad_penalty, self.logit_reg, self.weight_decay = grad_penalty, logit_reg, weight_decay
        spec.optimizer.build(spec.model.trainable_variables)

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.spec.input_names

    def scores(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """The model's score of each sample, ``(B,)``."""
        return tf.reshape(self.spec.model(*self.spec.inputs(inputs)), [-1])

    def reward(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """The objective's reward of each sample, ``(B,)``, a constant to every optimizer."""
        return tf.stop_gradient(self.objective.reward(self.scores(inputs)))

    def train_step(self, policy_inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """One gradient step on the policy's samples ``{name: (B, *shape)}`` against as many expert
        samples. Returns ``[data loss, gradient penalty (0 when not weighted), accuracy]``."""
        variables = self.spec.model.trainable_variables
        count = tf.shape(policy_inputs[self.input_names[0]])[0]
        expert = self.expert.sample(count)
        with tf.GradientTape() as tape:
            if self.grad_penalty > 0:
                expert_scores, penalty = gradient_penalty(self.scores, expert)
            else:
                expert_scores, penalty = self.scores(expert), tf.constant(0.0)
            policy_scores = self.scores(policy_inputs)
            data_loss = self.objective.data_loss(expert_scores, policy_scores)
            logits_sq = logit_penalty(expert_scores, policy_scores) if self.logit_reg > 0 else tf.constant(0.0)
            weights_sq = weight_penalty(variables) if self.weight_decay > 0 else tf.constant(0.0)
            loss = discriminator_loss(data_loss, penalty, logits_sq, weights_sq, self.grad_penalty,
                                      self.logit_reg, self.weight_decay)
        self.spec.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return tf.stack([data_loss, penalty, self.objective.accuracy(expert_scores, policy_scores)])


def check_discriminator(spec: ModelSpec, objective: Any) -> None:
    """Raise ModelContractError unless the discriminator reads what ``objective`` scores."""
    objective.check_inputs(spec.input_names)


def refuse_recurrent(actor: ModelSpec, algorithm: str) -> None:
    """Raise SpecError for a recurrent actor (imitation here trains feed-forward actors)."""
    if actor.recurrent:
        raise SpecError(f"{algorithm} trains feed-forward actors only; this actor carries recurrent state "
                        f"{actor.state_info.names}")
