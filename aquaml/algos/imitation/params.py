"""Parameters of adversarial imitation: the expert dataset, the reward mix and the discriminator's
options, beside SAC's or PPO's own. The four classes stay flat dataclasses that reject unknown fields
with the list of valid ones, like the base algorithms' parameters.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from aquaml.algos.imitation.discriminator import GAIL_REWARD_FORMS
from aquaml.algos.params import PPOParameters, SACParameters, with_aliases


def _check(cond: bool, field: str, expected: str, value: Any) -> None:
    if not cond:
        raise ValueError(f"{field} must be {expected}, got {value!r}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class ImitationFields:
    """The fields every adversarial imitation algorithm adds (a mixin of the parameter classes below)."""

    expert: str | None = None
    """Path of the expert dataset (``aquaml.save_data``'s HDF5 file); required. It is read and
    checked against the task's observation (and, for GAIL, action) spec when the algorithm is built,
    before any step."""
    expert_episodes: int | None = None
    """Use only the dataset's first this many episodes; None: all of them."""
    task_reward_weight: float = 0.0
    """Weight of the environment's reward in the reward the policy learns from."""
    style_reward_weight: float = 1.0
    """Weight of the discriminator's reward (AMP's style reward) in the reward the policy learns from."""
    disc_batch_size: int | None = None
    """Policy samples (and as many expert samples) per discriminator step; None: ``batch_size``."""
    grad_penalty: float = 0.0
    """Weight ``w_gp`` of the penalty ``w_gp / 2 * mean ||grad D||^2`` on expert samples (AMP: 10)."""
    logit_reg: float = 0.0
    """Weight of ``0.5 * (mean(score_expert^2) + mean(score_policy^2))`` in the discriminator's loss."""
    disc_weight_decay: float = 0.0
    """Weight of the discriminator's summed squared weight matrices in its loss (L2 weight decay)."""

    def check_imitation_fields(self) -> None:
        """Raise ValueError naming the first field out of range."""
        _check(self.expert is None or (isinstance(self.expert, str) and self.expert != ""), "expert",
               "the path of an HDF5 expert dataset (.h5/.hdf5)", self.expert)
        _check(self.expert_episodes is None or (isinstance(self.expert_episodes, int)
                                                and not isinstance(self.expert_episodes, bool)
                                                and self.expert_episodes > 0),
               "expert_episodes", "None or a positive int", self.expert_episodes)
        _check(self.disc_batch_size is None or (isinstance(self.disc_batch_size, int)
                                                and not isinstance(self.disc_batch_size, bool)
                                                and self.disc_batch_size > 0),
               "disc_batch_size", "None or a positive int", self.disc_batch_size)
        for name in ("task_reward_weight", "style_reward_weight", "grad_penalty", "logit_reg", "disc_weight_decay"):
            value = getattr(self, name)
            _check(_number(value) and value >= 0, name, "a finite number >= 0", value)
        _check(self.task_reward_weight > 0 or self.style_reward_weight > 0, "style_reward_weight",
               "> 0 when task_reward_weight is 0 (the policy would learn from no reward)", self.style_reward_weight)

    def check_replay_batch(self) -> None:
        """On SAC the discriminator's policy samples are (the first rows of) each update's batch."""
        _check(self.disc_batch_size is None or self.disc_batch_size <= self.batch_size, "disc_batch_size",
               f"None or at most batch_size={self.batch_size} (its policy samples come from each update's batch)",
               self.disc_batch_size)

    @property
    def discriminator_batch(self) -> int:
        """Samples of each side per discriminator step."""
        return self.disc_batch_size or self.batch_size


@dataclasses.dataclass(frozen=True)
class GailFields:
    """GAIL's own field."""

    reward_form: str = "gail"
    """``'gail'``: ``-log(1 - D)``; ``'airl'``: ``log D - log(1 - D)`` (see ``gail_reward``)."""

    def check_gail_fields(self) -> None:
        _check(self.reward_form in GAIL_REWARD_FORMS, "reward_form", f"one of {GAIL_REWARD_FORMS}", self.reward_form)


@with_aliases({})
@dataclasses.dataclass(frozen=True)
class GailSACParameters(GailFields, ImitationFields, SACParameters):
    """GAIL on SAC: SAC's parameters, the imitation fields and ``reward_form``. The discriminator
    takes one step per SAC update, on that update's replay batch against as many expert samples."""

    grad_penalty: float = 0.1
    """Weight ``w_gp`` of the penalty ``w_gp / 2 * mean ||grad D||^2`` on expert samples. Without
    it the discriminator memorised a 2,000-step Pendulum dataset and the policy's evaluation return
    fell from -188 (8,000 steps) to -851 (20,000); with 0.1 it held -185 to -190 to 30,000 steps
    (single seeds, docs/imitation.md's "Parameters")."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_imitation_fields()
        self.check_replay_batch()
        self.check_gail_fields()


@with_aliases({})
@dataclasses.dataclass(frozen=True)
class AmpSACParameters(ImitationFields, SACParameters):
    """AMP on SAC: the replay buffer is the policy's own transitions the discriminator's negatives
    come from. Defaults as AMP: task and style rewards weighted 0.5 each, ``grad_penalty`` 10."""

    task_reward_weight: float = 0.5
    """Weight of the environment's reward in the reward the policy learns from."""
    style_reward_weight: float = 0.5
    """Weight of AMP's style reward in the reward the policy learns from."""
    grad_penalty: float = 10.0
    """Weight ``w_gp`` of the penalty ``w_gp / 2 * mean ||grad D||^2`` on expert samples."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_imitation_fields()
        self.check_replay_batch()


@dataclasses.dataclass(frozen=True)
class RolloutDiscriminatorFields:
    """How often the discriminator trains in a PPO round."""

    disc_epochs: int = 1
    """Discriminator passes per round: each is ``ceil(round's steps / disc_batch_size)`` steps."""

    def check_rollout_fields(self) -> None:
        _check(isinstance(self.disc_epochs, int) and not isinstance(self.disc_epochs, bool) and self.disc_epochs > 0,
               "disc_epochs", "a positive int", self.disc_epochs)


@with_aliases({})
@dataclasses.dataclass(frozen=True)
class GailPPOParameters(GailFields, RolloutDiscriminatorFields, ImitationFields, PPOParameters):
    """GAIL on PPO: each round the discriminator trains on the round's steps (shuffled minibatches)
    against expert samples, then the round's rewards are relabelled before GAE."""

    disc_batch_size: int | None = 256
    """Policy samples (and as many expert samples) per discriminator step; None: ``batch_size``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_imitation_fields()
        self.check_rollout_fields()
        self.check_gail_fields()


@with_aliases({})
@dataclasses.dataclass(frozen=True)
class AmpPPOParameters(RolloutDiscriminatorFields, ImitationFields, PPOParameters):
    """AMP on PPO: each round's transitions join a replay of the policy's own transitions, from which
    the discriminator's negatives are drawn. Defaults as AMP: rewards weighted 0.5 each, ``grad_penalty`` 10."""

    task_reward_weight: float = 0.5
    """Weight of the environment's reward in the reward the policy learns from."""
    style_reward_weight: float = 0.5
    """Weight of AMP's style reward in the reward the policy learns from."""
    grad_penalty: float = 10.0
    """Weight ``w_gp`` of the penalty ``w_gp / 2 * mean ||grad D||^2`` on expert samples."""
    disc_batch_size: int | None = 256
    """Policy samples (and as many expert samples) per discriminator step; None: ``batch_size``."""
    policy_replay_size: int = 100_000
    """The policy's transitions kept for the discriminator's negatives (the newest ones)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_imitation_fields()
        self.check_rollout_fields()
        _check(isinstance(self.policy_replay_size, int) and not isinstance(self.policy_replay_size, bool)
               and self.policy_replay_size > 0, "policy_replay_size", "a positive int", self.policy_replay_size)
