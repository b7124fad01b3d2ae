"""DQN: targets and losses by hand, n-step cuts, prioritized sampling, exploration, dueling heads,
the frame buffer against a plain one, parameters and refusals."""
import copy

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from aquaml import DataInfo, DQN, DQNParameters, GymnasiumEnv, RLBaseModel, SpecError
from aquaml.algos.exploration import EpsilonSchedule, ExplorationPolicy, boltzmann_probabilities, epsilon_greedy
from aquaml.buffers.frames import FrameReplayBuffer, stacked_entries
from aquaml.buffers.nstep import n_step_batch, uniform_rows
from aquaml.buffers.prioritized import ProportionalPriorities
from aquaml.buffers.replay import LocalArrayStore, ReplayBuffer
from aquaml.models.base import ModelContractError, build_models
from aquaml.algos.registry import default_models


class LinearQ(RLBaseModel):
    """Q(obs) = obs @ W + b, small enough to check an update by hand."""

    def __init__(self, actions=3, dueling=False):
        super().__init__()
        self.q = tf.keras.layers.Dense(actions)
        self.v = tf.keras.layers.Dense(1) if dueling else None
        self.learning_rate = 0.1
        self.optimizer = "SGD"
        self.input_name = ("obs",)
        self.output_info = {"action": (actions,), **({"value": (1,)} if dueling else {})}

    def call(self, obs):
        return (self.q(obs),) if self.v is None else (self.q(obs), self.v(obs))


def make_dqn(params=None, actions=3, dueling=False, obs_dim=2):
    obs_info = DataInfo("obs", (obs_dim,), np.float32)
    action_info = DataInfo("action", (), np.int64, {"action": {"n": actions, "start": 0}})
    params = params or DQNParameters(dueling=dueling)
    models, action_info = build_models({"actor": lambda: LinearQ(actions, params.dueling)}, DQN.required_models,
                                       obs_info, action_info, critics_take_action=False)
    return DQN(models, obs_info, action_info, params)


