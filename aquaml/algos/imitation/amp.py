"""Adversarial motion priors (Peng et al., 2021) on SAC and on PPO.

A least-squares discriminator ``D(o, o')`` scores state transitions of the observation entries it
names (``input_name = ('obs', 'next_obs')``): +1 for the expert's (an HDF5 dataset, ``expert=``;
actions are not needed), -1 for the policy's. The policy learns from
``task_reward_weight * r_env + style_reward_weight * max(0, 1 - 0.25 (D - 1)^2)``. The
discriminator's negatives are the policy's own earlier transitions: SAC's replay buffer, or for
PPO a replay of the newest ``policy_replay_size`` transitions of past rounds (``TransitionReplay``).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import tensorflow as tf

from aquaml.algos.imitation.adversarial import REPLAY_SEED, AdversarialPPO, AdversarialSAC
from aquaml.algos.imitation.discriminator import AmpObjective
from aquaml.algos.imitation.params import AmpPPOParameters, AmpSACParameters
from aquaml.data import DataInfo


class TransitionReplay:
    """The newest ``capacity`` rows of ``info``'s columns, as (non-trainable) variables, so that
    checkpoints hold them with the algorithm's other variables; sampled uniformly with replacement
    inside a compiled step.

    Args:
        info: the columns (what the discriminator reads of a transition).
        capacity: rows kept.
        seed: seeds the sampling stream.
    """

    def __init__(self, info: DataInfo, capacity: int, seed: int) -> None:
        self.capacity = int(capacity)
        self.columns = {k: tf.Variable(tf.zeros((self.capacity,) + info.shape(k), tf.as_dtype(info.dtype(k))),
                                       trainable=False, name=f"policy_replay_{k}") for k in info.names}
        self.added = tf.Variable(0, dtype=tf.int64, trainable=False, name="policy_replay_added")
        self.generator = tf.random.Generator.from_seed(seed)

    def add(self, rows: Mapping[str, np.ndarray]) -> None:
        """Append ``{column: (n, *shape)}``, overwriting the oldest rows once full."""
        count = len(next(iter(rows.values())))
        keep = min(count, self.capacity)
        slots = (int(self.added.numpy()) + count - keep + np.arange(keep)) % self.capacity
        for k, variable in self.columns.items():
            variable.scatter_nd_update(slots[:, None], np.asarray(rows[k])[count - keep:])
        self.added.assign_add(count)

    def __len__(self) -> int:
        return int(min(int(self.added.numpy()), self.capacity))

    def sample(self, count: int) -> dict[str, tf.Tensor]:
        """``count`` rows, ``{column: (count, *shape)}`` (call after the first ``add``)."""
        filled = tf.minimum(self.added, self.capacity)
        rows = self.generator.uniform([count], maxval=filled, dtype=tf.int64)
        return {k: tf.gather(v, rows) for k, v in self.columns.items()}

    def state(self) -> list:
        """What a checkpoint keeps: every row, the count added and the sampling stream."""
        return list(self.columns.values()) + [self.added, self.generator.state]


class AmpSAC(AdversarialSAC):
    """AMP on SAC: models ``actor``, ``qf1``, ``qf2`` and ``discriminator`` (reading observation
    entries and their ``next_`` counterparts); the negatives are each update's replay batch."""

    name = "AMP-SAC"
    parameters_class = AmpSACParameters
    objective_class = AmpObjective


class AmpPPO(AdversarialPPO):
    """AMP on PPO: models ``actor``, ``discriminator`` and optionally ``critic``. Each round's
    transitions join the policy replay first; the discriminator then takes ``disc_epochs`` passes'
    worth of steps (``ceil(round steps / disc_batch_size)`` each), every one on negatives drawn
    from the replay against as many expert transitions."""

    name = "AMP-PPO"
    parameters_class = AmpPPOParameters
    objective_class = AmpObjective

    def __init__(self, models: Mapping[str, Any], obs_info: DataInfo, action_info: DataInfo,
                 params: AmpPPOParameters) -> None:
        super().__init__(models, obs_info, action_info, params)
        self.policy_replay = TransitionReplay(self.disc_info, params.policy_replay_size, params.seed + REPLAY_SEED)
        batch = params.discriminator_batch
        self._disc_replay_step = tf.function(lambda: self.discriminator.train_step(self.policy_replay.sample(batch)))

    def train_discriminator(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Add the round's transitions to the policy replay, then train on negatives drawn from it;
        returns the mean of the steps' metrics."""
        self.policy_replay.add(inputs)
        count = len(next(iter(inputs.values())))
        steps = self.params.disc_epochs * -(-count // self.params.discriminator_batch)
        return np.mean([self._disc_replay_step().numpy() for _ in range(steps)], axis=0)

    def state_groups(self) -> dict[str, list]:
        """AdversarialPPO's groups and the policy replay."""
        return {**super().state_groups(), "policy_replay": self.policy_replay.state()}
