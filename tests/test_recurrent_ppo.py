"""Recurrent (LSTM) PPO: chunking, replay from the stored state, masking, gradients through time, a run."""
import os

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf
from helpers import load_tutorial

from aquaml import PPO, PPOParameters, RLBaseModel
from aquaml.algos.ppo import to_sequences
from aquaml.models.base import build_models
from aquaml.models.recurrent import with_recurrent
from aquaml.acting.worker import Worker

tutorial2 = load_tutorial("tutorial2")
STEPS, LENGTH = 20, 8  # 20 steps per segment: chunks of 8, 8 and 4 real steps + 4 padded


class ShortPendulum(tutorial2.PendulumPOMDPWrapper):
    """Tutorial 2's partially observed Pendulum, truncated after 7 steps: episodes end inside chunks."""

    def __init__(self):
        super().__init__()
        self.env = gym.make("Pendulum-v1", max_episode_steps=7)


class SharedLSTM(RLBaseModel):
    """One model for policy and value: an LSTM on the angle, with ``value`` as an extra output."""

    def __init__(self):
        super().__init__()
        self.lstm = tf.keras.layers.LSTMCell(16)
        self.mu = tf.keras.layers.Dense(1)
        self.v = tf.keras.layers.Dense(1)
        self.learning_rate = 1e-3
        self.input_name = ("pos", "hidden1", "hidden2")
        self.output_info = {"action": (1,), "value": (1,), "hidden1": (16,), "hidden2": (16,)}

    def call(self, pos, hidden1, hidden2):
        x, (h, c) = self.lstm(pos, [hidden1, hidden2])
        return (self.mu(x), self.v(x), h, c)


def make_ppo(classes=None, **params):
    """PPO on tutorial 2's LSTM actor and V critic, set up as RLTaskStarter does, with its envs."""
    envs = [ShortPendulum() for _ in range(2)]
    classes = classes or {"actor": lambda: tutorial2.Actor_net(with_log_std=False), "critic": tutorial2.V_net}
    models, action_info = build_models(classes, PPO.required_models, envs[0].obs_info, envs[0].action_info,
                                       PPO.optional_models, PPO.critics_take_action)
    state_info = models["actor"].state_info
    obs_info = with_recurrent(envs[0].obs_info, state_info)
    for env in envs:
        env.set_recurrent_info(state_info)
    params = PPOParameters(**{"rollout_steps": STEPS, "envs_per_worker": 2, "sequence_length": LENGTH,
                              "batch_size": 2 * LENGTH, "update_epochs": 2, **params})
    ppo = PPO(models, obs_info, action_info, params)
    buffer = ppo.make_buffer(num_slices=2)
    workers = [Worker(envs if w == 0 else [ShortPendulum() for _ in range(2)], obs_info, action_info, ppo.act,
                      buffer, slice_index=w, seed=10 * w) for w in range(2)]
    for worker in workers[1:]:
        for env in worker.envs:
            env.set_recurrent_info(state_info)
    return ppo, buffer, workers


def collect(ppo, buffer, workers):
    """One segment per worker; returns the chunks with advantages, returns and values."""
    for worker in workers:
        for _ in range(STEPS):
            worker.step()
    segments = buffer.segments()
    columns = {k: segments[k] for k in ppo.minibatch_info.names if k in segments}
    columns.update({k: v.reshape(segments["reward"].shape) for k, v in ppo.advantages(segments).items()})
    done = np.maximum(segments["terminated"], segments["truncated"]) > 0
    return segments, to_sequences(columns, done, LENGTH)


@pytest.fixture(scope="module")
def rollout():
    ppo, buffer, workers = make_ppo(normalize_obs=True)
    _, chunks = collect(ppo, buffer, workers)
    return ppo, chunks


def replay_log_prob(ppo, chunks):
    return ppo.sequence_losses(chunks)["log_prob"].numpy().reshape(chunks["mask"].shape)


