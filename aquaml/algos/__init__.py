"""Algorithms (no MPI in here): SAC and its parameters."""
from aquaml.algos.params import SAC2_parameter, SACParameters
from aquaml.algos.sac import SAC, SAC2

__all__ = ["SAC", "SAC2", "SACParameters", "SAC2_parameter"]
