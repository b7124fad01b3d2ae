"""Acting in numpy (aquaml.acting.inference): the same actions as TensorFlow for the same noise, new weights
only after sync, TensorFlow for graphs it cannot run, and an op table checked op by op."""
import numpy as np
import pytest
import scipy.special
import scipy.stats
import tensorflow as tf
from helpers import load_tutorial
from test_ppo import Actor, Critic, make_ppo

from aquaml import DataInfo, RLBaseModel, SACParameters
from aquaml.algos.sac import SAC
from aquaml.acting.inference import NumpyGraph, UnsupportedGraph
from aquaml.models.base import build_models


def make_sac(classes, obs_info, **params):
    models, action_info = build_models(classes, SAC.required_models, obs_info, DataInfo("action", (1,)),
                                       SAC.optional_models, SAC.critics_take_action)
    return SAC(models, obs_info, action_info, SACParameters(**params))


def tutorial1_sac():
    t1 = load_tutorial("tutorial1")
    return make_sac({"actor": t1.Actor_net, "qf1": t1.Q_net, "qf2": t1.Q_net}, DataInfo("obs", (3,)))


def same_outputs(a, b, tol=1e-5):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=tol, atol=tol, err_msg=k)


def test_sac_numpy_actions_equal_tensorflow_for_the_same_noise():
    sac = tutorial1_sac()
    fast, slow = sac.host_policy(5, numpy=True), sac.host_policy(5, numpy=False)
    assert (fast.backend, slow.backend) == ("numpy", "tensorflow")
    obs = {"obs": np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32) * 2}
    for _ in range(3):  # the same seed draws the same noise on either backend
        same_outputs(fast(obs), slow(obs))
    same_outputs(fast(obs, True), sac.act(obs, True))
    out = fast(obs)
    assert out["action"].shape == (7, 1) and out["action"].dtype == np.float32
    assert np.all(np.abs(out["action"]) <= 1)


def test_new_weights_are_used_after_sync_and_not_before():
    sac = tutorial1_sac()
    policy = sac.host_policy(0)
    obs = {"obs": np.ones((1, 3), np.float32)}
    before = policy(obs, True)["action"]
    sac.set_actor_weights([w + 0.05 for w in sac.actor_weights()])
    np.testing.assert_array_equal(policy(obs, True)["action"], before)
    policy.sync()
    after = policy(obs, True)["action"]
    assert not np.allclose(after, before)
    np.testing.assert_allclose(after, sac.act(obs, True)["action"], rtol=1e-5, atol=1e-6)


def test_loaded_weights_act_like_weights_set_on_the_model():
    for numpy in (True, False):
        sac = tutorial1_sac()
        policy = sac.host_policy(0, numpy=numpy)
        assert not numpy or policy._graph.loads_all  # the published arrays cover every variable it reads
        new = [w * 1.1 + 0.01 for w in sac.actor_weights()]
        policy.load(new)
        obs = {"obs": np.random.default_rng(3).normal(size=(4, 3)).astype(np.float32)}
        loaded = policy(obs, True)
        sac.set_actor_weights(new)
        same_outputs(loaded, sac.act(obs, True))
    ppo = make_ppo(DataInfo("action", (2,)), {"actor": lambda: Actor(2), "critic": Critic}, normalize_obs=True)
    policy = ppo.host_policy(0)
    assert policy._graph.loads_all
    new = [w + 0.5 for w in ppo.actor_weights()]  # the observation statistics travel in it too
    policy.load(new)
    obs = {"obs": np.ones((3, 3), np.float32)}
    loaded = policy(obs, True)
    ppo.set_actor_weights(new)
    same_outputs(loaded, ppo.act(obs, True))


def test_recurrent_actor_returns_the_same_next_state_as_tensorflow():
    t2 = load_tutorial("tutorial2")
    units = t2.LSTM_UNITS
    obs_info = DataInfo(("obs", "pos", "hidden1", "hidden2"), ((3,), (2,), (units,), (units,)))
    sac = make_sac({"actor": t2.Actor_net, "qf1": t2.Q_net, "qf2": t2.Q_net}, obs_info)
    fast, slow = sac.host_policy(1, numpy=True), sac.host_policy(1, numpy=False)
    assert fast.backend == "numpy", fast.reason
    assert fast._graph.loads_all
    rng = np.random.default_rng(2)
    obs = {n: rng.normal(size=(3,) + sac.obs_info.shape(n)).astype(np.float32) for n in sac.actor.input_names}
    for _ in range(4):  # the state fed back step after step stays the same on both
        a, b = fast(obs), slow(obs)
        same_outputs(a, b)
        assert set(a) == {"action", "hidden1", "hidden2"}
        obs = {**obs, "hidden1": a["hidden1"], "hidden2": a["hidden2"]}


