"""Recurrent actors: state as observation entries, what the buffer stores, sequence replay for SAC,
a task that needs memory, and the recurrent path under mpiexec."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from aquaml import DataInfo, RLTaskStarter, SAC, SACParameters, load_policy
from aquaml.buffers.replay import ReplayBuffer
from aquaml.models.base import ModelContractError
from aquaml.models.recurrent import sequence_mask
from aquaml.acting.worker import evaluate
from helpers import CountingEnv, MLPQ, load_tutorial
from memory_task import LENGTH, CueEnv, LSTMActor, MLPActor, StateQ

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
tutorial2 = load_tutorial("tutorial2")


class CountingLSTM(LSTMActor):
    """An LSTM actor on CountingEnv's ``obs``."""

    def __init__(self):
        super().__init__(units=4)
        self.input_name = ("obs", "hidden1", "hidden2")


class NoHooksEnv(CountingEnv):
    """Never calls initial_obs/check_obs: the worker must fill the state in by itself."""

    def reset(self, seed=None):
        self.t = 0
        return self._obs()

    def step(self, action_dict):
        obs, reward, terminated, truncated, info = super().step(action_dict)
        return self._obs(), reward, terminated, truncated, info


def starter(env, actor, params, tmp_path, critic=MLPQ, **kw):
    return RLTaskStarter(env, {"actor": actor, "qf1": critic, "qf2": critic}, SAC, params,
                         run_root=str(tmp_path), verbose=False, tensorboard=False, **kw)


def recording(policy, log):
    def act(obs, deterministic):
        log.append({k: v.copy() for k, v in obs.items()})
        out = policy(obs, deterministic)
        log[-1]["returned"] = {k: v.copy() for k, v in out.items()}
        return out
    return act


def test_recurrent_entries_join_the_observation_spec(tmp_path):
    s = starter(CountingEnv(), CountingLSTM, SACParameters(learning_starts=64, sequence_length=8, burn_in=2), tmp_path)
    assert s.obs_info.names == ("obs", "hidden1", "hidden2")
    assert s.obs_info.shape("hidden1") == (4,) and s.algo.recurrent
    assert s.envs[0].reset()["hidden2"].tolist() == [0.0] * 4  # the environment's own hook zero-fills


def test_a_recurrent_entry_the_environment_declares_differently_is_refused(tmp_path):
    class Declares(CountingEnv):
        def __init__(self):
            super().__init__()
            self._obs_info = DataInfo(("obs", "hidden1"), ((1,), (3,)), np.float32)

    with pytest.raises(ModelContractError, match=r"'hidden1' is the actor's recurrent state.*\(4,\)"):
        starter(Declares(), CountingLSTM, SACParameters(learning_starts=64, sequence_length=8, burn_in=2), tmp_path)


def test_learning_starts_must_cover_a_sequence(tmp_path):
    with pytest.raises(ValueError, match="learning_starts must be at least sequence_length"):
        starter(CountingEnv(), CountingLSTM, SACParameters(learning_starts=10, sequence_length=16, burn_in=2), tmp_path)


@pytest.mark.parametrize("env_class", [CountingEnv, NoHooksEnv])
@pytest.mark.parametrize("envs", [1, 3])
def test_the_buffer_stores_the_state_the_actor_received(env_class, envs, tmp_path):
    params = SACParameters(learning_starts=64, sequence_length=8, burn_in=2, envs_per_worker=envs)
    s = starter(env_class(horizon=5), CountingLSTM, params, tmp_path)
    log = []
    s.worker.policy = recording(s.algo.act, log)
    for t in range(12):  # episodes of 5 steps: two resets per environment on the way
        s.worker.step(random=t < 3)  # warm-up steps take random actions but still run the actor
    rows = s.buffer.arrays
    for t, seen in enumerate(log):
        for e in range(envs):
            row = t * envs + e
            for n in ("hidden1", "hidden2"):
                np.testing.assert_array_equal(rows[n][0, row], seen[n][e])  # the input at t, not t + 1
                np.testing.assert_array_equal(rows["next_" + n][0, row], seen["returned"][n][e])
            if t % 5 == 0:  # an episode's first step starts from zeros
                assert not rows["hidden1"][0, row].any()
            else:  # inside an episode, the state is what the actor returned one step earlier
                np.testing.assert_array_equal(seen["hidden1"][e], log[t - 1]["returned"]["hidden1"][e])
    assert np.abs(rows["hidden1"][0, :12 * envs]).max() > 0


