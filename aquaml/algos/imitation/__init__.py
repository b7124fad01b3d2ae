"""Adversarial imitation (no MPI in here): GAIL and AMP on SAC and on PPO, and their discriminator.

Registered from ``aquaml.algos`` as ``gail-sac``, ``gail-ppo``, ``amp-sac`` and ``amp-ppo``.
"""
from aquaml.algos.imitation.amp import AmpPPO, AmpSAC, TransitionReplay
from aquaml.algos.imitation.discriminator import (AmpObjective, Discriminator, ExpertSampler, GailObjective,
                                                  amp_reward, bce_discriminator_loss, discriminator_loss,
                                                  gail_reward, gradient_penalty, least_squares_discriminator_loss,
                                                  logit_penalty, weight_penalty)
from aquaml.algos.imitation.gail import GailPPO, GailSAC
from aquaml.algos.imitation.params import (AmpPPOParameters, AmpSACParameters, GailPPOParameters,
                                           GailSACParameters)

__all__ = ["GailSAC", "GailPPO", "AmpSAC", "AmpPPO", "GailSACParameters", "GailPPOParameters", "AmpSACParameters",
           "AmpPPOParameters", "Discriminator", "ExpertSampler", "TransitionReplay", "GailObjective", "AmpObjective",
           "bce_discriminator_loss", "least_squares_discriminator_loss", "gradient_penalty", "logit_penalty",
           "weight_penalty", "discriminator_loss", "gail_reward", "amp_reward"]