def test_ppo_gaussian_with_observation_normalisation_matches_tensorflow():
    ppo = make_ppo(DataInfo("action", (2,)), {"actor": lambda: Actor(2), "critic": Critic}, normalize_obs=True)
    ppo.norm_mean["obs"].assign(np.array([1.0, -2.0, 0.5], np.float32))
    ppo.norm_var["obs"].assign(np.array([4.0, 0.25, 9.0], np.float32))
    fast, slow = ppo.host_policy(3, numpy=True), ppo.host_policy(3, numpy=False)
    assert fast.backend == "numpy", fast.reason
    obs = {"obs": np.random.default_rng(4).normal(size=(9, 3)).astype(np.float32) * 5}
    same_outputs(fast(obs), slow(obs))
    same_outputs(fast(obs, True), ppo.act(obs, True))
    out = fast(obs)
    assert np.all(np.abs(out["action"]) <= 1) and np.any(np.abs(out["sample"]) > 1)  # clipped for the env only


def test_ppo_categorical_numpy_samples_follow_softmax():
    ppo = make_ppo(DataInfo("action", (), np.int64, {"action": {"n": 3}}), {"actor": lambda: Actor(3), "critic": Critic})
    policy = ppo.host_policy(0)
    assert policy.backend == "numpy", policy.reason
    obs = {"obs": np.tile(np.array([[0.5, -1.0, 2.0]], np.float32), (20_000, 1))}
    out = policy(obs)
    p = scipy.special.softmax(ppo.actor.model(obs["obs"][:1])[0].numpy()[0].astype(np.float64))
    np.testing.assert_allclose(out["log_prob"][:5], np.log(p[out["sample"][:5]]), rtol=1e-5)
    counts = np.bincount(out["sample"], minlength=3)
    assert scipy.stats.chisquare(counts, p * counts.sum()).pvalue > 1e-3
    assert policy({"obs": obs["obs"][:1]}, True)["action"][0] == np.argmax(p)


class SortingActor(RLBaseModel):
    """Uses an op the numpy table does not have (TopKV2)."""

    def __init__(self):
        super().__init__()
        self.d = tf.keras.layers.Dense(4)
        self.mu = tf.keras.layers.Dense(1)
        self.learning_rate = 1e-3
        self.input_name = ("obs",)
        self.output_info = {"action": (1,)}

    def call(self, obs):
        return (self.mu(tf.math.top_k(self.d(obs), k=4).values),)


def test_an_op_outside_the_table_falls_back_to_tensorflow_and_says_which():
    t1 = load_tutorial("tutorial1")
    sac = make_sac({"actor": SortingActor, "qf1": t1.Q_net, "qf2": t1.Q_net}, DataInfo("obs", (3,)))
    policy = sac.host_policy(0, numpy=True)
    assert policy.backend == "tensorflow" and "TopKV2" in policy.reason
    obs = {"obs": np.ones((2, 3), np.float32)}
    same_outputs(policy(obs, True), sac.act(obs, True))


def test_backend_variable_is_checked(monkeypatch):
    sac = tutorial1_sac()
    monkeypatch.setenv("AQUAML_ACT_BACKEND", "tensorflow")
    assert sac.host_policy(0).backend == "tensorflow"
    monkeypatch.setenv("AQUAML_ACT_BACKEND", "jax")
    with pytest.raises(ValueError, match="AQUAML_ACT_BACKEND must be 'numpy' or 'tensorflow', got 'jax'"):
        sac.host_policy(0)