def test_sequences_are_one_environment_in_order_and_never_cross_the_write_head():
    info = DataInfo(("env", "t"), ((), ()), np.int64)
    buf = ReplayBuffer(info, capacity=3 * 20, num_slices=2, stride=3)
    assert buf.slice_capacity == 30
    for t in range(17):  # slice 0 wraps around (51 rows into 30), slice 1 holds 6 steps
        buf.write_batch(0, {"env": np.arange(3), "t": np.full(3, t)})
        if t < 6:
            buf.write_batch(1, {"env": np.arange(3) + 10, "t": np.full(3, t)})
    seqs = buf.sample_sequences(4000, 5, np.random.default_rng(0))
    assert seqs["t"].shape == (4000, 5)
    assert (np.diff(seqs["t"], axis=1) == 1).all()  # consecutive steps of ...
    assert (seqs["env"] == seqs["env"][:, :1]).all()  # ... one environment
    slice0 = seqs["env"][:, 0] < 10
    assert seqs["t"][slice0, 0].min() == 7 and seqs["t"][slice0, -1].max() == 16  # only rows still held
    assert seqs["t"][~slice0, -1].max() == 5 and (~slice0).any()
    with pytest.raises(ValueError, match="holds a sequence of 18 steps"):
        buf.sample_sequences(1, 18, np.random.default_rng(0))


