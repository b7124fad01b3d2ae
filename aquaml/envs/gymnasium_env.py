"""GymnasiumEnv: any gymnasium task (an id or an instance) as an RLBaseEnv."""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from aquaml.data import DataInfo, SpecError, box_bounds
from aquaml.envs.base import RLBaseEnv, StepResult, normalize_step


class GymnasiumEnv(RLBaseEnv):
    """Wrap any gymnasium environment (an id such as ``'Pendulum-v1'`` or an instance).

    - A Box or Discrete observation becomes the entry ``obs``; a Dict observation one entry per key.
      Float observations are delivered as float32.
    - A Box action is taken in ``[-1, 1]`` (what a tanh-squashed policy produces) and rescaled to
      the space's bounds; a Discrete action is an integer index.
    - An environment on the old 4-tuple step API is accepted with a one-time warning.

    Raises:
        SpecError: the action space is neither Box nor Discrete, or a space is unsupported.
    """

    def __init__(self, env: Any, **make_kwargs: Any) -> None:
        super().__init__()
        self.env_id = env if isinstance(env, str) else getattr(getattr(env, "spec", None), "id", type(env).__name__)
        self.env = gym.make(env, **make_kwargs) if isinstance(env, str) else env
        info = DataInfo.from_space(self.env.observation_space)
        self._obs_info = DataInfo(info.names, [info.shape(n) for n in info.names],
                                  [np.float32 if info.dtype(n).kind == "f" else info.dtype(n)
                                   for n in info.names],
                                  {n: info.meta(n) for n in info.names if info.meta(n)})
        self._dict_obs = isinstance(self.env.observation_space, gym.spaces.Dict)
        space = self.env.action_space
        if isinstance(space, gym.spaces.Box):
            self._low = space.low.astype(np.float64)
            self._high = space.high.astype(np.float64)
            self._rescale = bool(np.all(np.isfinite(self._low)) and np.all(np.isfinite(self._high)))
            self._action_info = DataInfo("action", space.shape, np.float32,
                                         {"action": box_bounds(space.low, space.high)})
        elif isinstance(space, gym.spaces.Discrete):
            self._action_info = DataInfo.from_space(space, "action")
        else:
            raise SpecError(f"GymnasiumEnv({self.env_id!r}): action space {type(space).__name__} is not "
                            "supported; use Box or Discrete")
        self._discrete = isinstance(space, gym.spaces.Discrete)
        self._source = f"GymnasiumEnv({self.env_id!r})"

    @property
    def discrete(self) -> bool:
        """True when the action is a Discrete index."""
        return self._discrete

    def _obs_dict(self, obs: Any) -> dict:
        if self._dict_obs:
            return {n: np.asarray(obs[n], dtype=self._obs_info.dtype(n)) for n in self._obs_info.names}
        return {"obs": np.asarray(obs, dtype=self._obs_info.dtype("obs"))}

    def reset(self, seed: int | None = None) -> dict:
        result = self.env.reset(seed=seed) if seed is not None else self.env.reset()
        obs = result[0] if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict) else result
        return self.initial_obs(self._obs_dict(obs))

    def env_action(self, action: Any) -> Any:
        """Map the policy's action to what the wrapped environment takes."""
        if self._discrete:  # the policy picks an index 0..n-1; the space may start elsewhere
            return int(np.asarray(action).reshape(-1)[0]) + int(self.env.action_space.start)
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(self._action_info.shape("action")), -1.0, 1.0)
        if self._rescale:
            a = self._low + (a + 1.0) * 0.5 * (self._high - self._low)
        return a.astype(self.env.action_space.dtype)

    def step(self, action_dict: dict) -> StepResult:
        result = normalize_step(self.env.step(self.env_action(action_dict["action"])), self._source)
        obs = self.check_obs(self._obs_dict(result.obs), action_dict)
        return result._replace(obs=obs)

    def close(self) -> None:
        self.env.close()

    def __repr__(self) -> str:
        return self._source
