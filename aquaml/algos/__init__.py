"""Algorithms (no MPI in here): the contract every algorithm fulfils, the registry, SAC, PPO, DQN,
and adversarial imitation on them (GAIL, AMP)."""
from aquaml.algos.base import Algorithm, OffPolicyAlgorithm, OnPolicyAlgorithm
from aquaml.algos.params import (PPO_parameter, PPOParameters, ReplayParameters, RolloutParameters, RunParameters,
                                 SAC2_parameter, SACParameters)
from aquaml.algos.ppo import PPO
from aquaml.algos.registry import algorithm, algorithm_names, default_models, register_algorithm
from aquaml.algos.sac import SAC, SAC2
from aquaml.algos.dqn import DQN, DQNParameters
from aquaml.algos.imitation import (AmpPPO, AmpPPOParameters, AmpSAC, AmpSACParameters, GailPPO,
                                    GailPPOParameters, GailSAC, GailSACParameters)

register_algorithm("sac", SAC)
register_algorithm("ppo", PPO)
register_algorithm("dqn", DQN)
register_algorithm("gail-sac", GailSAC)
register_algorithm("gail-ppo", GailPPO)
register_algorithm("amp-sac", AmpSAC)
register_algorithm("amp-ppo", AmpPPO)

__all__ = ["Algorithm", "OffPolicyAlgorithm", "OnPolicyAlgorithm", "RunParameters", "ReplayParameters",
           "RolloutParameters", "SAC", "SAC2", "SACParameters", "SAC2_parameter", "PPO", "PPOParameters",
           "PPO_parameter", "DQN", "DQNParameters", "GailSAC", "GailPPO", "AmpSAC", "AmpPPO", "GailSACParameters",
           "GailPPOParameters", "AmpSACParameters", "AmpPPOParameters", "algorithm", "algorithm_names",
           "default_models", "register_algorithm"]
