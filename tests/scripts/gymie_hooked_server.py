"""aquaml serve with both documented hooks overridden (Gymie's @override), serving test environments.

    gymie_hooked_server.py PORT

get_env makes ``Lattice-v0`` (MultiDiscrete observations, Discrete actions), ``LatticeMD-v0``
(MultiDiscrete actions too) and ``Failing-v0`` (raises at its third step); process_step adds
``{"hooked": true}`` to every info.
"""
import sys

import gymnasium as gym
import numpy as np

from aquaml.envs.gymie_serve import EnvironmentNotFound, override, serve


class Lattice(gym.Env):
    observation_space = gym.spaces.MultiDiscrete([3, 4, 5])

    def __init__(self, multi_action=False, fail=False):
        self.action_space = gym.spaces.MultiDiscrete([2, 3]) if multi_action else gym.spaces.Discrete(2)
        self.fail, self.t = fail, 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self.t += 1
        if self.fail and self.t == 3:
            raise RuntimeError("deliberate failure in the served environment")
        obs = np.array([self.t % 3, self.t % 4, int(np.sum(action)) % 5])
        return obs, float(np.sum(action)), False, self.t >= 10, {}


@override("get_env")
def lattice_env(env_id, seed=None):
    if env_id == "Lattice-v0":
        return Lattice()
    if env_id == "LatticeMD-v0":
        return Lattice(multi_action=True)
    if env_id == "Failing-v0":
        return Lattice(fail=True)
    raise EnvironmentNotFound(env_id)


@override("process_step")
def tagged_step(step):
    obs, reward, terminated, truncated, info = step
    return obs.tolist(), float(reward), terminated, truncated, {**info, "hooked": True}


if __name__ == "__main__":
    serve("127.0.0.1", int(sys.argv[1]), verbose=False)
