"""Trained policies for deployment: a TensorFlow SavedModel with a fixed input signature (no aquaml or
model classes needed to run it), the actor as ``.keras`` and ``.weights.h5`` files, and
``load_policy`` to act with them.

Layout of an export directory::

    policy/
      saved_model.pb, variables/   deterministic policy: {obs name: (batch, *shape)} -> {'action': ...}
      actor.keras                  the actor network alone (needs its class to load)
      actor.weights.h5             the actor's weights alone
      policy.json                  observation and action specs, algorithm, environment id, and for
                                   aquaml's default models the actor's class, configuration and head
      MANIFEST.json                size and SHA-256 of every file, signed with the user's key

The exported function is the algorithm's deterministic action (SAC: ``tanh(mean)``; PPO: the
Gaussian mean clipped to [-1, 1], or the most likely discrete action), with PPO's observation
normalisation statistics baked in. Continuous actions are in [-1, 1], as ``RLBaseEnv.step``
receives them (``GymnasiumEnv`` rescales them to the action space's bounds).

A SavedModel is a TensorFlow graph, and running it can run any TensorFlow op (write files, say).
``load_policy`` runs it only when the export's manifest carries the user's own signature (their
runs and exports), or when told to trust it. Otherwise a policy of aquaml's default models is
rebuilt from ``policy.json`` and ``actor.weights.h5``, data only, with aquaml's own code; any other
policy is refused.
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
from aquaml.models.defaults import DEFAULT_MODEL_CLASSES, rebuild_default_model
from aquaml.run import signing
from aquaml.storage import file_sha256, replace_dir

POLICY_JSON = "policy.json"
MANIFEST = "MANIFEST.json"
ACTOR_WEIGHTS = "actor.weights.h5"


class UntrustedPolicyError(PermissionError):
    """A policy export that only its SavedModel can run is not signed by this user (and not trusted)."""


def _files(directory: str) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of every file under ``directory`` but the manifest, by relative path."""
    out = {}
    for root, _, names in os.walk(directory):
        for name in names:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, directory)
            if rel != MANIFEST:
                out[rel] = {"bytes": os.path.getsize(full), "sha256": file_sha256(full)}
    return dict(sorted(out.items()))


def _actor_entry(algo: Any) -> dict[str, Any] | None:
    """What rebuilds the actor without its SavedModel: class and configuration, for default models."""
    model = algo.actor.model
    name = type(model).__name__
    head = algo.deterministic_head()
    if DEFAULT_MODEL_CLASSES.get(name) is not type(model) or head is None:
        return None
    return {"class": name, "config": {k: v for k, v in model.get_config().items() if k != "dtype"}, "head": head}


