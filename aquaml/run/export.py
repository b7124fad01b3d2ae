"""Trained policies for deployment: a TensorFlow SavedModel with a fixed input signature (no aquaml or
model classes needed to run it), the actor as a ``.keras`` file, and ``load_policy`` to act with either.

Layout of an export directory::

    policy/
      saved_model.pb, variables/   deterministic policy: {obs name: (batch, *shape)} -> {'action': ...}
      actor.keras                  the actor network alone (needs its class to load)
      policy.json                  observation and action specs, algorithm, environment id

The exported function is the algorithm's deterministic action (SAC: ``tanh(mean)``; PPO: the
Gaussian mean clipped to [-1, 1], or the most likely discrete action), with PPO's observation
normalisation statistics baked in. Continuous actions are in [-1, 1], as ``RLBaseEnv.step``
receives them (``GymnasiumEnv`` rescales them to the action space's bounds).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from typing import Any, Mapping

import numpy as np
import tensorflow as tf

from aquaml.data import DataInfo
from aquaml.storage import replace_dir

POLICY_JSON = "policy.json"


def export_policy(algo: Any, path: str, env_id: str | None = None) -> str:
    """Write ``algo``'s deterministic policy to the directory ``path`` (replaced whole, atomically).

    Args:
        algo: a trained algorithm (``starter.algo``): its ``export_act`` is what the policy runs.
        path: the export directory.
        env_id: the gymnasium id the policy was trained on, recorded for ``aquaml eval``.
    """
    obs_info = algo.obs_info.select(algo.actor.input_names)
    act = tf.function(algo.export_act, input_signature=[obs_info.tensor_specs()])
    concrete = act.get_concrete_function()
    module = tf.Module()
    module.act = act
    module.captured = list(concrete.variables)  # tracked, so the SavedModel holds their values
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-export-", dir=parent)
    try:
        tf.saved_model.save(module, tmp)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Keras notes that a subclassed model needs its class to load
                algo.actor.model.save(os.path.join(tmp, "actor.keras"))
        except NotImplementedError as exc:  # a model with constructor arguments and no get_config
            warnings.warn(f"actor.keras not written ({str(exc).strip().splitlines()[0]} "
                          f"{type(algo.actor.model).__name__} needs get_config()); the SavedModel is complete",
                          stacklevel=2)
        meta = {"format": 1, "algo": algo.name, "env_id": env_id, "obs_info": obs_info.to_dict(),
                "action_info": algo.action_info.to_dict(), "actor_input_names": list(algo.actor.input_names),
                "state_info": algo.actor.state_info.to_dict()}
        with open(os.path.join(tmp, POLICY_JSON), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


class Policy:
    """A loaded policy: ``act(obs_dict) -> {'action': ...}``, batched or for one observation.

    A recurrent policy (``state_info`` not empty) reads its state as observation entries and
    returns the next state beside the action: start from zeros, pass back what it returned.
    """

    def __init__(self, path: str) -> None:
        meta_path = os.path.join(path, POLICY_JSON)
        if not os.path.isfile(meta_path):
            raise FileNotFoundError(f"{path} is not an aquaml policy export (no {POLICY_JSON}); export one with "
                                    "aquaml export RUN or aquaml.export_policy(starter.algo, path)")
        with open(meta_path, encoding="utf-8") as f:
            self.meta = json.load(f)
        self.obs_info = DataInfo.from_dict(self.meta["obs_info"])
        self.action_info = DataInfo.from_dict(self.meta["action_info"])
        self.env_id = self.meta.get("env_id")
        self.state_info = DataInfo.from_dict(self.meta.get("state_info") or {"names": [], "shapes": [], "dtypes": []})
        self._module = tf.saved_model.load(path)

    def act(self, obs: Mapping[str, Any], deterministic: bool = True) -> dict[str, np.ndarray]:
        """The action for ``obs`` (every name the actor reads; extra names are ignored).

        A single observation (arrays of the spec's shape) gives a single action; a batch (a leading
        batch dimension on every array) gives a batch.
        """
        missing = [n for n in self.obs_info.names if n not in obs]
        if missing:
            raise KeyError(f"the policy reads observations {list(self.obs_info.names)}; missing {missing}")
        first = self.obs_info.names[0]
        single = np.ndim(obs[first]) == len(self.obs_info.shape(first))
        batch = {n: np.asarray(obs[n], self.obs_info.dtype(n))[None] if single else
                 np.asarray(obs[n], self.obs_info.dtype(n)) for n in self.obs_info.names}
        self.obs_info.validate(batch, what="policy input", batch_dims=1)
        out = {k: v.numpy() for k, v in self._module.act(batch).items()}
        return {k: v[0] if single else v for k, v in out.items()}

    def __call__(self, obs: Mapping[str, Any], deterministic: bool = True) -> dict[str, np.ndarray]:
        """``act`` with the signature of ``algo.act``, so a Policy can stand in for an algorithm."""
        return self.act(obs, deterministic)


def load_policy(path: str) -> Policy:
    """Load a policy exported by ``export_policy`` (a run's ``policy/`` directory, or a run
    directory that holds one)."""
    if os.path.isdir(os.path.join(path, "policy")) and not os.path.isfile(os.path.join(path, POLICY_JSON)):
        path = os.path.join(path, "policy")
    return Policy(path)
