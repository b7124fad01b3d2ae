"""Trajectory datasets: recording, HDF5 round trips, atomic writes, replay-buffer export, behaviour cloning."""
import os

import gymnasium as gym
import h5py
import numpy as np
import pytest
import tensorflow as tf
from helpers import CountingEnv, MLPActor

from aquaml import DataInfo, GymnasiumEnv, RLBaseModel, SpecError
from aquaml import datasets
from aquaml.algos.sac import transition_info
from aquaml.buffers.replay import ReplayBuffer
from aquaml.datasets import (Trajectories, behaviour_cloning, load_data, record_policy, save_data,
                             trajectories_from_buffer)
from aquaml.acting.worker import evaluate


def two_obs_dataset(rows=7, starts=(0, 3, 5)):
    """A dataset with a float64 (2, 3) and a uint8 (4,) observation and a discrete action."""
    rng = np.random.default_rng(1)
    obs_info = DataInfo(("pose", "image"), ((2, 3), (4,)), (np.float64, np.uint8))
    action_info = DataInfo("action", (), np.int64, {"action": {"n": 3, "start": 0}})
    ends = np.zeros(rows, bool)
    ends[[s - 1 for s in starts[1:]] + [rows - 1]] = True
    columns = {"pose": rng.normal(size=(rows, 2, 3)), "image": rng.integers(0, 256, (rows, 4)).astype(np.uint8),
               "action": rng.integers(0, 3, rows), "reward": rng.normal(size=rows).astype(np.float32),
               "terminated": ends & (np.arange(rows) % 2 == 0), "truncated": ends & (np.arange(rows) % 2 == 1)}
    return Trajectories(obs_info, action_info, columns, np.asarray(starts, np.int64))


# --- recording -------------------------------------------------------------------------------------

def test_record_policy_keeps_the_observation_each_action_was_taken_on():
    env = CountingEnv(horizon=3, target=0.5)
    policy = lambda obs, det: {"action": obs["obs"] + 0.25}  # noqa: E731 - batch of 1 in, batch of 1 out
    data = record_policy(env, policy, episodes=2, action_info=DataInfo("action", (1,)))
    assert len(data) == 6 and data.episode_starts.tolist() == [0, 3]
    np.testing.assert_allclose(data.columns["obs"][:, 0], [0, 1 / 3, 2 / 3] * 2, rtol=1e-6)
    np.testing.assert_allclose(data.columns["action"][:, 0], data.columns["obs"][:, 0] + 0.25, rtol=1e-6)
    np.testing.assert_allclose(data.columns["reward"], -np.abs(data.columns["action"][:, 0] - 0.5), rtol=1e-6)
    assert data.columns["truncated"].tolist() == [False, False, True] * 2
    assert not data.columns["terminated"].any()
    np.testing.assert_allclose(data.episode_returns(), [data.columns["reward"][:3].sum()] * 2, rtol=1e-6)
    assert env.steps_taken == 6

    cut = record_policy(CountingEnv(horizon=3), policy, steps=4,  # a step limit ends mid-episode
                        action_info=DataInfo("action", (1,)))
    assert len(cut) == 4 and cut.episode_starts.tolist() == [0, 3] and cut.episode_lengths().tolist() == [3, 1]
    assert not cut.columns["truncated"][-1]


def test_record_policy_seeds_episode_k_with_seed_plus_k():
    data = record_policy(GymnasiumEnv("CartPole-v1"), lambda obs, det: {"action": np.array([0])},
                         episodes=2, seed=7)
    raw = gym.make("CartPole-v1")
    for k, start in enumerate(data.episode_starts):
        np.testing.assert_array_equal(data.columns["obs"][start], raw.reset(seed=7 + k)[0])
    assert data.columns["terminated"][data.episode_starts[1] - 1]  # always pushing left: the pole falls