# --- targets and losses ---------------------------------------------------------------------
def test_double_dqn_target_by_hand_for_terminated_and_truncated_rows():
    reward = tf.constant([1.0, 2.0, 0.5])
    # row 0 continues (gamma), row 1 terminated (0), row 2 truncated: bootstraps like row 0
    discount = tf.constant([0.9, 0.0, 0.9])
    next_target = tf.constant([[1.0, 5.0, 3.0], [9.0, 9.0, 9.0], [4.0, 2.0, 7.0]])
    next_online = tf.constant([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    double = DQN.q_target(reward, discount, next_target, next_online).numpy()
    # online argmax picks actions 2, 0, 1; the target network values them
    np.testing.assert_allclose(double, [1.0 + 0.9 * 3.0, 2.0, 0.5 + 0.9 * 2.0])
    plain = DQN.q_target(reward, discount, next_target).numpy()  # max of the target network
    np.testing.assert_allclose(plain, [1.0 + 0.9 * 5.0, 2.0, 0.5 + 0.9 * 7.0])


def test_huber_and_mse_losses_by_hand():
    td = tf.constant([0.5, -2.0, 3.0])
    w = tf.constant([1.0, 0.5, 2.0])
    huber = [0.5 * 0.25, 1.0 * (2.0 - 0.5), 1.0 * (3.0 - 0.5)]
    np.testing.assert_allclose(DQN.td_loss(td).numpy(), np.mean(huber), rtol=1e-6)
    np.testing.assert_allclose(DQN.td_loss(td, w).numpy(), np.mean(np.array(huber) * [1.0, 0.5, 2.0]), rtol=1e-6)
    np.testing.assert_allclose(DQN.td_loss(td, kind="mse").numpy(), np.mean([0.25, 4.0, 9.0]), rtol=1e-6)
    delta2 = [0.5 * 0.25, 0.5 * 4.0, 2.0 * (3.0 - 1.0)]
    np.testing.assert_allclose(DQN.td_loss(td, delta=2.0).numpy(), np.mean(delta2), rtol=1e-6)


def test_dueling_head_subtracts_the_mean_advantage():
    value = tf.constant([[2.0], [-1.0]])
    advantages = tf.constant([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]])
    q = DQN.dueling_q(value, advantages).numpy()
    np.testing.assert_allclose(q, [[2.0 - 2.0, 2.0 - 1.0, 2.0 + 3.0], [-2.0, -2.0, 1.0]])
    np.testing.assert_allclose(q.mean(axis=1), value.numpy()[:, 0], atol=1e-6)  # mean over actions is V
    algo = make_dqn(dueling=True)
    obs = {"obs": np.random.default_rng(0).standard_normal((4, 2)).astype(np.float32)}
    out = algo.actor.model(obs["obs"])
    np.testing.assert_allclose(algo.q_values(obs).numpy(), out[1].numpy() + out[0].numpy()
                               - out[0].numpy().mean(axis=1, keepdims=True), rtol=1e-5)


def test_one_update_matches_a_hand_computed_sgd_step_and_copies_the_target_on_schedule():
    algo = make_dqn(DQNParameters(target_update_interval=2, max_grad_norm=None, loss="mse", double_q=True))
    model, target = algo.actor.model, algo.target
    rng = np.random.default_rng(1)
    for v in model.weights + target.weights:
        v.assign(rng.standard_normal(v.shape).astype(np.float32))
    batch = {"obs": rng.standard_normal((5, 2)).astype(np.float32),
             "next_obs": rng.standard_normal((5, 2)).astype(np.float32),
             "action": np.array([0, 1, 2, 1, 0]), "reward": rng.standard_normal(5).astype(np.float32),
             "discount": np.array([0.99, 0.0, 0.99, 0.9, 0.0], np.float32), "weight": np.ones(5, np.float32)}
    W, b = (v.numpy().astype(np.float64) for v in model.weights)
    Wt, bt = (v.numpy().astype(np.float64) for v in target.weights)
    q_next_online = batch["next_obs"] @ W + b
    q_next_target = batch["next_obs"] @ Wt + bt
    y = batch["reward"] + batch["discount"] * q_next_target[np.arange(5), q_next_online.argmax(1)]
    q = (batch["obs"] @ W + b)[np.arange(5), batch["action"]]
    onehot = np.eye(3)[batch["action"]]
    dq = 2.0 * (q - y) / 5  # d mean((q - y)^2) / dq
    grad_W = batch["obs"].T @ (dq[:, None] * onehot)
    grad_b = (dq[:, None] * onehot).sum(0)
    metrics = algo.update(batch)
    np.testing.assert_allclose(metrics[0], np.mean((q - y) ** 2), rtol=1e-5)
    np.testing.assert_allclose(model.weights[0].numpy(), W - 0.1 * grad_W, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model.weights[1].numpy(), b - 0.1 * grad_b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(target.weights[0].numpy(), Wt, rtol=1e-6)  # one update: not copied yet
    algo.update(batch)
    np.testing.assert_allclose(target.weights[0].numpy(), model.weights[0].numpy())  # the second copies


def test_polyak_target_moves_tau_of_the_way():
    algo = make_dqn(DQNParameters(target_update_interval=1, tau=0.25))
    before = algo.target.weights[0].numpy().copy()
    batch = {"obs": np.ones((2, 2), np.float32), "next_obs": np.ones((2, 2), np.float32),
             "action": np.array([0, 1]), "reward": np.ones(2, np.float32), "discount": np.ones(2, np.float32),
             "weight": np.ones(2, np.float32)}
    algo.update(batch)
    online = algo.actor.model.weights[0].numpy()
    np.testing.assert_allclose(algo.target.weights[0].numpy(), 0.75 * before + 0.25 * online, rtol=1e-5, atol=1e-6)


# --- n-step transitions ---------------------------------------------------------------------
def filled_buffer(rewards, terminated, truncated, stride=1, capacity=64):
    info = (DataInfo("obs", (1,), np.float32).merge(DataInfo("next_obs", (1,), np.float32))
            .merge(DataInfo("action", (), np.int64)).add_info(("reward", "terminated", "truncated"), ((), (), ()),
                                                               np.float32))
    buffer = ReplayBuffer(info, capacity, stride=stride)
    for t, (r, te, tr) in enumerate(zip(rewards, terminated, truncated)):
        buffer.write(0, {"obs": [t], "next_obs": [100 + t], "action": t % 2, "reward": r,
                         "terminated": te, "truncated": tr})
    return buffer


def test_n_step_returns_cut_at_an_episode_end_by_hand():
    g = 0.9
    #            rows:  0    1    2    3    4    5    6
    rewards = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    terminated = [0, 0, 1, 0, 0, 0, 0]  # episode 1 ends by termination at row 2
    truncated = [0, 0, 0, 0, 1, 0, 0]   # episode 2 is truncated at row 4
    buffer = filled_buffer(rewards, terminated, truncated)
    rows = np.array([0, 1, 2, 3, 4])
    batch = n_step_batch(buffer, ("obs",), np.zeros(5, np.int64), rows, 3, g)
    np.testing.assert_allclose(batch["reward"], [1 + g * 2 + g * g * 3, 2 + g * 3, 3, 4 + g * 5, 5], rtol=1e-6)
    # terminated windows bootstrap from nothing; the truncated ones from their final observation
    np.testing.assert_allclose(batch["discount"], [0.0, 0.0, 0.0, g ** 2, g], rtol=1e-6)
    np.testing.assert_array_equal(batch["next_obs"][:, 0], [102, 102, 102, 104, 104])
    np.testing.assert_array_equal(batch["obs"][:, 0], rows)
    one = n_step_batch(buffer, ("obs",), np.zeros(3, np.int64), np.array([0, 2, 5]), 1, g)
    np.testing.assert_allclose(one["discount"], [g, 0.0, g], rtol=1e-6)
    np.testing.assert_allclose(one["reward"], [1.0, 3.0, 6.0])


def test_n_step_windows_follow_one_environment_of_interleaved_rows():
    # two environments, rows interleaved: env 0 on even rows, env 1 on odd rows
    rewards = [1.0, 10.0, 2.0, 20.0, 3.0, 30.0]
    buffer = filled_buffer(rewards, [0] * 6, [0, 0, 0, 1, 0, 0], stride=2)
    batch = n_step_batch(buffer, ("obs",), np.zeros(2, np.int64), np.array([0, 1]), 3, 0.5)
    np.testing.assert_allclose(batch["reward"], [1 + 0.5 * 2 + 0.25 * 3, 10 + 0.5 * 20])
    np.testing.assert_allclose(batch["discount"], [0.125, 0.25])
    # only starts with three written steps of their environment are drawn: rows 0 and 1
    slices, rows = uniform_rows(buffer, 3, 200, np.random.default_rng(0))
    assert set(rows.tolist()) == {0, 1}


# --- prioritized replay ----------------------------------------------------------------------
def test_prioritized_sampling_frequencies_match_priorities_chi_square():
    priorities = ProportionalPriorities(LocalArrayStore(), 2, 8, alpha=0.7)
    counters = np.array([8, 5])
    priorities.assign_new(counters)
    td = np.array([0.1, 0.5, 1.0, 2.0, 0.3, 0.0, 4.0, 0.7, 1.5, 0.2, 0.9, 3.0, 0.05])
    slices = np.array([0] * 8 + [1] * 5)
    rows = np.array(list(range(8)) + list(range(5)))
    priorities.update(slices, rows, td, counters)
    expected = (np.abs(td) + 1e-6) ** 0.7
    expected /= expected.sum()
    draws = 200_000
    s, r, prob, smallest = priorities.sample(np.array([0, 0]), counters, draws, np.random.default_rng(3))
    index = np.where(s == 0, r, 8 + r)
    counts = np.bincount(index, minlength=13)
    _, p_value = stats.chisquare(counts, expected * draws)
    assert p_value > 1e-3, (counts, expected * draws)
    np.testing.assert_allclose(prob, expected[index], rtol=1e-9)
    assert smallest == pytest.approx(expected.min())
    # importance weights (N P(i))^-beta / max_k (N P(k))^-beta, by hand
    beta = 0.4
    n = 13
    w = ProportionalPriorities.importance_weights(prob[:10], smallest, beta)
    by_hand = (n * expected[index[:10]]) ** -beta / ((n * expected) ** -beta).max()
    np.testing.assert_allclose(w, by_hand, rtol=1e-5)


def test_new_rows_get_the_largest_priority_and_overwritten_rows_keep_theirs():
    priorities = ProportionalPriorities(LocalArrayStore(), 1, 4, alpha=1.0, eps=0.0)
    priorities.assign_new(np.array([2]))
    priorities.update(np.array([0, 0]), np.array([0, 1]), np.array([3.0, 0.5]), np.array([2]))
    priorities.assign_new(np.array([4]))  # rows 2 and 3 are new: they get the largest p so far, 3
    np.testing.assert_allclose(priorities.priority[0], [3.0, 0.5, 3.0, 3.0])
    # row 0 is drawn, then a worker overwrites its slot with row 4 before the update arrives
    priorities.assign_new(np.array([5]))
    priorities.update(np.array([0]), np.array([0]), np.array([0.01]), np.array([5]))
    assert priorities.priority[0, 0] == 3.0  # the old row's TD error does not go to the new row
    assert priorities.priority_row[0, 0] == 5


def test_prioritized_dqn_updates_the_priorities_of_the_rows_it_trained_on():
    algo = make_dqn(DQNParameters(prioritized=True, batch_size=4, buffer_size=16))
    buffer = algo.make_buffer()
    rng = np.random.default_rng(0)
    for t in range(10):
        buffer.write(0, {"obs": rng.standard_normal(2), "next_obs": rng.standard_normal(2), "action": t % 3,
                         "reward": float(t), "terminated": 0.0, "truncated": 0.0})
    batch = algo.sample(buffer, rng)
    assert set(batch) >= set(algo.train_info.names)
    assert np.all(algo.priorities.priority[0, :10] == 1.0)  # first seen: the largest so far, 1
    algo.update(batch)
    trained = np.unique(batch["sampled/row"])
    assert np.all(algo.priorities.priority[0, trained] != 1.0)
    assert "replay/priorities" in algo.state_groups()


# --- exploration ----------------------------------------------------------------------------
def test_epsilon_schedules_values():
    linear = EpsilonSchedule(1.0, 0.1, "linear", decay_steps=100)
    assert [linear(t) for t in (0, 50, 100, 1000)] == pytest.approx([1.0, 0.55, 0.1, 0.1])
    exponential = EpsilonSchedule(0.5, 0.05, "exponential", decay=0.01)
    assert exponential(0) == pytest.approx(0.5)
    assert exponential(10) == pytest.approx(0.5 * 0.99 ** 10)
    assert exponential(10_000) == pytest.approx(0.05)
    # KeRLym's flags: epsilon=0.1, epsilon_decay=1e-4 (epsilon *= 1 - decay), epsilon_min=0.05
    kerlym = DQNParameters(epsilon=0.1, epsilon_decay=1e-4, epsilon_min=0.05).epsilon_at()
    assert kerlym.kind == "exponential"
    assert kerlym(3000) == pytest.approx(0.1 * (1 - 1e-4) ** 3000)
    sb3 = DQNParameters(total_steps=50_000, exploration_fraction=0.16, epsilon_min=0.04).epsilon_at()
    assert sb3(4000) == pytest.approx(1.0 - 0.96 * 4000 / 8000)


def test_epsilon_greedy_frequencies():
    rng = np.random.default_rng(0)
    greedy = np.full(100_000, 2)
    actions = epsilon_greedy(greedy, 0.3, 4, rng)
    counts = np.bincount(actions, minlength=4)
    expected = np.array([0.075, 0.075, 0.775, 0.075]) * len(greedy)
    assert stats.chisquare(counts, expected)[1] > 1e-3


def test_boltzmann_action_frequencies_match_the_softmax_of_q_over_temperature():
    algo = make_dqn(DQNParameters(exploration="thompson", temperature=0.5))
    assert algo.params.exploration == "boltzmann"
    obs = np.array([[0.3, -0.2]], np.float32)
    q = algo.q_values({"obs": obs}).numpy()[0]
    expected = boltzmann_probabilities(q, 0.5)
    for backend in (True, False):  # the numpy act program and TensorFlow draw alike
        policy = algo.host_policy(seed=4, numpy=backend)
        actions = policy({"obs": np.repeat(obs, 60_000, axis=0)})["action"]
        counts = np.bincount(actions, minlength=3)
        assert stats.chisquare(counts, expected * len(actions))[1] > 1e-3, (counts, expected)
    assert policy({"obs": obs}, deterministic=True)["action"][0] == q.argmax()


def test_worker_policy_follows_the_global_step_and_resumes_its_schedule():
    params = DQNParameters(total_steps=10_000, exploration_fraction=0.5, epsilon=1.0, epsilon_min=0.0,
                           learning_starts=1000)
    algo = make_dqn(params)
    algo.check_workers(4)
    policy = algo.host_policy(seed=1)
    assert isinstance(policy, ExplorationPolicy)
    obs = {"obs": np.zeros((2, 2), np.float32)}
    for _ in range(250):
        policy(obs)
    # 500 steps of this worker, 4 workers, after 1000 warm-up steps: the global step is 3000
    assert policy.global_step() == 3000
    assert policy.epsilon() == pytest.approx(1.0 - 3000 / 5000)
    state = policy.state_dict()
    again = algo.host_policy(seed=99)
    again.load_state_dict(state)
    assert again.global_step() == 3000
    np.testing.assert_array_equal(again(obs)["action"], policy(obs)["action"])
    policy(obs, deterministic=True)  # greedy calls (evaluation) do not advance the schedule
    assert policy.global_step() == 3008


class _ActorEnd:
    """The worker end of a link, enough for a ReplayActor to step, snapshot and restore."""
    index, rank, num_workers, shares_weights = 0, 1, 4, False

    def __init__(self, sink, restored=None):
        self.sink, self.restored, self.snaps = sink, restored, []

    def restore_state(self):
        return self.restored

    def send_snapshot(self, mark, state):
        self.snaps.append(copy.deepcopy(state))

    poll = flush = finish = staticmethod(lambda: None)
    waiting = record_episodes = staticmethod(lambda arg: None)
    updates = staticmethod(lambda: 10**9)
    stopping = staticmethod(lambda: False)
    newer_weights = staticmethod(lambda version: (1, None) if version == 0 else None)


def test_a_resumed_worker_continues_its_epsilon_schedule_from_the_snapshot():
    """Under MPI a worker's snapshot (what checkpoints keep of it) holds its exploration policy's
    step count and stream: an actor started from it acts as the uninterrupted one does."""
    from aquaml.schedules.async_replay import ReplayActor
    from aquaml.schedules.context import TaskContext
    params = DQNParameters(total_steps=4000, exploration_fraction=0.5, learning_starts=40, eval_interval=0,
                           epoch_length=100, buffer_size=4000)
    env = GymnasiumEnv("CartPole-v1")
    models, action_info = build_models(DQN.default_models(env.obs_info, env.action_info, hidden=(8,)),
                                       DQN.required_models, env.obs_info, env.action_info, critics_take_action=False)
    algo = DQN(models, env.obs_info, action_info, params)
    algo.check_workers(4)

    def actor(restored=None):
        ctx = TaskContext(algo=algo, params=params, envs=[GymnasiumEnv("CartPole-v1")], obs_info=env.obs_info,
                          action_info=action_info, stop=None, checkpoint_interval=100, verbose=False)
        end = _ActorEnd(algo.make_buffer(4), restored)
        a = ReplayActor(ctx, end, algo.host_policy(seed=5))
        a.start()
        return a, end

    first, end = actor()
    for _ in range(75):  # 10 random steps (its share of learning_starts), then 65 with the policy
        first.work()
    snapshot = end.snaps[1]  # at step 50: its share of the checkpoint mark at 200
    assert snapshot["worker"]["steps"] == 50 and snapshot["policy"]["steps"] == 40
    resumed, _ = actor(snapshot)
    assert resumed.policy.global_step() == 40 + 4 * 40
    again, _ = actor()
    for _ in range(50):
        again.work()
    assert again.policy.state_dict() == resumed.policy.state_dict()
    obs = {"obs": np.zeros((64, 4), np.float32)}
    np.testing.assert_array_equal(resumed.policy(obs)["action"], again.policy(obs)["action"])


# --- frame buffer ---------------------------------------------------------------------------
class Frames(gym.Env):
    """Random 36x36 grey frames; episodes end by termination or truncation at random lengths."""

    def __init__(self, seed):
        self.observation_space = gym.spaces.Box(0, 255, (36, 36), np.uint8)
        self.action_space = gym.spaces.Discrete(2)
        self.rng = np.random.default_rng(seed)

    def reset(self, seed=None, options=None):
        self.t = 0
        return self.rng.integers(0, 256, (36, 36), dtype=np.uint8), {}

    def step(self, action):
        self.t += 1
        end = self.rng.random() < 0.15
        return (self.rng.integers(0, 256, (36, 36), dtype=np.uint8), 1.0, bool(end and self.t % 2),
                bool(end and not self.t % 2), {})


@pytest.mark.parametrize("padding", ["reset", "zero"])
def test_frame_buffer_returns_exactly_what_a_plain_buffer_stores(padding):
    envs = [GymnasiumEnv(gym.wrappers.FrameStackObservation(Frames(s), 4, padding_type=padding)) for s in (0, 1)]
    obs_info, action_info = envs[0].obs_info, envs[0].action_info
    from aquaml.algos.dqn import transition_info
    info = transition_info(obs_info, action_info)
    assert stacked_entries(info) == ("obs",)
    plain = ReplayBuffer(info, 160, stride=2)
    frames = FrameReplayBuffer(info, 160, ("obs",), stride=2)
    from aquaml.acting.worker import Worker
    rng = np.random.default_rng(0)

    def policy(obs, deterministic):
        return {"action": rng.integers(0, 2, len(obs["obs"]))}

    for buffer in (plain, frames):  # the same episodes into both buffers
        for e, s in zip(envs, (0, 1)):
            e.env.unwrapped.rng = np.random.default_rng(s)
        rng = np.random.default_rng(0)
        worker = Worker(envs, obs_info, action_info, policy, buffer, seed=3)
        for _ in range(130):  # 260 rows into 160: the ring wraps
            worker.step()
    held = np.arange(260 - 160, 260)
    ok = frames.valid(np.zeros(len(held), np.int64), held)
    assert ok.sum() >= len(held) - 8  # only the oldest rows, whose earlier frames are gone, are not
    rows = held[ok]
    got = frames.gather(info.names, np.zeros(len(rows), np.int64), rows)
    for name in info.names:
        np.testing.assert_array_equal(got[name], plain.arrays[name][0, rows % 160], err_msg=name)
    # each stored transition takes a quarter of the plain buffer's memory (2 of 8 frames)
    plain_bytes = sum(a[0, 0].nbytes if a.ndim > 2 else a.itemsize for a in plain.arrays.values())
    assert frames.bytes_per_row() <= plain_bytes / 3.5


def test_frame_buffer_refuses_observations_that_are_not_shifted_stacks():
    info = (DataInfo("obs", (2, 36, 36), np.uint8).merge(DataInfo("next_obs", (2, 36, 36), np.uint8))
            .merge(DataInfo("action", (), np.int64)).add_info(("reward", "terminated", "truncated"), ((), (), ()),
                                                               np.float32))
    buffer = FrameReplayBuffer(info, 8, ("obs",))
    obs = np.zeros((2, 36, 36), np.uint8)
    nxt = np.ones((2, 36, 36), np.uint8)
    with pytest.raises(ValueError, match="next_obs is not obs shifted by one frame"):
        buffer.write(0, {"obs": obs, "next_obs": nxt, "action": 0, "reward": 0.0, "terminated": 0.0,
                         "truncated": 0.0})
    with pytest.raises(SpecError, match="stacked frames"):
        FrameReplayBuffer(info, 8, ("reward",))


# --- parameters and refusals ----------------------------------------------------------------
def test_reference_names_map_to_fields():
    p = DQNParameters(discount=0.95, max_mem=5000, update_freq=8, batch_size=16, learning_rate=1e-3,
                      action_sampling_type="thompson", temperature=2.0, gradient_steps=2)
    assert (p.gamma, p.buffer_size, p.update_interval, p.batch_size, p.learning_rate) == (0.95, 5000, 8, 16, 1e-3)
    assert (p.exploration, p.temperature, p.replay_ratio) == ("boltzmann", 2.0, 0.25)
    sb3 = DQNParameters(exploration_initial_eps=0.5, exploration_final_eps=0.02, train_freq=16)
    assert (sb3.epsilon, sb3.epsilon_min, sb3.update_interval) == (0.5, 0.02, 16)
    with pytest.raises(TypeError, match="unknown field 'epsilon_max'"):
        DQNParameters(epsilon_max=1.0)
    with pytest.raises(ValueError, match="exploration must be one of"):
        DQNParameters(exploration="ucb")
    with pytest.raises(ValueError, match="loss must be one of"):
        DQNParameters(loss="l1")


@pytest.mark.parametrize("space, kind", [(gym.spaces.Box(-1, 1, (2,)), "continuous"),
                                         (gym.spaces.MultiDiscrete([3, 2]), "MultiDiscrete"),
                                         (gym.spaces.MultiBinary(4), "MultiBinary")])
def test_dqn_refuses_actions_other_than_one_discrete_choice_with_the_reason(space, kind):
    from aquaml.envs.gymnasium_env import action_info_from_space
    with pytest.raises(SpecError, match=f"DQN needs one Discrete action; this environment's action is {kind}"):
        DQN.check_action_info(action_info_from_space(space))


def test_q_network_outputs_must_fit_dueling():
    obs_info = DataInfo("obs", (2,), np.float32)
    action_info = DataInfo("action", (), np.int64, {"action": {"n": 3}})
    for model_dueling, params, message in ((False, DQNParameters(dueling=True), "dueling=True needs output_info"),
                                           (True, DQNParameters(), "set dueling=True")):
        models, _ = build_models({"actor": lambda: LinearQ(3, dueling=model_dueling)}, ("actor",), obs_info,
                                 action_info, critics_take_action=False)
        with pytest.raises(ModelContractError, match=message):
            DQN(models, obs_info, action_info, params)


def test_default_q_network_with_dueling_heads_builds_and_acts():
    env = GymnasiumEnv("CartPole-v1")
    models = DQN.default_models(env.obs_info, env.action_info, hidden=(16,), dueling=True)
    specs, action_info = build_models(models, ("actor",), env.obs_info, env.action_info, critics_take_action=False)
    algo = DQN(specs, env.obs_info, action_info, DQNParameters(dueling=True))
    out = algo.act({"obs": np.zeros((3, 4), np.float32)}, deterministic=True)
    assert out["action"].shape == (3,) and out["action"].dtype == np.int64


def test_the_one_process_policy_acts_on_the_weights_of_the_last_update_through_numpy():
    algo = make_dqn(DQNParameters(batch_size=4, epsilon=0.0, epsilon_min=0.0))
    live = algo.live_policy()
    assert algo._acting.backend == "numpy"
    obs = {"obs": np.random.default_rng(0).standard_normal((64, 2)).astype(np.float32)}

    def greedy():  # argmax of TensorFlow's Q-values on the variables as they are now
        return np.argmax(algo.q_values({"obs": tf.constant(obs["obs"])}).numpy(), axis=-1)
    np.testing.assert_array_equal(live(obs, True)["action"], greedy())
    batch = {"obs": obs["obs"][:4], "next_obs": obs["obs"][4:8], "action": np.array([0, 1, 2, 0]),
             "reward": np.array([5.0, -3.0, 2.0, 8.0], np.float32), "discount": np.zeros(4, np.float32),
             "weight": np.ones(4, np.float32)}
    before = live(obs, True)["action"]
    for _ in range(20):
        algo.update(batch)
    after = live(obs, True)["action"]
    assert not np.array_equal(before, after)  # the updates changed the greedy choice somewhere ...
    np.testing.assert_array_equal(after, greedy())  # ... and the live policy follows them
    algo.actor.model.set_weights([w * -1.0 for w in algo.actor.model.get_weights()])  # a change it cannot see
    live.sync()  # what the actor calls after each publication
    np.testing.assert_array_equal(live(obs, True)["action"], greedy())
    assert algo.act(obs, True)["action"].tolist() == greedy().tolist()