def test_op_table_against_tensorflow():
    """Every op a Keras actor commonly traces to, run by NumpyGraph and by TensorFlow."""
    w = tf.Variable(np.random.default_rng(0).normal(size=(6, 6)).astype(np.float32))

    def body(x, i):
        h = tf.matmul(x, w) + 0.1
        a, b = tf.split(h, 2, axis=-1)
        c, d = tf.split(h, [2, -1], axis=1)
        parts = [tf.nn.sigmoid(a), tf.nn.softplus(b), tf.nn.elu(c), tf.nn.leaky_relu(d, 0.3), tf.nn.relu6(h),
                 tf.nn.softmax(h), tf.nn.log_softmax(h), tf.nn.softsign(h), tf.math.rsqrt(tf.abs(h) + 1.0),
                 tf.math.reciprocal(h + 10.0), tf.math.log1p(tf.abs(h)), tf.math.expm1(-tf.abs(h)),
                 tf.math.squared_difference(h, 1.0), tf.pow(tf.abs(h), 1.5), tf.sign(h), tf.floor(h),
                 tf.clip_by_value(h, -0.5, 0.5), tf.where(h > 0.0, h, -h), h[:, 1:4], h[:, ::2], h[..., -2:],
                 tf.reshape(h, [-1, 3, 2])[:, 0, :], tf.expand_dims(tf.reduce_sum(h, -1), -1),
                 tf.reduce_mean(h, axis=1, keepdims=True), tf.reduce_max(h, -1, keepdims=True),
                 tf.reduce_min(h, -1, keepdims=True), tf.squeeze(tf.expand_dims(h, 1), 1),
                 tf.broadcast_to(w[0], tf.shape(h)), tf.cast(tf.argmax(h, -1)[:, None], tf.float32),
                 tf.gather(h, i, axis=-1, batch_dims=1)[:, None], tf.stack([h[:, 0], h[:, 1]], axis=1),
                 tf.zeros_like(h) + tf.ones_like(h), tf.fill(tf.shape(h), 2.0) / 3.0]
        return {"out": tf.concat(parts, axis=-1)}
    fn = tf.function(body, input_signature=[tf.TensorSpec((None, 6)), tf.TensorSpec((None,), tf.int32)])
    concrete = fn.get_concrete_function()
    graph = NumpyGraph(concrete)
    x = np.random.default_rng(1).normal(size=(5, 6)).astype(np.float32)
    i = np.array([0, 5, 2, 3, 1], np.int32)
    np.testing.assert_allclose(graph(x, i)["out"], concrete(x, i)["out"].numpy(), rtol=1e-5, atol=1e-5)


def test_nested_outputs_keep_their_structure_and_never_alias_inputs_or_constants():
    """The generated program's outputs are packed as ``tf.nest`` would, and are copies: an output that
    is an argument or a constant passed straight through can be changed without changing either."""
    fn = tf.function(lambda x: {"b": {"twice": 2.0 * x, "same": tf.identity(x)}, "a": (tf.constant([1.0, 2.0]), x)},
                     input_signature=[tf.TensorSpec((None, 2))])
    graph = NumpyGraph(fn.get_concrete_function())
    x = np.ones((3, 2), np.float32)
    out = graph(x)
    assert set(out) == {"a", "b"} and set(out["b"]) == {"twice", "same"} and isinstance(out["a"], tuple)
    np.testing.assert_array_equal(out["b"]["twice"], 2.0 * x)
    out["b"]["same"][:] = 7.0
    out["a"][1][:] = 7.0
    out["a"][0][:] = 7.0
    assert (x == 1.0).all()
    np.testing.assert_array_equal(graph(x)["a"][0], [1.0, 2.0])


def test_unsupported_op_is_named():
    fn = tf.function(lambda x: tf.sort(x), input_signature=[tf.TensorSpec((None, 3))])
    with pytest.raises(UnsupportedGraph, match="TopKV2|Sort"):
        NumpyGraph(fn.get_concrete_function())


def test_a_policy_whose_numpy_result_differs_acts_through_tensorflow(monkeypatch):
    import aquaml.acting.inference as inference
    monkeypatch.setitem(inference.OPS, "Tanh", inference._unary(lambda x: x))  # a wrong numpy form
    sac = tutorial1_sac()
    policy = sac.host_policy(0, numpy=True)
    assert policy.backend == "tensorflow" and "differs" in policy.reason
    obs = {"obs": np.ones((2, 3), np.float32)}
    same_outputs(policy(obs, True), sac.act(obs, True))