def test_record_policy_rejects_a_wrong_action_and_needs_a_limit():
    with pytest.raises(SpecError, match="'action'.*expected shape"):
        record_policy(GymnasiumEnv("Pendulum-v1"), lambda obs, det: {"action": np.zeros((1, 2))}, steps=1)
    with pytest.raises(ValueError, match="steps=.*episodes="):
        record_policy(CountingEnv(), lambda obs, det: {"action": obs["obs"]}, action_info=DataInfo("action", (1,)))
    with pytest.raises(SpecError, match="declares no action_info"):
        record_policy(CountingEnv(), lambda obs, det: {"action": obs["obs"]}, steps=1)


def test_trajectories_reject_inconsistent_columns_and_episode_starts():
    data = two_obs_dataset()
    with pytest.raises(SpecError, match="same number of rows"):
        Trajectories(data.obs_info, data.action_info, {**data.columns, "reward": data.columns["reward"][:-1]},
                     data.episode_starts)
    with pytest.raises(SpecError, match="episode_starts"):
        Trajectories(data.obs_info, data.action_info, data.columns, np.array([0, 5, 3]))
    with pytest.raises(SpecError, match="'image'"):
        Trajectories(data.obs_info, data.action_info, {**data.columns, "image": data.columns["image"][:, :2]},
                     data.episode_starts)


# --- HDF5 files ------------------------------------------------------------------------------------

def test_save_and_load_round_trip_bit_exact_chunked_and_compressed(tmp_path):
    data = two_obs_dataset()
    path = str(tmp_path / "expert.h5")
    save_data(path, data)
    back = load_data(path)
    assert back.obs_info == data.obs_info and back.action_info == data.action_info
    assert set(back.columns) == set(data.columns)
    for name, want in data.columns.items():
        assert back.columns[name].dtype == want.dtype, name
        assert np.array_equal(back.columns[name], want), name
    assert back.columns["pose"].dtype == np.float64 and back.columns["image"].dtype == np.uint8
    assert back.episode_starts.dtype == np.int64 and back.episode_starts.tolist() == [0, 3, 5]
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == datasets.FORMAT_VERSION
        for location in ("obs/pose", "obs/image", "action", "reward", "terminated", "truncated", "episode_starts"):
            assert f[location].compression == "gzip", location
            assert f[location].chunks is not None, location
        assert DataInfo.from_json(f.attrs["obs_info"]) == data.obs_info
    empty = Trajectories(data.obs_info, data.action_info, {n: a[:0] for n, a in data.columns.items()}, [])
    save_data(str(tmp_path / "empty.hdf5"), empty)
    assert len(load_data(str(tmp_path / "empty.hdf5"))) == 0
    with pytest.raises(ValueError, match=r"\.h5 or \.hdf5"):
        save_data(str(tmp_path / "expert.npz"), data)


def test_load_data_names_the_field_that_differs_from_the_task(tmp_path):
    data = two_obs_dataset()
    path = str(tmp_path / "expert.h5")
    save_data(path, data)
    with pytest.raises(SpecError,
                       match=r"expert\.h5: observation 'image' has shape \(4,\) but the task expects \(3,\)"):
        load_data(path, obs_info=DataInfo(("pose", "image"), ((2, 3), (3,)), (np.float64, np.uint8)))
    with pytest.raises(SpecError, match="observation 'pose' has dtype float64 but the task expects float32"):
        load_data(path, obs_info=DataInfo("pose", (2, 3), np.float32))
    with pytest.raises(SpecError, match="observation 'velocity' is missing"):
        load_data(path, obs_info=DataInfo("velocity", (3,)))
    with pytest.raises(SpecError, match="action 'action' has number of choices 3 but the task expects 2"):
        load_data(path, action_info=DataInfo("action", (), np.int64, {"action": {"n": 2}}))
    only_pose = load_data(path, obs_info=DataInfo("pose", (2, 3), np.float64), action_info=data.action_info)
    assert only_pose.obs_info.names == ("pose",) and "image" not in only_pose.columns


