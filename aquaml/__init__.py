"""aquaml: MPI-parallel reinforcement learning (SAC, PPO, DQN) on TensorFlow 2 for workstations and HPC.

Public API (names kept from the reference AquaML)::

    from aquaml import DataInfo, RLBaseEnv, GymnasiumEnv, RLBaseModel, RLTaskStarter, SAC, SACParameters
    from aquaml import PPO, PPOParameters, load_policy, save_data, load_data
    from aquaml import NatsEnv, serve_nats, GymieEnv, serve      # environments across the network
    from aquaml import tune          # Optuna studies, trials as MPI rank groups (docs/tuning.md)

Names are imported on first use, so ``import aquaml`` (and ``aquaml --help``) does not start
TensorFlow; the first model, environment spec or starter does.

``import aquaml`` also holds SIGTERM and SIGINT until a run starts (not in interactive sessions; see
``aquaml.parallel.failure.DeferredSignals``): a job pre-empted while TensorFlow imports then ends
with exit code 0 and a clear message instead of dying with signal 15. Import aquaml first.
"""
import importlib as _importlib
import os as _os

from aquaml.parallel.failure import DEFERRED as _DEFERRED

# TensorFlow prints hardware notes at import; keep them out of training logs unless asked for.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_DEFERRED.install()
_importlib.import_module("aquaml._tensorflow_import").install()

__version__ = "0.1.0"

_EXPORTS = {
    "DataInfo": "aquaml.data", "SpecError": "aquaml.data", "NonFiniteError": "aquaml.data",
    "RLBaseEnv": "aquaml.envs", "GymnasiumEnv": "aquaml.envs",
    "RLBaseModel": "aquaml.models.base", "ModelContractError": "aquaml.models.base",
    "SAC": "aquaml.algos", "SAC2": "aquaml.algos", "SACParameters": "aquaml.algos",
    "SAC2_parameter": "aquaml.algos", "PPO": "aquaml.algos", "PPOParameters": "aquaml.algos",
    "PPO_parameter": "aquaml.algos", "DQN": "aquaml.algos", "DQNParameters": "aquaml.algos", "algorithm": "aquaml.algos", "register_algorithm": "aquaml.algos",
    "algorithm_names": "aquaml.algos", "Algorithm": "aquaml.algos", "OffPolicyAlgorithm": "aquaml.algos",
    "OnPolicyAlgorithm": "aquaml.algos", "RunParameters": "aquaml.algos", "ReplayParameters": "aquaml.algos",
    "RolloutParameters": "aquaml.algos",
    "GailSAC": "aquaml.algos", "GailPPO": "aquaml.algos", "AmpSAC": "aquaml.algos", "AmpPPO": "aquaml.algos",
    "GailSACParameters": "aquaml.algos", "GailPPOParameters": "aquaml.algos", "AmpSACParameters": "aquaml.algos",
    "AmpPPOParameters": "aquaml.algos",
    "allocate_gpu": "aquaml.parallel.devices",
    "RLTaskStarter": "aquaml.run.starter",
    "CheckpointError": "aquaml.run.checkpoint",
    "default_models": "aquaml.algos",
    "export_policy": "aquaml.run.export", "load_policy": "aquaml.run.export",
    "Trajectories": "aquaml.datasets", "record_policy": "aquaml.datasets", "save_data": "aquaml.datasets",
    "load_data": "aquaml.datasets", "trajectories_from_buffer": "aquaml.datasets",
    "behaviour_cloning": "aquaml.datasets",
    "plot_runs": "aquaml.plotting",
    "NatsEnv": "aquaml.envs.nats_env", "serve_nats": "aquaml.envs.nats_serve",
    "GymieEnv": "aquaml.envs.gymie_env", "serve": "aquaml.envs.gymie_serve",
    "RemoteEnvError": "aquaml.envs.nats_link",
    "tune": "aquaml.tuning", "SpaceError": "aquaml.tuning",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'aquaml' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
