"""Environments: the RLBaseEnv interface and the ready wrappers (gymnasium tasks)."""
from aquaml.envs.base import RLBaseEnv, StepResult, normalize_reward, normalize_step
from aquaml.envs.gymnasium_env import GymnasiumEnv

__all__ = ["GymnasiumEnv", "RLBaseEnv", "StepResult", "normalize_reward", "normalize_step"]