def test_load_data_says_which_path_is_missing_or_not_a_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.h5"):
        load_data(str(tmp_path / "nowhere.h5"))
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(ValueError, match="text.h5.*not a readable HDF5"):
        load_data(str(tmp_path / "text.h5"))
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="other.h5.*not an aquaml dataset"):
        load_data(str(tmp_path / "other.h5"))


def test_a_write_that_fails_midway_leaves_no_file_and_an_old_file_intact(tmp_path, monkeypatch):
    old, new = two_obs_dataset(), two_obs_dataset(rows=9, starts=(0, 4))
    kept = str(tmp_path / "kept.h5")
    save_data(kept, old)
    real, calls = datasets._write_array, []

    def failing(*args, **kwargs):
        calls.append(args[1])
        if len(calls) in (3, 6):  # the third dataset of each save
            raise OSError("disk full")
        real(*args, **kwargs)

    monkeypatch.setattr(datasets, "_write_array", failing)
    with pytest.raises(OSError, match="disk full"):
        save_data(kept, new)
    with pytest.raises(OSError, match="disk full"):
        save_data(str(tmp_path / "fresh.h5"), new)
    assert len(calls) == 6  # both writes really were cut off after two datasets
    assert sorted(os.listdir(tmp_path)) == ["kept.h5"]  # no fresh.h5, no temporary files
    back = load_data(kept)
    assert len(back) == 7 and np.array_equal(back.columns["pose"], old.columns["pose"])


# --- replay buffer export --------------------------------------------------------------------------

def buffer_rows(k, done_at=()):
    """Row ``k`` of a made-up stream: obs = k, episodes ending at the indices in ``done_at``."""
    return {"obs": np.array([[k]], np.float32), "next_obs": np.array([[k + 1]], np.float32),
            "action": np.array([[k / 100]], np.float32), "reward": np.array([k], np.float32),
            "terminated": np.array([float(k in done_at)], np.float32), "truncated": np.zeros(1, np.float32)}


def test_trajectories_from_a_wrapped_replay_buffer_are_in_write_order():
    obs_info, action_info = DataInfo("obs", (1,)), DataInfo("action", (1,))
    buffer = ReplayBuffer(transition_info(obs_info, action_info), capacity=10, num_slices=2)
    for k in range(8):  # slice 0 holds 5 rows: after 8 writes, rows 3..7, stored as 5 6 7 3 4
        buffer.write_batch(0, buffer_rows(k, done_at=(4,)))
    for k in range(100, 103):
        buffer.write_batch(1, buffer_rows(k))
    data = trajectories_from_buffer(buffer, obs_info, action_info)
    assert data.columns["obs"][:, 0].tolist() == [3, 4, 5, 6, 7, 100, 101, 102]
    np.testing.assert_allclose(data.columns["action"][:, 0], data.columns["obs"][:, 0] / 100, rtol=1e-6)
    assert data.columns["terminated"].dtype == bool and data.columns["terminated"].tolist() == [
        False, True] + [False] * 6
    assert data.episode_starts.tolist() == [0, 2, 5]  # wrapped start, after the termination, slice 1

    interleaved = ReplayBuffer(transition_info(obs_info, action_info), capacity=6)
    for k in range(4):  # two environments per write: (0, 10), (1, 11), ... of which the last 6 rows stay
        rows = [buffer_rows(k), buffer_rows(10 + k, done_at=(11,))]
        interleaved.write_batch(0, {n: np.concatenate([r[n] for r in rows]) for n in rows[0]})
    split = trajectories_from_buffer(interleaved, obs_info, action_info, envs_per_slice=2)
    assert split.columns["obs"][:, 0].tolist() == [1, 2, 3, 11, 12, 13]
    assert split.episode_starts.tolist() == [0, 3, 4]


# --- behaviour cloning -----------------------------------------------------------------------------

def cartpole_expert(obs, deterministic=True):
    """Push toward where the pole is falling, with a little cart centring: 500 on every seed tried."""
    x, x_dot, theta, theta_dot = np.asarray(obs["obs"], np.float64).T
    return {"action": (theta + 0.5 * theta_dot + 0.05 * x + 0.1 * x_dot > 0).astype(np.int64)}


