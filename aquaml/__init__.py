"""aquaml: MPI-parallel reinforcement learning (SAC, PPO) on TensorFlow 2 for workstations and HPC.

Public API (names kept from the reference AquaML)::

    from aquaml import DataInfo, RLBaseEnv, GymnasiumEnv, RLBaseModel, RLTaskStarter, SAC, SACParameters
    from aquaml import PPO, PPOParameters
"""
import os as _os

# TensorFlow prints hardware notes at import; keep them out of training logs unless asked for.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

from aquaml.data import DataInfo, SpecError  # noqa: E402
from aquaml.env import GymnasiumEnv, RLBaseEnv  # noqa: E402
from aquaml.model import ModelContractError, RLBaseModel  # noqa: E402
from aquaml.algos import (PPO, PPO_parameter, PPOParameters, SAC, SAC2, SAC2_parameter,  # noqa: E402
                          SACParameters)
from aquaml.parallel.devices import allocate_gpu  # noqa: E402
from aquaml.starter import RLTaskStarter  # noqa: E402

__all__ = ["DataInfo", "SpecError", "RLBaseEnv", "GymnasiumEnv", "RLBaseModel", "ModelContractError",
           "RLTaskStarter", "allocate_gpu", "SAC", "SAC2", "SACParameters", "SAC2_parameter",
           "PPO", "PPOParameters", "PPO_parameter", "__version__"]
