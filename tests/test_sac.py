"""SAC's losses and one full compiled update, checked against hand computations in numpy."""
import math

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from aquaml import DataInfo, RLBaseModel, SACParameters
from aquaml.algos.sac import SAC
from aquaml.models.distributions import squashed_gaussian_sample
from aquaml.models.base import build_models
from aquaml.run.checkpoint import load_variables_state, variables_state

GAMMA, ALPHA = 0.9, 0.5


class LinearActor(RLBaseModel):
    def __init__(self):
        super().__init__()
        self.out = tf.keras.layers.Dense(2)
        self.learning_rate = 1e-2
        self.input_name = ("obs",)
        self.output_info = {"action": (1,), "log_std": (1,)}

    def call(self, obs):
        y = self.out(obs)
        return (y[:, :1], y[:, 1:])


class LinearQ(RLBaseModel):
    def __init__(self):
        super().__init__()
        self.out = tf.keras.layers.Dense(1)
        self.learning_rate = 1e-2
        self.input_name = ("obs", "action")

    def call(self, obs, action):
        return self.out(tf.concat([obs, action], -1))


def make_sac(**overrides):
    obs_info = DataInfo("obs", (1,))
    action_info = DataInfo("action", (1,))
    models, action_info = build_models({"actor": LinearActor, "qf1": LinearQ, "qf2": LinearQ},
                                       SAC.required_models, obs_info, action_info)
    params = SACParameters(gamma=GAMMA, alpha=ALPHA, tau=0.5, **overrides)
    return SAC(models, obs_info, action_info, params)


def test_critic_target_terminated_and_truncated():
    sac = make_sac()
    reward = tf.constant([1.0, 2.0, 3.0])
    terminated = tf.constant([0.0, 1.0, 0.0])  # the third is a truncated transition: it bootstraps
    y = sac.critic_target(reward, terminated, tf.constant([5.0, 5.0, 5.0]), tf.constant([4.0, 6.0, 3.0]),
                          tf.constant([-1.0, -1.0, 0.5]), tf.constant(0.2))
    np.testing.assert_allclose(y.numpy(), [1 + 0.9 * (4 + 0.2), 2.0, 3 + 0.9 * (3 - 0.1)], rtol=1e-6)


def test_actor_and_alpha_losses_by_hand():
    sac = make_sac()
    loss = sac.actor_loss(tf.constant([-1.0, 0.5]), tf.constant([1.0, 2.0]), tf.constant([2.0, 1.0]),
                          tf.constant(0.2))
    assert loss.numpy() == pytest.approx(np.mean([0.2 * -1 - 1, 0.2 * 0.5 - 1]))
    a_loss = sac.alpha_loss(tf.constant(0.3), tf.constant([-2.0, 0.0]))
    assert sac.target_entropy == -1.0
    assert a_loss.numpy() == pytest.approx(-np.mean([0.3 * (-2 - 1), 0.3 * (0 - 1)]))


def test_squashed_gaussian_log_prob_matches_scipy():
    mean = np.array([[0.3, -1.0], [2.0, 0.0]], np.float32)
    log_std = np.array([[-0.5, 0.2], [0.0, -1.0]], np.float32)
    noise = np.array([[1.0, -0.5], [0.3, 2.0]], np.float32)
    action, logp = squashed_gaussian_sample(tf.constant(mean), tf.constant(log_std), tf.constant(noise))
    u = mean + np.exp(log_std) * noise
    expected = (scipy.stats.norm.logpdf(u, mean, np.exp(log_std)) - np.log(1 - np.tanh(u) ** 2)).sum(-1)
    np.testing.assert_allclose(action.numpy(), np.tanh(u), rtol=1e-6)
    np.testing.assert_allclose(logp.numpy(), expected, rtol=1e-5)
    _, far = squashed_gaussian_sample(tf.constant([[30.0]]), tf.constant([[0.0]]), tf.constant([[0.0]]))
    assert np.isfinite(far.numpy()).all()  # the naive log(1 - tanh^2) would be log(0)