def pendulum_expert(obs, deterministic=True):
    """Energy-shaping swing-up (torque along the velocity while the energy is short of the upright
    value), then a PD stabiliser once the pole is within ~45 degrees of upright. Actions in [-1, 1]."""
    cos, sin, vel = np.asarray(obs["obs"], np.float64).T
    angle = np.arctan2(sin, cos)  # 0 is upright
    energy = 0.5 * vel ** 2 + 15.0 * cos  # theta'' = 15 sin(theta) + 3 u: the upright rest has 15
    swing = np.where(np.abs(vel) < 1e-3, 1.0, 0.1 * (15.0 - energy) * vel)
    torque = np.where(cos > 0.7, -(10.0 * angle + 2.0 * vel) / 2.0, swing)
    return {"action": np.clip(torque, -1.0, 1.0)[:, None].astype(np.float32)}


def clone_policy(actor, discrete):
    """The clone's deterministic action for a batch: argmax of the logits, or tanh of the mean."""
    out = tf.function(lambda obs: actor(obs)[0])
    if discrete:
        return lambda obs, det: {"action": np.argmax(out(tf.constant(obs["obs"])).numpy(), axis=-1)}
    return lambda obs, det: {"action": np.tanh(out(tf.constant(obs["obs"])).numpy())}


def built_actor(action_dim, obs_dim, seed=0):
    tf.random.set_seed(seed)
    actor = MLPActor(action_dim=action_dim)
    actor(tf.zeros((1, obs_dim)))
    return actor


def test_cloning_a_cartpole_expert_reaches_most_of_its_return(tmp_path):
    env = GymnasiumEnv("CartPole-v1")
    expert = record_policy(env, cartpole_expert, episodes=6, seed=100)
    assert expert.episode_returns().tolist() == [500.0] * 6
    path = str(tmp_path / "cartpole.h5")
    save_data(path, expert)
    data = load_data(path, obs_info=env.obs_info, action_info=env.action_info)
    actor = built_actor(2, 4)  # output_info {'action': (2,), 'log_std': (2,)}: the logits come first
    metrics = behaviour_cloning(actor, data, epochs=30, batch_size=128, seed=0)  # Adam at the actor's 1e-3
    # near upright the expert flips its push every few steps, so copying it exactly is not needed
    assert metrics["bc/val_accuracy"] > 0.75 and metrics["bc/train_accuracy"] > 0.75
    envs = [GymnasiumEnv("CartPole-v1") for _ in range(5)]
    expert_eval = evaluate(envs, env.obs_info, cartpole_expert, 5, seed=1000)["eval/return_mean"]
    clone_eval = evaluate(envs, env.obs_info, clone_policy(actor, True), 5, seed=1000)["eval/return_mean"]
    assert expert_eval == 500.0
    assert clone_eval >= 0.8 * expert_eval, (clone_eval, metrics)


def test_cloning_a_pendulum_swing_up_expert_with_tanh_squashing():
    env = GymnasiumEnv("Pendulum-v1")
    expert = record_policy(env, pendulum_expert, episodes=30, seed=100)
    actor = built_actor(1, 3)
    metrics = behaviour_cloning(actor, expert, epochs=40, batch_size=128, learning_rate=3e-3, seed=0)
    envs = [GymnasiumEnv("Pendulum-v1") for _ in range(10)]
    expert_eval = evaluate(envs, env.obs_info, pendulum_expert, 10, seed=1000)["eval/return_mean"]
    clone_eval = evaluate(envs, env.obs_info, clone_policy(actor, False), 10, seed=1000)["eval/return_mean"]
    assert -250 < expert_eval < -100  # random actions score about -1200
    assert clone_eval > 1.5 * expert_eval, (clone_eval, expert_eval, metrics)  # returns are negative


class LinearActor(RLBaseModel):
    def __init__(self):
        super().__init__()
        self.dense = tf.keras.layers.Dense(1)
        self.learning_rate = 0.05
        self.output_info = {"action": (1,)}

    def call(self, obs):
        return (self.dense(obs),)