def test_sequence_length_must_be_a_positive_int():
    assert PPOParameters().sequence_length == 64 and PPOParameters(batch_size=100, sequence_length=64) \
        .sequences_per_batch == 1
    assert PPOParameters(batch_size=512, sequence_length=64).sequences_per_batch == 8
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="sequence_length must be a positive int"):
            PPOParameters(sequence_length=bad)


def test_chunks_keep_each_environments_time_series_and_mark_padding_and_resets():
    # 1 worker, 5 steps, 2 envs, chunks of 3: env 0's episode ends at step 1, env 1's at step 2
    t = np.arange(5, dtype=np.float32)
    x = np.stack([t, 10 + t], axis=1)[None]  # (1, 5, 2): env 1's steps are 10..14
    done = np.zeros((1, 5, 2), bool)
    done[0, 1, 0] = done[0, 2, 1] = True
    chunks = to_sequences({"x": x}, done, 3)
    np.testing.assert_array_equal(chunks["x"], [[0, 1, 2], [3, 4, 0], [10, 11, 12], [13, 14, 0]])
    np.testing.assert_array_equal(chunks["mask"], [[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 1, 0]])
    # env 0: step 2 starts an episode (position 2 of chunk 0); env 1: step 3 (position 0 of chunk 1,
    # where the chunk starts from the stored state anyway)
    np.testing.assert_array_equal(chunks["reset"], [[0, 0, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0]])


def test_replay_reproduces_the_stored_log_prob_of_every_real_step(rollout):
    ppo, chunks = rollout
    assert ppo.recurrent and ppo.state_names == ("hidden1", "hidden2")
    assert set(ppo.norm_names) == {"pos", "obs"}  # the state entries are never normalised
    mask = chunks["mask"] > 0
    # the set-up is what the test is about: episode starts inside chunks, and padding
    assert chunks["reset"].sum() >= 4 and (~mask).sum() == 4 * 4
    replayed = replay_log_prob(ppo, chunks)
    np.testing.assert_allclose(replayed[mask], chunks["log_prob"][mask], atol=1e-5, rtol=0)
    # carrying the state across an episode end instead would be caught
    leaky = replay_log_prob(ppo, {**chunks, "reset": np.zeros_like(chunks["reset"])})
    assert np.abs(leaky - chunks["log_prob"])[mask].max() > 1e-3


def test_replay_still_matches_after_a_training_round_with_observation_statistics():
    ppo, buffer, workers = make_ppo(normalize_obs=True)
    segments, _ = collect(ppo, buffer, workers)
    metrics = dict(zip(PPO.metric_names, ppo.train(segments)))
    assert metrics["losses/epochs"] == 2 and np.all(np.isfinite(list(metrics.values())))
    assert metrics["losses/approx_kl"] > 0  # the round's first minibatch is on-policy, later ones not
    assert not np.allclose(ppo.norm_mean["pos"].numpy(), 0)  # the statistics moved
    _, chunks = collect(ppo, buffer, workers)  # the next segment, acted with the new weights and statistics
    mask = chunks["mask"] > 0
    np.testing.assert_allclose(replay_log_prob(ppo, chunks)[mask], chunks["log_prob"][mask], atol=1e-5, rtol=0)


def test_a_shared_recurrent_actor_critic_replays_its_values_and_trains():
    ppo, buffer, workers = make_ppo({"actor": SharedLSTM}, normalize_obs=True)
    assert ppo.shared and ppo.recurrent and set(ppo.norm_names) == {"pos"}
    segments, chunks = collect(ppo, buffer, workers)
    mask = chunks["mask"] > 0
    # the values GAE used (per step, from the stored state) are those the replay computes
    replayed = ppo.sequence_outputs(chunks)["value"].numpy().reshape(mask.shape)
    np.testing.assert_allclose(replayed[mask], chunks["value"][mask], atol=1e-5, rtol=0)
    np.testing.assert_allclose(replay_log_prob(ppo, chunks)[mask], chunks["log_prob"][mask], atol=1e-5, rtol=0)
    before = [w.copy() for w in ppo.actor.model.get_weights()]
    metrics = dict(zip(PPO.metric_names, ppo.train(segments)))
    assert metrics["losses/value_loss"] > 0 and np.all(np.isfinite(list(metrics.values())))
    assert all(not np.array_equal(a, b) for a, b in zip(before, ppo.actor.model.get_weights()))