def export_policy(algo: Any, path: str, env_id: str | None = None) -> str:
    """Write ``algo``'s deterministic policy to the directory ``path`` (replaced whole, atomically),
    signed with the user's key.

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
        _save_actor(algo.actor.model, tmp)
        meta = {"format": 1, "algo": algo.name, "env_id": env_id, "obs_info": obs_info.to_dict(),
                "action_info": algo.action_info.to_dict(), "actor_input_names": list(algo.actor.input_names),
                "state_info": algo.actor.state_info.to_dict(), "actor": _actor_entry(algo)}
        with open(os.path.join(tmp, POLICY_JSON), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)
        manifest = {"files": _files(tmp)}
        manifest["signature"] = signing.sign(manifest)
        with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _save_actor(model: Any, directory: str) -> None:
    """``actor.keras`` (when the model can describe itself) and ``actor.weights.h5``."""
    model.save_weights(os.path.join(directory, ACTOR_WEIGHTS))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras notes that a subclassed model needs its class to load
            model.save(os.path.join(directory, "actor.keras"))
    except NotImplementedError:  # a model with constructor arguments and no get_config
        name = type(model).__name__
        warnings.warn(f"policy/actor.keras not written: {name} takes constructor arguments and has no get_config(), "
                      f"so Keras could not rebuild it from the file (give {name} a get_config() to have one); "
                      "the SavedModel and actor.weights.h5 are complete", stacklevel=3)


def export_trust_problem(path: str) -> str | None:
    """None when the export at ``path`` is unchanged since the user signed it; else why not."""
    try:
        with open(os.path.join(path, MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        return f"it has no {MANIFEST} (exported by an older aquaml, or by hand)"
    except (OSError, ValueError) as exc:
        return f"its {MANIFEST} is unreadable ({exc})"
    problem = signing.signature_problem(manifest)
    if problem is not None:
        return problem
    if _files(path) != manifest.get("files"):
        return "its files differ from those its manifest lists"
    return None


class Policy:
    """A loaded policy: ``act(obs_dict) -> {'action': ...}``, batched or for one observation.

    A recurrent policy (``state_info`` not empty) reads its state as observation entries and
    returns the next state beside the action: start from zeros, pass back what it returned.

    Args:
        path: the export directory.
        trust: run the export's SavedModel even when it is not signed with the user's key.

    Attributes:
        source: ``'saved_model'`` (the export's graph ran) or ``'weights'`` (a default-model
            actor rebuilt from ``policy.json`` and ``actor.weights.h5``; nothing stored ran).

    Raises:
        FileNotFoundError: ``path`` holds no export.
        UntrustedPolicyError: the export is not the user's, only its SavedModel can act (a custom
            actor class), and ``trust`` is False.
    """

    def __init__(self, path: str, trust: bool = False) -> None:
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
        problem = None if trust else export_trust_problem(path)
        if problem is None:
            self._module = tf.saved_model.load(path)  # kept: its act refers to the module's variables
            self.source, self._act = "saved_model", self._module.act
        elif isinstance(self.meta.get("actor"), dict) and self.meta["actor"].get("class") in DEFAULT_MODEL_CLASSES:
            self.source, self._act = "weights", _rebuilt_act(path, self.meta, self.obs_info)
        else:
            raise UntrustedPolicyError(
                f"{path} is not a policy you exported: {problem}. Its actor is no aquaml default model, so only "
                "its SavedModel can act, and a SavedModel can run any TensorFlow op (write files, say). If you "
                "trust where it came from: load_policy(path, trust=True), or aquaml eval ... --trust-policy")

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
        out = {k: np.asarray(v) for k, v in self._act(batch).items()}
        return {k: v[0] if single else v for k, v in out.items()}

    def __call__(self, obs: Mapping[str, Any], deterministic: bool = True) -> dict[str, np.ndarray]:
        """``act`` with the signature of ``algo.act``, so a Policy can stand in for an algorithm."""
        return self.act(obs, deterministic)


def _rebuilt_act(path: str, meta: Mapping[str, Any], obs_info: DataInfo) -> Any:
    """The deterministic policy of a default-model actor, from ``policy.json`` and its weights alone:
    the algorithm's head (``deterministic_head``) applied by this code to the actor's outputs."""
    entry = meta["actor"]
    actor = rebuild_default_model(entry["class"], entry["config"])
    names, head = list(meta["actor_input_names"]), entry["head"]
    actor(*[tf.zeros((1,) + obs_info.shape(n), obs_info.dtype(n)) for n in names])  # create the weights
    actor.load_weights(os.path.join(path, ACTOR_WEIGHTS))
    normalize = {n: (np.asarray(v["mean"], np.float32), np.asarray(v["var"], np.float32))
                 for n, v in head["normalize"].items() if n in obs_info}
    action_kind = head["action"]
    if action_kind not in ("tanh", "clip", "argmax"):
        raise ValueError(f"{path}: {POLICY_JSON} names an unknown action head {action_kind!r}")

    @tf.function(input_signature=[obs_info.tensor_specs()])
    def act(obs):
        obs = dict(obs)
        for n, (mean, var) in normalize.items():
            scaled = (obs[n] - mean) * tf.math.rsqrt(var + 1e-8)
            obs[n] = tf.clip_by_value(scaled, -head["obs_clip"], head["obs_clip"])
        action = actor(*[obs[n] for n in names])[0]
        if action_kind == "tanh":
            return {"action": tf.tanh(action)}
        if action_kind == "clip":
            return {"action": tf.clip_by_value(action, -1.0, 1.0)}
        return {"action": tf.argmax(action, axis=-1)}
    return act


def load_policy(path: str, trust: bool = False) -> Policy:
    """Load a policy exported by ``export_policy`` (a run's ``policy/`` directory, or a run
    directory that holds one); see ``Policy`` for ``trust``."""
    if os.path.isdir(os.path.join(path, "policy")) and not os.path.isfile(os.path.join(path, POLICY_JSON)):
        path = os.path.join(path, "policy")
    return Policy(path, trust)
