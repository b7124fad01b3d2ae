"""A wrong model fails at start-up, before any environment step, with a message saying what to change."""
import pytest
import tensorflow as tf
from helpers import CountingEnv, MLPActor, MLPQ

from aquaml import DataInfo, ModelContractError, RLBaseModel, RLTaskStarter, SACParameters, SpecError


def start(actor=MLPActor, q=MLPQ, env=None, run_root=None):
    env = env or CountingEnv()
    RLTaskStarter(env=env, model_class_dict={"actor": actor, "qf1": q, "qf2": q},
                  algo_hyperparameter=SACParameters(total_steps=10), run_root=run_root, verbose=False)
    return env


def actor_with(**attrs):
    class Actor(MLPActor):
        def __init__(self):
            super().__init__()
            for k, v in attrs.items():
                setattr(self, k, v)
    return Actor


@pytest.mark.parametrize("actor,message", [
    (actor_with(input_name="obs"), r"input_name must be a tuple of names such as \('obs',\)"),
    (actor_with(input_name=("pos",)), r"input_name has \['pos'\].*available names are \('obs',\)"),
    (actor_with(output_info={"log_std": (1,)}), r"output_info must be a dict that includes 'action'"),
    (actor_with(output_info={"action": (2,), "log_std": (1,)}),
     r"output_info\['action'\] is \(2,\) but the environment has an action of shape \(1,\)"),
    (actor_with(output_info={"action": (1,)}), r"returned 2 outputs but output_info declares 1"),
    (actor_with(learning_rate=-1), r"actor.learning_rate must be a positive number"),
    (actor_with(optimizer="Adamm"), r"optimizer='Adamm' is not a Keras optimizer"),
])
def test_actor_contract_errors_before_any_step(actor, message, tmp_path):
    env = CountingEnv()
    env._action_info = DataInfo("action", (1,))
    with pytest.raises(ModelContractError, match=message):
        start(actor=actor, env=env, run_root=str(tmp_path))
    assert env.steps_taken == 0
    assert not (tmp_path / "runs").exists()


def test_actor_returning_a_tensor_is_told_to_return_a_tuple():
    class TensorActor(MLPActor):
        def call(self, obs):
            return self.mu(self.d1(obs))
    with pytest.raises(ModelContractError, match=r"must return a tuple in output_info order"):
        start(actor=TensorActor)


def test_critic_without_action_input():
    class StateQ(MLPQ):
        def __init__(self):
            super().__init__()
            self.input_name = ("obs",)

        def call(self, obs):
            return self.q(obs)
    with pytest.raises(ModelContractError, match=r"qf1.input_name=\('obs',\) must include 'action'"):
        start(q=StateQ)


def test_critic_with_wrong_output_shape():
    class WideQ(MLPQ):
        def __init__(self):
            super().__init__()
            self.q = tf.keras.layers.Dense(3)
    with pytest.raises(ModelContractError, match=r"qf1.call\(\) returned shape \(2, 3\)"):
        start(q=WideQ)


def test_call_that_crashes_names_the_model_and_inputs():
    class BrokenQ(MLPQ):
        def call(self, obs, action):
            return self.q(tf.concat([obs, action, obs[:, :0, None]], -1))
    with pytest.raises(ModelContractError, match=r"qf1.call\(\) failed on zero inputs"):
        start(q=BrokenQ)


def test_missing_and_unknown_model_keys():
    with pytest.raises(ModelContractError, match=r"missing \['qf2'\], unexpected \['critic'\]"):
        RLTaskStarter(env=CountingEnv(), model_class_dict={"actor": MLPActor, "qf1": MLPQ, "critic": MLPQ},
                      verbose=False)


def test_wrong_parameter_type_and_discrete_action_for_sac():
    with pytest.raises(TypeError, match="algo_hyperparameter must be a SACParameters"):
        RLTaskStarter(env=CountingEnv(), model_class_dict={"actor": MLPActor, "qf1": MLPQ, "qf2": MLPQ},
                      algo_hyperparameter={"batch_size": 3})

    class CartActor(MLPActor):
        def __init__(self):
            super().__init__(action_dim=2)
            self.output_info = {"action": (), "log_std": (2,)}
    with pytest.raises(SpecError, match="SAC needs a continuous.*int64.*Use PPO"):
        RLTaskStarter(env="CartPole-v1", model_class_dict={"actor": CartActor, "qf1": MLPQ, "qf2": MLPQ},
                      verbose=False)


def test_keras_model_subclass_like_the_reference_is_accepted():
    class RefActor(tf.keras.Model):  # the reference README subclasses tf.keras.Model directly
        def __init__(self):
            super().__init__()
            self.d = tf.keras.layers.Dense(2)
            self.learning_rate = 2e-4
            self.input_name = ("obs",)
            self.output_info = {"action": (1,), "log_std": (1,)}
            self.optimizer = "Adam"

        def call(self, obs):
            y = self.d(obs)
            return (y[:, :1], y[:, 1:])
    assert isinstance(RLBaseModel(), tf.keras.Model)
    env = start(actor=RefActor)
    assert env.steps_taken == 0



def test_default_models_feed_a_discrete_observation_one_hot_and_a_uint8_image_in_zero_one():
    import gymnasium as gym
    import numpy as np

    from aquaml import GymnasiumEnv, PPO, PPOParameters, default_models
    lake = GymnasiumEnv("FrozenLake-v1")
    actor = default_models("ppo", lake.obs_info, lake.action_info)["actor"]()
    cells = np.arange(16, dtype=np.int64)
    logits = actor(cells)[0].numpy()
    assert tuple(actor.hidden_layers[0].kernel.shape) == (16, 64)  # one input per cell, not the raw index
    x = tf.constant(np.eye(16, dtype=np.float32))
    for layer in actor.hidden_layers:
        x = layer(x)
    np.testing.assert_allclose(logits, actor.mean(x).numpy(), rtol=1e-6)

    image_info = DataInfo.from_space(gym.spaces.Box(0, 255, (4, 4, 3), np.uint8), "pixels")
    critic = default_models("sac", image_info, DataInfo("action", (1,)))["qf1"]()
    image = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3)).astype(np.uint8)
    action = np.zeros((2, 1), np.float32)
    x = tf.concat([image.reshape(2, -1).astype(np.float32) / 255.0, action], -1)
    q = critic(image, action).numpy()
    for layer in critic.hidden_layers:
        x = layer(x)
    np.testing.assert_allclose(q, critic.out(x).numpy(), rtol=1e-5)

    starter = RLTaskStarter(env="FrozenLake-v1", model_class_dict=default_models("ppo", lake.obs_info, lake.action_info),
                            algo=PPO, algo_hyperparameter=PPOParameters(calculate_episodes=1), verbose=False)
    assert starter.algo.host_policy(0).backend == "numpy"  # workers still act without TensorFlow
