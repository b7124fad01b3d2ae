"""CompiledCall: the direct call of a traced function gives what the public call gives, and refuses
inputs the public call would refuse."""
import numpy as np
import pytest
import tensorflow as tf

from aquaml import DQN, DQNParameters, GymnasiumEnv
from aquaml.compiled import CompiledCall
from aquaml.algos.registry import default_models
from aquaml.models.base import build_models
from aquaml.run.checkpoint import load_variables_state, variables_state

SIGNATURE = [{"b": tf.TensorSpec((None, 3), tf.float32), "a": tf.TensorSpec((None,), tf.int64)},
             tf.TensorSpec((None, 3), tf.float32)]


@tf.function(input_signature=SIGNATURE)
def combine(batch, scale):
    return {"sum": batch["b"] * scale + tf.cast(batch["a"], tf.float32)[:, None], "count": tf.shape(scale)[0]}


def test_direct_call_equals_the_public_call_and_converts_dtypes():
    call = CompiledCall(combine)
    assert call.direct
    rng = np.random.default_rng(0)
    batch = {"b": rng.standard_normal((5, 3)), "a": np.arange(5, dtype=np.int32), "unused": np.zeros(2)}
    scale = rng.standard_normal((5, 3)).astype(np.float32)
    ours = call(batch, scale)
    theirs = combine.get_concrete_function()({"b": batch["b"].astype(np.float32), "a": batch["a"].astype(np.int64)},
                                             scale)
    np.testing.assert_array_equal(ours["sum"].numpy(), theirs["sum"].numpy())
    assert int(ours["count"]) == 5


def test_wrong_shapes_and_missing_entries_are_refused_by_name():
    call = CompiledCall(combine)
    scale = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"input 'b' has shape \(4, 2\), expected \(None, 3\)"):
        call({"b": np.ones((4, 2), np.float32), "a": np.zeros(4, np.int64)}, scale)
    with pytest.raises(ValueError, match=r"input 'a' has shape \(4, 1\)"):
        call({"b": np.ones((4, 3), np.float32), "a": np.zeros((4, 1), np.int64)}, scale)
    with pytest.raises(KeyError, match="input 'a' missing"):
        call({"b": np.ones((4, 3), np.float32)}, scale)
    with pytest.raises(TypeError, match="expected 2 arguments, got 1"):
        call({"b": np.ones((4, 3), np.float32), "a": np.zeros(4, np.int64)})
    with pytest.raises(ValueError, match="input_signature"):
        CompiledCall(tf.function(lambda x: x))


def test_under_a_gradient_tape_the_public_call_records_the_gradient():
    weight = tf.Variable(2.0)
    scaled = tf.function(lambda x: x * weight, input_signature=[tf.TensorSpec((), tf.float32)])
    call = CompiledCall(scaled)
    with tf.GradientTape() as tape:
        out = call(tf.constant(3.0))
    assert float(tape.gradient(out, weight)) == 3.0


def _dqn(seed: int) -> tuple[DQN, dict]:
    env = GymnasiumEnv("CartPole-v1")
    models = default_models("dqn", env.obs_info, env.action_info, (32, 32), 1e-3)
    specs, action_info = build_models(models, ("actor",), env.obs_info, env.action_info, critics_take_action=False)
    algo = DQN(specs, env.obs_info, action_info, DQNParameters(batch_size=16, buffer_size=256, seed=seed))
    rng = np.random.default_rng(seed)
    batch = {"obs": rng.standard_normal((16, 4)).astype(np.float32),
             "next_obs": rng.standard_normal((16, 4)).astype(np.float32), "action": rng.integers(2, size=16),
             "reward": rng.standard_normal(16).astype(np.float32), "discount": np.full(16, 0.99, np.float32),
             "weight": np.ones(16, np.float32)}
    return algo, batch


def test_a_dqn_update_through_the_direct_call_equals_the_public_call():
    direct, batch = _dqn(3)
    public, _ = _dqn(3)
    load_variables_state(public.state_groups(), variables_state(direct.state_groups()))
    ours = [direct.update(batch) for _ in range(3)]
    concrete = public._update.get_concrete_function()
    theirs = [concrete(batch)[0].numpy() for _ in range(3)]
    np.testing.assert_array_equal(np.array(ours), np.array(theirs))
    for a, b in zip(direct.actor.model.weights, public.actor.model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
