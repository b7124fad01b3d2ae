import warnings

import gymnasium as gym
import numpy as np
import pytest

from aquaml import GymnasiumEnv, SpecError
from aquaml.envs import normalize_step


def test_pendulum_spaces_and_action_rescaling():
    env = GymnasiumEnv("Pendulum-v1")
    assert env.obs_info.names == ("obs",) and env.obs_info.shape("obs") == (3,)
    assert env.action_info.shape("action") == (1,)
    assert env.env_action(np.array([-1.0]))[0] == pytest.approx(-2.0)
    assert env.env_action(np.array([1.0]))[0] == pytest.approx(2.0)
    assert env.env_action(np.array([0.5]))[0] == pytest.approx(1.0)
    assert env.env_action(np.array([3.0]))[0] == pytest.approx(2.0)  # clipped to the bounds
    obs = env.reset(seed=0)
    assert obs["obs"].dtype == np.float32 and obs["obs"].shape == (3,)


def test_time_limit_is_truncation_not_termination():
    env = GymnasiumEnv("Pendulum-v1")
    env.reset(seed=1)
    flags = [env.step({"action": np.zeros(1, np.float32)})[2:4] for _ in range(200)]
    assert all(f == (False, False) for f in flags[:-1])
    assert flags[-1] == (False, True)


def test_discrete_cartpole_terminates():
    env = GymnasiumEnv("CartPole-v1")
    assert env.discrete and env.action_info.meta("action")["n"] == 2
    env.reset(seed=0)
    for _ in range(500):
        obs, reward, terminated, truncated, _ = env.step({"action": np.array(1)})
        assert reward == {"total_reward": 1.0}
        if terminated or truncated:
            break
    assert terminated and not truncated


def test_dict_observation_becomes_several_names():
    class DictEnv(gym.Env):
        observation_space = gym.spaces.Dict({"pos": gym.spaces.Box(-1, 1, (2,)), "vel": gym.spaces.Box(-1, 1, (1,))})
        action_space = gym.spaces.Box(0.0, 4.0, (1,))

        def reset(self, seed=None, options=None):
            return {"pos": np.ones(2), "vel": np.zeros(1)}, {}

        def step(self, action):
            self.last = action
            return {"pos": np.ones(2), "vel": np.zeros(1)}, 1.0, False, False, {}

    env = GymnasiumEnv(DictEnv())
    assert set(env.obs_info.names) == {"pos", "vel"}
    obs = env.reset()
    assert obs["pos"].dtype == np.float32 and obs["vel"].shape == (1,)
    env.step({"action": np.array([0.0], np.float32)})
    assert env.env.last[0] == pytest.approx(2.0)  # [-1, 1] -> [0, 4]


def test_legacy_four_tuple_warns_once_and_reads_truncation():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r1 = normalize_step((np.zeros(1), 1.0, True, {"TimeLimit.truncated": True}), "LegacyA")
        r2 = normalize_step((np.zeros(1), 1.0, True, {}), "LegacyA")
    assert (r1.terminated, r1.truncated) == (False, True)
    assert (r2.terminated, r2.truncated) == (True, False)
    assert len([w for w in caught if "4-tuple" in str(w.message)]) == 1


def test_bad_step_results_are_explained():
    with pytest.raises(SpecError, match="must return"):
        normalize_step((1, 2), "Broken")
    with pytest.raises(SpecError, match="total_reward"):
        normalize_step(({}, {"r": 1.0}, False, False, {}), "Broken")


def test_unsupported_action_space():
    class TupleEnv(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (1,))
        action_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(2)))
    with pytest.raises(SpecError, match="action space Tuple is not supported; supported are Box, Discrete, "
                                        "MultiDiscrete, MultiBinary"):
        GymnasiumEnv(TupleEnv())


def test_discrete_action_index_is_offset_by_the_space_start():
    class ShiftedEnv(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (1,))
        action_space = gym.spaces.Discrete(3, start=-1)
    env = GymnasiumEnv(ShiftedEnv())
    assert env.action_info.meta("action") == {"n": 3, "start": -1}
    assert [env.env_action(np.array(i)) for i in range(3)] == [-1, 0, 1]
    assert GymnasiumEnv("CartPole-v1").env_action(np.array(1)) == 1
