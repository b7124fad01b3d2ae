"""Environments the network tests serve (importable by ``aquaml serve-nats tests/remote_envs:NAME``)."""
import time

import numpy as np

from aquaml import DataInfo, RLBaseEnv

#: one observation entry of every kind DataInfo describes: Box float32 and float64, an image,
#: MultiBinary, a Discrete index, a boolean flag
ALL_SPACES = DataInfo(["pos", "wide", "grid", "bits", "choice", "flag"],
                      [(3,), (2,), (2, 2), (4,), (), ()],
                      [np.float32, np.float64, np.uint8, np.int8, np.int64, np.bool_],
                      {"bits": {"binary": True}, "choice": {"n": 5, "start": 0}})


class AllSpacesEnv(RLBaseEnv):
    """Deterministic given the seed and the actions: every observation entry, a reward component,
    an info dict with a non-finite number, terminated at step 7 of odd seeds, truncated at step 9."""

    discrete = False

    def __init__(self):
        super().__init__()
        self._obs_info = ALL_SPACES
        self._action_info = (DataInfo("action", (), np.int64, {"action": {"n": 3, "start": 0}}) if self.discrete
                             else DataInfo("action", (2,), np.float32, {"action": {"low": [-1, -1], "high": [1, 1]}}))
        self.seed, self.t, self.total = 0, 0, 0.0

    def _obs(self):
        rng = np.random.default_rng(self.seed * 1000 + self.t)
        return {"pos": rng.normal(size=3).astype(np.float32), "wide": rng.normal(size=2) * 1e10,
                "grid": rng.integers(0, 256, (2, 2)).astype(np.uint8), "bits": rng.integers(0, 2, 4).astype(np.int8),
                "choice": np.int64(rng.integers(0, 5)), "flag": np.bool_(self.t % 2)}

    def reset(self, seed=None):
        self.seed = 0 if seed is None else seed
        self.t, self.total = 0, 0.0
        return self._obs()

    def step(self, action_dict):
        self.t += 1
        a = np.asarray(action_dict["action"], np.float64)
        reward = float(np.sum(a)) * 0.5 + self.t
        self.total += reward
        terminated = self.seed % 2 == 1 and self.t == 7
        truncated = not terminated and self.t == 9
        return (self._obs(), {"total_reward": reward, "bonus": self.t * 0.25}, terminated, truncated,
                {"t": self.t, "total": self.total, "limit": float("inf")})


class DiscreteAllSpacesEnv(AllSpacesEnv):
    discrete = True


class FailingEnv(AllSpacesEnv):
    """Raises at its third step: the error must reach the learner."""

    def step(self, action_dict):
        if self.t == 2:
            raise ValueError("deliberate far-side failure at step 3")
        return super().step(action_dict)


class SlowEnv(AllSpacesEnv):
    """Takes 5 s per step: longer than the client's timeout in the tests."""

    def step(self, action_dict):
        time.sleep(5.0)
        return super().step(action_dict)