def test_squash_chooses_whether_tanh_of_the_output_or_the_output_itself_copies_the_action():
    x = np.linspace(-1, 1, 256, dtype=np.float32)[:, None]
    action = np.tanh(2.0 * x)  # tanh(2 x) exactly, or the best straight line through it
    data = Trajectories(DataInfo("obs", (1,)), DataInfo("action", (1,)),
                        {"obs": x, "action": action, "reward": np.zeros(256, np.float32),
                         "terminated": np.zeros(256, bool), "truncated": np.zeros(256, bool)}, [0])
    tf.keras.utils.set_random_seed(0)  # the same start whatever ran before
    raw, squashed = LinearActor(), LinearActor()
    for actor, squash in ((raw, False), (squashed, True)):
        actor(tf.zeros((1, 1)))
        behaviour_cloning(actor, data, epochs=150, batch_size=64, squash=squash, validation_fraction=0.0)
    slope = np.linalg.lstsq(x, action[:, 0], rcond=None)[0][0]  # about 1.13
    one = tf.ones((1, 1))
    assert float(raw(one)[0][0, 0]) == pytest.approx(slope, abs=0.05)  # the output is the action
    assert float(squashed(one)[0][0, 0]) == pytest.approx(2.0, abs=0.2)  # tanh(output) is the action (raw: 1.13)


def test_behaviour_cloning_checks_the_actor_against_the_dataset():
    data = record_policy(CountingEnv(horizon=3), lambda obs, det: {"action": obs["obs"]}, episodes=1,
                         action_info=DataInfo("action", (1,)))
    with pytest.raises(SpecError, match=r"reads \['state'\].*observations are \('obs',\)"):
        behaviour_cloning(MLPActor(obs_name="state"), data, epochs=1)
    with pytest.raises(SpecError, match=r"action has shape \(1,\) but the actor's output_info\['action'\] is \(2,\)"):
        behaviour_cloning(MLPActor(action_dim=2), data, epochs=1)
    discrete = two_obs_dataset()
    actor = MLPActor(action_dim=2, obs_name="pose")
    with pytest.raises(SpecError, match=r"choice among 3.*must be \(3,\)"):
        behaviour_cloning(actor, discrete, epochs=1)


def test_cloning_into_ppo_learns_on_the_observations_as_ppo_normalises_them():
    """Observations around 50: PPO with normalize_obs feeds its actor (obs - mean) / std, so a clone
    trained on the raw rows would see other inputs when PPO acts. Cloned through the algorithm, the
    statistics come from the dataset and PPO's deterministic action reproduces the expert's."""
    from test_ppo import Actor, Critic, make_ppo
    rng = np.random.default_rng(2)

    def rows(n):
        obs = (50.0 + 5.0 * rng.normal(size=(n, 3))).astype(np.float32)
        return obs, np.clip(0.4 * (obs[:, :1] - 50.0) / 5.0, -1, 1).astype(np.float32)
    obs, action = rows(2048)
    data = Trajectories(DataInfo("obs", (3,)), DataInfo("action", (1,)),
                        {"obs": obs, "action": action, "reward": np.zeros(len(obs), np.float32),
                         "terminated": np.zeros(len(obs), bool), "truncated": np.zeros(len(obs), bool)}, [0])
    tf.keras.utils.set_random_seed(0)
    ppo = make_ppo(DataInfo("action", (1,)), {"actor": Actor, "critic": Critic}, normalize_obs=True)
    behaviour_cloning(ppo, data, epochs=20, batch_size=128, validation_fraction=0.0)
    np.testing.assert_allclose(ppo.obs_rms["obs"].mean, obs.mean(0), rtol=1e-5)  # statistics from the dataset
    test_obs, want = rows(512)
    got = ppo.act({"obs": test_obs}, deterministic=True)["action"]
    assert np.mean((got - want) ** 2) < 0.01