def test_sequence_mask_stops_after_an_episode_end_and_skips_burn_in():
    terminated = np.array([[0, 0, 1, 0, 0], [0, 0, 0, 0, 0]], np.float32)
    truncated = np.array([[0, 0, 0, 0, 0], [0, 1, 0, 0, 1]], np.float32)
    np.testing.assert_array_equal(sequence_mask(terminated, truncated).numpy(),
                                  [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(sequence_mask(terminated, truncated, burn_in=1).numpy(),
                                  [[0, 1, 1, 0, 0], [0, 1, 0, 0, 0]])


def pomdp_batch(tmp_path, burn_in, steps=300, sequences=6, length=12):
    params = SACParameters(learning_starts=64, sequence_length=length, burn_in=burn_in, seed=3)
    s = starter(tutorial2.PendulumPOMDPWrapper(), tutorial2.Actor_net, params, tmp_path, critic=tutorial2.Q_net)
    for _ in range(steps):
        s.worker.step()
    s.algo._noise = tf.zeros  # the losses become deterministic functions of the batch
    batch = s.buffer.sample_sequences(sequences, length, np.random.default_rng(0))
    return s.algo, batch


def losses(algo, batch):
    qf, pi = algo.sequence_losses({k: tf.constant(v) for k, v in batch.items()})
    return float(qf), float(pi)


def test_burn_in_steps_carry_no_loss_and_nothing_leaks_across_an_episode_end(tmp_path):
    algo, batch = pomdp_batch(tmp_path, burn_in=4)
    base = losses(algo, batch)

    changed = {k: v.copy() for k, v in batch.items()}
    changed["reward"][:, :4] += 100.0  # only the burn-in steps' targets move
    changed["action"][:, :4] = -changed["action"][:, :4]
    assert losses(algo, changed) == pytest.approx(base, rel=1e-6)

    changed = {k: v.copy() for k, v in batch.items()}
    changed["reward"][:, 6] += 100.0  # a trained step: the critic loss must notice
    assert losses(algo, changed)[0] != pytest.approx(base[0], rel=1e-3)

    # an episode ends at step 7 of sequence 0: steps 8.. belong to the next episode
    ended = {k: v.copy() for k, v in batch.items()}
    ended["truncated"][0, :] = 0.0
    ended["terminated"][0, :] = 0.0
    ended["truncated"][0, 7] = 1.0
    base = losses(algo, ended)
    after = {k: v.copy() for k, v in ended.items()}
    for n in ("pos", "obs", "reward", "action", "next_pos", "next_obs"):
        after[n][0, 8:] = np.random.default_rng(1).normal(size=after[n][0, 8:].shape) * 5
    assert losses(algo, after) == pytest.approx(base, rel=1e-6)
    before = {k: v.copy() for k, v in ended.items()}
    before["reward"][0, 7] += 100.0  # the ending step itself still counts
    assert losses(algo, before)[0] != pytest.approx(base[0], rel=1e-3)


@pytest.mark.parametrize("burn_in", [0, 3])
def test_gradients_flow_through_time(burn_in, tmp_path):
    algo, batch = pomdp_batch(tmp_path, burn_in=burn_in)
    for k in ("terminated", "truncated"):
        batch[k][:] = 0.0  # one episode throughout
    pos = tf.Variable(batch["pos"])

    def last_step_output(pos_values):
        outs, _, _ = algo.replay_sequences({**{k: tf.constant(v) for k, v in batch.items()}, "pos": pos_values})
        return tf.reshape(outs["action"], (len(batch["pos"]), -1))[:, -1]  # the action at step L - 1

    with tf.GradientTape() as tape:
        out = tf.reduce_sum(last_step_output(pos))
    grad0 = tape.gradient(out, pos).numpy()[:, 0]  # d(action at L - 1) / d(observation at step 0)
    moved = batch["pos"].copy()
    moved[:, 0] += 0.5
    change = np.abs(last_step_output(tf.constant(moved)).numpy() - last_step_output(pos).numpy())
    assert change.min() > 0  # a change at step 0 changes the output at step L - 1 ...
    if burn_in == 0:
        assert np.abs(grad0).min() > 0  # ... and the gradient carries it back
    else:
        assert not grad0.any()  # burn-in steps only warm the state up: no gradient into them


def memory_run(actor, tmp_path):
    params = SACParameters(total_steps=2_000, epoch_length=500, batch_size=64, learning_starts=240,
                           sequence_length=LENGTH, burn_in=0, eval_interval=0, calculate_episodes=10,
                           buffer_size=10_000, alpha=0.1, seed=0)
    s = starter(CueEnv(), actor, params, tmp_path, critic=StateQ, optimizer_threads=1)
    return s, s.run()["eval/return_mean"]


def test_a_task_that_needs_memory_is_solved_by_the_lstm_and_not_by_a_feed_forward_actor(tmp_path):
    s, lstm = memory_run(LSTMActor, tmp_path)
    _, mlp = memory_run(MLPActor, tmp_path)
    assert lstm > -0.1, lstm  # remembers the cue through the whole episode
    assert mlp < -0.9, mlp    # without memory the best is -1 on balanced cues

    # the exported policy returns its state beside the action and, fed it back, acts the same
    policy = load_policy(s.run_dir)
    assert policy.state_info.names == ("hidden1", "hidden2")
    envs = [CueEnv() for _ in range(10)]
    for env in envs:
        env.set_recurrent_info(policy.state_info)
    exported = evaluate(envs, s.obs_info, policy, 10, seed=0)
    assert exported["eval/return_mean"] == pytest.approx(lstm, abs=1e-6)
    out = policy.act({"cue": np.ones(1, np.float32), **policy.state_info.zeros()})
    assert set(out) == {"action", "hidden1", "hidden2"} and out["hidden1"].shape == (16,)


def test_tutorial2_recurrent_sac_under_mpiexec_3(tmp_path):
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    proc = subprocess.run([mpiexec, "-n", "3", sys.executable, os.path.join(ROOT, "tutorials", "tutorial2.py"),
                           "--steps", "2000", "--eval-interval", "1000", "--run-root", str(tmp_path)],
                          capture_output=True, text=True, timeout=400, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"final evaluation return: -?\d+\.\d", proc.stdout), proc.stdout[-2000:]
    config = (tmp_path / "pomdp_sac_lstm" / "config.json").read_text()
    assert '"ranks": 3' in config and '"hidden1"' in config
    assert (tmp_path / "pomdp_sac_lstm" / "policy" / "policy.json").exists()


class ViewQ(tutorial2.Q_net):
    """A critic on the actor's own view: the angle and the actor's recurrent state."""

    def __init__(self):
        super().__init__()
        self.input_name = ("pos", "hidden1", "hidden2", "action")

    def call(self, pos, hidden1, hidden2, action):
        return self.q(self.dense2(self.dense1(tf.concat([pos, hidden1, hidden2, action], axis=-1))))


def test_replay_reproduces_the_stored_states_and_critics_may_read_them(tmp_path):
    params = SACParameters(learning_starts=64, sequence_length=10, burn_in=0, seed=5)
    s = starter(tutorial2.PendulumPOMDPWrapper(), tutorial2.Actor_net, params, tmp_path, critic=ViewQ)
    for _ in range(450):  # 2 episode ends on the way; the weights do not change
        s.worker.step()
    batch = s.buffer.sample_sequences(300, 10, np.random.default_rng(0))
    _, flat, mask = s.algo.replay_sequences({k: tf.constant(v) for k, v in batch.items()})
    alive = sequence_mask(batch["terminated"], batch["truncated"]).numpy().reshape(-1) > 0
    assert 0 < (~alive).sum()  # some sequences run past an episode end
    for n in ("hidden1", "hidden2"):  # what the actor computes again is what it was given
        stored = batch[n].reshape(-1, 64)[alive]
        np.testing.assert_allclose(flat[n].numpy()[alive], stored, atol=1e-5)
        np.testing.assert_allclose(flat["next_" + n].numpy()[alive], batch["next_" + n].reshape(-1, 64)[alive],
                                   atol=1e-5)
    metrics = s.algo.update(batch)  # the critics read the replayed state
    assert np.isfinite(metrics).all()
