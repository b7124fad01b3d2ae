"""Algorithms (no MPI in here): the contract every algorithm fulfils, the registry, SAC and PPO."""
from aquaml.algos.base import Algorithm, OffPolicyAlgorithm, OnPolicyAlgorithm
from aquaml.algos.params import (PPO_parameter, PPOParameters, ReplayParameters, RolloutParameters, RunParameters,
                                 SAC2_parameter, SACParameters)
from aquaml.algos.ppo import PPO
from aquaml.algos.registry import algorithm, algorithm_names, default_models, register_algorithm
from aquaml.algos.sac import SAC, SAC2

register_algorithm("sac", SAC)
register_algorithm("ppo", PPO)

__all__ = ["Algorithm", "OffPolicyAlgorithm", "OnPolicyAlgorithm", "RunParameters", "ReplayParameters",
           "RolloutParameters", "SAC", "SAC2", "SACParameters", "SAC2_parameter", "PPO", "PPOParameters",
           "PPO_parameter", "algorithm", "algorithm_names", "default_models", "register_algorithm"]
