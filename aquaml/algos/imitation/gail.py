"""Generative adversarial imitation learning (Ho & Ermon, 2016) on SAC and on PPO.

A discriminator ``D(o, a)`` learns to tell the expert's observation-action pairs (an HDF5 dataset,
``expert=``) from the policy's; the policy learns from ``-log(1 - D)`` (or the AIRL form
``log D - log(1 - D)``, ``reward_form='airl'``), mixed with the environment's reward by
``task_reward_weight`` (0 by default: the environment's reward is then only logged). See
``aquaml.algos.imitation.adversarial`` for where the relabelling happens and how terminations count.
"""
from __future__ import annotations

from aquaml.algos.imitation.adversarial import AdversarialPPO, AdversarialSAC
from aquaml.algos.imitation.discriminator import GailObjective
from aquaml.algos.imitation.params import GailPPOParameters, GailSACParameters


class GailSAC(AdversarialSAC):
    """GAIL on SAC: models ``actor``, ``qf1``, ``qf2`` and ``discriminator`` (reading observation
    entries and ``action``, returning ``(B, 1)`` logits); continuous actions."""

    name = "GAIL-SAC"
    parameters_class = GailSACParameters
    objective_class = GailObjective


class GailPPO(AdversarialPPO):
    """GAIL on PPO: models ``actor``, ``discriminator`` and optionally ``critic``; continuous or
    discrete actions (the discriminator gets a discrete action one-hot)."""

    name = "GAIL-PPO"
    parameters_class = GailPPOParameters
    objective_class = GailObjective