def _np_policy(w, o):
    """Deterministic (zero-noise) squashed action and its log-probability for LinearActor weights."""
    kernel, bias = w
    y = o @ kernel + bias
    mean, log_std = y[:, :1], np.clip(y[:, 1:], -20, 2)
    logp = (scipy.stats.norm.logpdf(mean, mean, np.exp(log_std)) - np.log(1 - np.tanh(mean) ** 2)).sum(-1)
    return np.tanh(mean), logp


def _np_q(w, o, a):
    kernel, bias = w
    return (np.concatenate([o, a], -1) @ kernel + bias)[:, 0]


def test_one_compiled_update_matches_hand_computation():
    sac = make_sac()
    sac._noise = lambda shape: tf.zeros(shape)  # zero noise: every sampled action is tanh(mean)
    rng = np.random.default_rng(0)
    for spec in sac.models.values():
        spec.model.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.5 for w in spec.model.get_weights()])
    for key in ("qf1", "qf2"):  # targets differ from the critics so the test tells them apart
        sac.targets[key].set_weights([w + 0.25 for w in sac.models[key].model.get_weights()])
    batch = {"obs": np.array([[0.1], [0.5], [-0.3]], np.float32),
             "next_obs": np.array([[0.2], [0.9], [0.7]], np.float32),
             "action": np.array([[0.5], [-0.2], [0.9]], np.float32),
             "reward": np.array([1.0, -1.0, 0.5], np.float32),
             "terminated": np.array([0.0, 1.0, 0.0], np.float32),
             "truncated": np.array([0.0, 0.0, 1.0], np.float32)}
    actor_w = sac.actor.model.get_weights()
    target_w = {k: sac.targets[k].get_weights() for k in ("qf1", "qf2")}
    q_w = {k: sac.models[k].model.get_weights() for k in ("qf1", "qf2")}

    metrics = dict(zip(sac.metric_names, sac.update(batch)))

    a2, logp2 = _np_policy(actor_w, batch["next_obs"])
    soft = np.minimum(_np_q(target_w["qf1"], batch["next_obs"], a2),
                      _np_q(target_w["qf2"], batch["next_obs"], a2)) - ALPHA * logp2
    y = batch["reward"] + GAMMA * (1 - batch["terminated"]) * soft
    q1 = _np_q(q_w["qf1"], batch["obs"], batch["action"])
    q2 = _np_q(q_w["qf2"], batch["obs"], batch["action"])
    assert metrics["losses/qf_loss"] == pytest.approx(0.5 * np.mean((q1 - y) ** 2) + 0.5 * np.mean((q2 - y) ** 2),
                                                      rel=1e-4)
    # the actor step uses the freshly updated critics and the actor as it was before its own step
    a, logp = _np_policy(actor_w, batch["obs"])
    q_new = np.minimum(_np_q(sac.qf1.model.get_weights(), batch["obs"], a),
                       _np_q(sac.qf2.model.get_weights(), batch["obs"], a))
    assert metrics["losses/actor_loss"] == pytest.approx(np.mean(ALPHA * logp - q_new), rel=1e-4)
    assert metrics["losses/alpha"] == pytest.approx(ALPHA, rel=1e-6)
    assert metrics["losses/alpha_loss"] == pytest.approx(-np.mean(math.log(ALPHA) * (logp + sac.target_entropy)),
                                                         rel=1e-4)
    # Polyak averaging with tau = 0.5 after the critic step
    for key in ("qf1", "qf2"):
        for t, t_old, s in zip(sac.targets[key].get_weights(), target_w[key], sac.models[key].model.get_weights()):
            np.testing.assert_allclose(t, 0.5 * t_old + 0.5 * s, rtol=1e-5)
    assert float(np.asarray(sac.log_alpha)) != pytest.approx(math.log(ALPHA))  # the temperature learned


