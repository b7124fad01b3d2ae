"""Algorithms (no MPI in here): SAC, PPO, DQN and their parameters."""
from aquaml.algos.params import PPO_parameter, PPOParameters, SAC2_parameter, SACParameters
from aquaml.algos.ppo import PPO
from aquaml.algos.sac import SAC, SAC2
from aquaml.algos.dqn import DQN, DQNParameters

__all__ = ["SAC", "SAC2", "SACParameters", "SAC2_parameter", "PPO", "PPOParameters", "PPO_parameter", "DQN",
           "DQNParameters"]