def test_padding_and_steps_before_an_episode_start_carry_nothing(rollout):
    ppo, chunks = rollout
    rng = np.random.default_rng(0)
    base = ppo.sequence_losses(chunks)
    # 1. new data in every column of the padded steps: no loss moves
    padded = {k: v.copy() for k, v in chunks.items()}
    pad = chunks["mask"] == 0
    for k in ppo.minibatch_info.names:
        padded[k][pad] = rng.normal(size=padded[k][pad].shape).astype(padded[k].dtype)
    changed = ppo.sequence_losses(padded)
    for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"):
        assert changed[k].numpy() == pytest.approx(base[k].numpy(), abs=1e-6), k
    # 2. a new observation just before an episode start changes that step, nothing after the start
    c, t = (int(i[0]) for i in np.nonzero(chunks["reset"][:, 2:-1]))  # a reset with steps on both sides
    t += 2
    edited = {k: v.copy() for k, v in chunks.items()}
    edited["pos"][c, t - 1] = [-1.0, 0.0]
    before, after = replay_log_prob(ppo, chunks), replay_log_prob(ppo, edited)
    assert abs(after[c, t - 1] - before[c, t - 1]) > 1e-4
    np.testing.assert_array_equal(after[c, t:], before[c, t:])
    np.testing.assert_array_equal(np.delete(after, c, axis=0), np.delete(before, c, axis=0))


def test_gradient_flows_through_time_within_an_episode_and_stops_at_its_start(rollout):
    ppo = rollout[0]
    rng = np.random.default_rng(1)
    angle = rng.uniform(-np.pi, np.pi, size=(1, LENGTH))
    chunk = {n: np.zeros((1, LENGTH) + ppo.obs_info.shape(n), np.float32) for n in ppo.actor.input_names}
    chunk["pos"][:] = np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    sample = tf.constant(rng.normal(size=(LENGTH, 1)), tf.float32)

    def grad_of_last_step(reset):
        pos = tf.constant(chunk["pos"])
        with tf.GradientTape() as tape:
            tape.watch(pos)
            out = ppo.sequence_outputs({**chunk, "pos": pos, "reset": reset})
            last = ppo.log_prob_entropy(out, sample)[0][-1]
        return tape.gradient(last, pos).numpy()[0]

    grad = grad_of_last_step(np.zeros((1, LENGTH), bool))
    assert np.abs(grad[0]).max() > 1e-6  # the last step's loss reaches the first step's observation
    reset = np.zeros((1, LENGTH), bool)
    reset[0, 3] = True  # an episode starts at step 3: steps 0-2 belong to another episode
    grad = grad_of_last_step(reset)
    assert np.all(grad[:3] == 0) and np.abs(grad[3]).max() > 1e-6


def test_recurrent_ppo_runs_through_the_starter(run_root):
    result = tutorial2.main(["--algo", "ppo", "--steps", "4096", "--eval-interval", "4096", "--run-root", run_root,
                             "--name", "rppo", "--threads", "1"])
    assert np.isfinite(result["eval/return_mean"])
    run_dir = os.path.join(run_root, "rppo")
    assert sorted(os.listdir(os.path.join(run_dir, "models"))) == \
        ["actor.weights.h5", "critic.weights.h5", "ppo_state.npz"]
    with open(os.path.join(run_dir, "progress.csv")) as f:
        rows = f.read().splitlines()
    assert len(rows) >= 3 and "losses/policy_loss" in rows[0]  # a header and a row per round