def test_update_compiles_once_for_any_batch_size():
    sac = make_sac()
    info = sac.batch_info
    for n in (3, 7, 256):
        sac.update({k: np.zeros((n,) + info.shape(k), info.dtype(k)) for k in info.names})
    assert sac._update.experimental_get_tracing_count() == 1


def test_fixed_alpha_does_not_move():
    sac = make_sac(auto_alpha=False)
    info = sac.batch_info
    m = dict(zip(sac.metric_names, sac.update({k: np.ones((4,) + info.shape(k), info.dtype(k)) for k in info.names})))
    assert float(m["losses/alpha"]) == pytest.approx(ALPHA)
    assert float(np.asarray(sac.log_alpha)) == pytest.approx(math.log(ALPHA))


def test_global_log_std_when_actor_has_none():
    class MeanOnlyActor(RLBaseModel):
        def __init__(self):
            super().__init__()
            self.out = tf.keras.layers.Dense(1)
            self.input_name = ("obs",)
            self.output_info = {"action": (1,)}

        def call(self, obs):
            return (self.out(obs),)

    obs_info, action_info = DataInfo("obs", (1,)), DataInfo("action", (1,))
    models, _ = build_models({"actor": MeanOnlyActor, "qf1": LinearQ, "qf2": LinearQ}, SAC.required_models,
                             obs_info, action_info)
    sac = SAC(models, obs_info, action_info, SACParameters(init_log_std=-0.5))
    before = np.asarray(sac.log_std).copy()
    info = sac.batch_info
    batch = {k: np.random.default_rng(1).normal(size=(8,) + info.shape(k)).astype(np.float32) for k in info.names}
    sac.update(batch)
    assert before[0] == pytest.approx(-0.5) and np.asarray(sac.log_std)[0] != pytest.approx(-0.5)


def test_update_many_equals_that_many_single_updates_and_returns_the_new_actor_weights():
    rng = np.random.default_rng(3)
    one, many = make_sac(), make_sac()
    # the same start for both: every variable (weights, targets, optimizer slots, noise generator)
    # copied, so the comparison does not rest on two constructions drawing the same initial weights
    load_variables_state(many.state_groups(), variables_state(one.state_groups()))
    info = one.batch_info
    batches = [{k: rng.normal(size=(16,) + info.shape(k)).astype(np.float32) for k in info.names} for _ in range(3)]
    for k in ("terminated", "truncated"):
        for b in batches:
            b[k] = (b[k] > 1.0).astype(np.float32)
    for a, b in zip(one.actor_weights(), many.actor_weights()):
        np.testing.assert_array_equal(a, b)
    single = np.stack([one.update(b) for b in batches])
    metrics, flat = many.update_many({k: np.stack([b[k] for b in batches]) for k in info.names})
    assert metrics.shape == (3, len(SAC.metric_names))
    np.testing.assert_allclose(metrics, single, rtol=1e-5, atol=1e-6)
    for a, b in zip(one.actor_weights(), many.actor_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(flat, np.concatenate([w.ravel() for w in many.actor_weights()]))
    assert many._update_many.experimental_get_tracing_count() == 1
    many.update_many({k: np.stack([batches[0][k]]) for k in info.names})  # one update: same trace
    assert many._update_many.experimental_get_tracing_count() == 1


def test_sample_many_stacks_batches_from_every_slice():
    sac = make_sac(batch_size=5)
    buffer = sac.make_buffer(num_slices=2)
    info = sac.batch_info
    for s in range(2):
        buffer.write_batch(s, {k: np.full((10,) + info.shape(k), s + 1, info.dtype(k)) for k in info.names})
    batches = sac.sample_many(buffer, np.random.default_rng(0), 4)
    assert {k: v.shape for k, v in batches.items()} == {k: (4, 5) + info.shape(k) for k in info.names}
    assert set(np.unique(batches["reward"])) == {1.0, 2.0}
