"""GymnasiumEnv: any gymnasium task (an id or an instance) as an RLBaseEnv."""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from aquaml.data import DataInfo, SpecError, box_bounds, space_entries
from aquaml.envs.base import RLBaseEnv, StepResult, normalize_step

#: The action spaces GymnasiumEnv takes, as its refusal lists them.
SUPPORTED_ACTIONS = "Box, Discrete, MultiDiscrete, MultiBinary"


def action_info_from_space(space: Any) -> DataInfo:
    """The spec of ``action`` for a gymnasium action space: float32 in [-1, 1] for a Box (with its
    bounds as meta), an int64 index for a Discrete (``n``), int64 per component for a
    MultiDiscrete (``nvec``) and for a MultiBinary (``binary``).

    Raises:
        SpecError: any other space, naming the ones supported.
    """
    if isinstance(space, gym.spaces.Box):
        return DataInfo("action", space.shape, np.float32, {"action": box_bounds(space.low, space.high)})
    if isinstance(space, gym.spaces.Discrete):
        return DataInfo.from_space(space, "action")
    if isinstance(space, gym.spaces.MultiDiscrete):
        if space.nvec.ndim != 1:
            raise SpecError(f"a MultiDiscrete action must be one-dimensional, got nvec of shape {space.nvec.shape}")
        return DataInfo("action", space.shape, np.int64,
                        {"action": {"nvec": space.nvec.tolist(), "start": space.start.tolist()}})
    if isinstance(space, gym.spaces.MultiBinary):
        if len(space.shape) != 1:
            raise SpecError(f"a MultiBinary action must be one-dimensional, got shape {space.shape}")
        return DataInfo("action", space.shape, np.int64, {"action": {"binary": True}})
    raise SpecError(f"action space {type(space).__name__} is not supported; supported are {SUPPORTED_ACTIONS}")


def flatten_observation(space: Any, obs: Any, name: str, out: dict) -> None:
    """Put ``obs`` of ``space`` into ``out`` under the entry names ``DataInfo.from_space`` gives."""
    if isinstance(space, (gym.spaces.Dict, gym.spaces.Tuple)):
        keys = list(space.spaces) if isinstance(space, gym.spaces.Dict) else range(len(space.spaces))
        for key, (sub_name, sub) in zip(keys, space_entries(space, name)):
            flatten_observation(sub, obs[key], sub_name, out)
    else:
        out[name] = obs


class GymnasiumEnv(RLBaseEnv):
    """Wrap any gymnasium environment (an id such as ``'Pendulum-v1'`` or an instance).

    - A Box, Discrete, MultiBinary or MultiDiscrete observation becomes the entry ``obs``; a Dict
      observation one entry per key, a Tuple one per position (``obs_0``, ``obs_1``...). Float
      observations are delivered as float32.
    - A Box action is taken in ``[-1, 1]`` (what a tanh-squashed policy produces) and rescaled to
      the space's bounds; a Discrete action is an integer index, a MultiDiscrete one an index per
      component (each from 0), a MultiBinary one a 0/1 per bit.
    - An environment on the old 4-tuple step API is accepted with a one-time warning.

    Raises:
        SpecError: a space is not supported (the message lists those that are).
    """

    def __init__(self, env: Any, **make_kwargs: Any) -> None:
        super().__init__()
        self.env_id = env if isinstance(env, str) else getattr(getattr(env, "spec", None), "id", type(env).__name__)
        self.env = gym.make(env, **make_kwargs) if isinstance(env, str) else env
        try:
            info = DataInfo.from_space(self.env.observation_space)
            self._action_info = action_info_from_space(self.env.action_space)
        except SpecError as exc:
            raise SpecError(f"GymnasiumEnv({self.env_id!r}): {exc}") from None
        self._obs_info = DataInfo(info.names, [info.shape(n) for n in info.names],
                                  [np.float32 if info.dtype(n).kind == "f" else info.dtype(n)
                                   for n in info.names],
                                  {n: info.meta(n) for n in info.names if info.meta(n)})
        self._structured_obs = isinstance(self.env.observation_space, (gym.spaces.Dict, gym.spaces.Tuple))
        space = self.env.action_space
        if isinstance(space, gym.spaces.Box):
            self._low = space.low.astype(np.float64)
            self._high = space.high.astype(np.float64)
            self._rescale = bool(np.all(np.isfinite(self._low)) and np.all(np.isfinite(self._high)))
        self._discrete = isinstance(space, gym.spaces.Discrete)
        self._source = f"GymnasiumEnv({self.env_id!r})"

    @property
    def discrete(self) -> bool:
        """True when the action is a Discrete index."""
        return self._discrete

    def _obs_dict(self, obs: Any) -> dict:
        if self._structured_obs:
            flat: dict = {}
            flatten_observation(self.env.observation_space, obs, "obs", flat)
            return {n: np.asarray(flat[n], dtype=self._obs_info.dtype(n)) for n in self._obs_info.names}
        return {"obs": np.asarray(obs, dtype=self._obs_info.dtype("obs"))}

    def reset(self, seed: int | None = None) -> dict:
        result = self.env.reset(seed=seed) if seed is not None else self.env.reset()
        obs = result[0] if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict) else result
        return self.initial_obs(self._obs_dict(obs))

    def env_action(self, action: Any) -> Any:
        """Map the policy's action to what the wrapped environment takes."""
        space = self.env.action_space
        if self._discrete:  # the policy picks an index 0..n-1; the space may start elsewhere
            return int(np.asarray(action).reshape(-1)[0]) + int(space.start)
        if isinstance(space, gym.spaces.MultiDiscrete):
            return (np.asarray(action, np.int64).reshape(space.shape) + space.start).astype(space.dtype)
        if isinstance(space, gym.spaces.MultiBinary):
            return np.asarray(action).reshape(space.shape).astype(space.dtype)
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(self._action_info.shape("action")), -1.0, 1.0)
        if self._rescale:
            a = self._low + (a + 1.0) * 0.5 * (self._high - self._low)
        return a.astype(space.dtype)

    def step(self, action_dict: dict) -> StepResult:
        result = normalize_step(self.env.step(self.env_action(action_dict["action"])), self._source)
        obs = self.check_obs(self._obs_dict(result.obs), action_dict)
        return result._replace(obs=obs)

    def close(self) -> None:
        self.env.close()

    def __repr__(self) -> str:
        return self._source
