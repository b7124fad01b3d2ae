import numpy as np
import pytest
from helpers import CountingEnv

from aquaml import DataInfo
from aquaml.algos.sac import transition_info
from aquaml.buffers import ReplayBuffer
from aquaml.acting.worker import Worker, evaluate

INFO = DataInfo(("x", "r"), ((2,), ()), (np.float32, np.float32))


def test_fifo_wraps_and_counts():
    buf = ReplayBuffer(INFO, capacity=4)
    for i in range(6):
        buf.write(0, {"x": np.full(2, i), "r": i})
    assert len(buf) == 4 and int(buf.counters[0]) == 6
    assert sorted(buf.arrays["r"][0].tolist()) == [2.0, 3.0, 4.0, 5.0]  # 0 and 1 were overwritten
    buf.write_batch(0, {"x": np.zeros((3, 2)), "r": np.array([6.0, 7.0, 8.0])})
    assert buf.arrays["r"][0].tolist() == [8.0, 5.0, 6.0, 7.0]


def test_sampling_is_uniform_over_filled_rows_of_all_slices():
    buf = ReplayBuffer(INFO, capacity=300, num_slices=3)
    buf.write_batch(0, {"x": np.zeros((100, 2)), "r": np.zeros(100)})
    buf.write_batch(2, {"x": np.zeros((20, 2)), "r": np.full(20, 2.0)})  # slice 1 stays empty
    draws = buf.sample(60_000, np.random.default_rng(0))["r"]
    assert set(np.unique(draws)) == {0.0, 2.0}
    assert np.mean(draws == 2.0) == pytest.approx(20 / 120, abs=0.01)
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(INFO, 10).sample(1, np.random.default_rng(0))


def _worker(envs, policy, capacity=100):
    obs_info = envs[0].obs_info
    action_info = DataInfo("action", (1,))
    buf = ReplayBuffer(transition_info(obs_info, action_info), capacity)
    return Worker(envs, obs_info, action_info, policy, buf), buf


def test_truncated_transition_stores_the_final_observation_not_the_reset_one():
    env = CountingEnv(horizon=3)
    worker, buf = _worker([env], lambda obs, det: {"action": np.full((len(obs["obs"]), 1), 0.5, np.float32)})
    episodes = []
    for _ in range(4):
        episodes += worker.step()
    rows = slice(0, 4)
    np.testing.assert_allclose(buf.arrays["obs"][0, rows, 0], [0, 1 / 3, 2 / 3, 0])
    np.testing.assert_allclose(buf.arrays["next_obs"][0, rows, 0], [1 / 3, 2 / 3, 1.0, 1 / 3])
    assert buf.arrays["truncated"][0, rows].tolist() == [0, 0, 1, 0]
    assert buf.arrays["terminated"][0, rows].tolist() == [0, 0, 0, 0]
    assert len(episodes) == 1 and episodes[0].length == 3 and not episodes[0].terminated
    assert episodes[0].ret == pytest.approx(0.0) and episodes[0].rewards["miss"] == pytest.approx(0.0)


def test_terminated_flag_and_several_envs_per_worker():
    envs = [CountingEnv(horizon=10, terminate_at=2), CountingEnv(horizon=10, terminate_at=3)]
    worker, buf = _worker(envs, lambda obs, det: {"action": np.zeros((len(obs["obs"]), 1), np.float32)})
    ended = [len(worker.step()) for _ in range(3)]
    assert ended == [0, 1, 1] and int(buf.counters[0]) == 6
    assert buf.arrays["terminated"][0, :6].tolist() == [0, 0, 1, 0, 0, 1]


def test_env_that_scales_its_action_in_place_cannot_corrupt_the_buffer():
    class InPlace(CountingEnv):
        def step(self, action_dict):
            action_dict["action"] *= 2  # as the reference tutorial does
            return super().step(action_dict)
    worker, buf = _worker([InPlace()], lambda obs, det: {"action": np.full((1, 1), 0.25, np.float32)})
    worker.step()
    assert buf.arrays["action"][0, 0, 0] == pytest.approx(0.25)


def test_reference_style_env_with_leading_batch_dim_and_four_tuple():
    class Legacy(CountingEnv):
        def reset(self, seed=None):
            return {"obs": super().reset()["obs"].reshape(1, -1)}

        def step(self, action_dict):
            obs, reward, terminated, truncated, info = super().step(action_dict)
            info["TimeLimit.truncated"] = truncated
            return {"obs": obs["obs"].reshape(1, -1)}, reward["total_reward"], terminated or truncated, info
    worker, buf = _worker([Legacy(horizon=2)], lambda obs, det: {"action": np.zeros((1, 1), np.float32)})
    with pytest.warns(UserWarning, match="4-tuple"):
        worker.step()
    worker.step()
    assert buf.arrays["truncated"][0, :2].tolist() == [0, 1] and buf.arrays["obs"].shape[-1] == 1


def test_random_warmup_actions_in_range():
    worker, buf = _worker([CountingEnv()], None)
    for _ in range(50):
        worker.step(random=True)
    a = buf.arrays["action"][0, :50]
    assert a.min() >= -1 and a.max() <= 1 and a.std() > 0.3


def test_evaluate_statistics_in_waves_of_side_by_side_episodes():
    calls = []

    def policy(obs, deterministic):
        assert deterministic
        calls.append(len(obs["obs"]))
        return {"action": np.full((len(obs["obs"]), 1), 0.5, np.float32)}
    envs = [CountingEnv(horizon=4, target=0.0), CountingEnv(horizon=4, target=0.0, terminate_at=2)]
    stats = evaluate(envs, envs[0].obs_info, policy, episodes=3, seed=0)
    # waves: (env0: 4 steps, env1: 2 steps), then (env0: 4 steps)
    assert calls == [2, 2, 1, 1, 1, 1, 1, 1]
    assert stats["eval/return_mean"] == pytest.approx(-(2 + 1 + 2) / 3)
    assert stats["eval/length_mean"] == pytest.approx(10 / 3)
    assert stats["eval/return_min"] == pytest.approx(-2.0) and stats["eval/return_max"] == pytest.approx(-1.0)
