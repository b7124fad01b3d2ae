"""Every common gymnasium space: each trains briefly with the default models, or is refused before
any environment step with the reason and the list of what is supported."""
import csv
import os

import gymnasium as gym
import numpy as np
import pytest

from aquaml import DQN, PPO, DQNParameters, GymnasiumEnv, PPOParameters, RLTaskStarter, SpecError
from aquaml.models.cnn import image_layout
from aquaml.algos.registry import default_models

IMAGE = gym.spaces.Box(0, 255, (36, 36, 3), np.uint8)
VECTOR = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)


class SpaceEnv(gym.Env):
    """Observations drawn from ``observation_space``; 20 steps per episode; reward 1 for action 0
    (its first component, for vector actions), so there is something to learn."""

    def __init__(self, observation_space, action_space):
        self.observation_space, self.action_space = observation_space, action_space
        self.steps = 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self.t += 1
        self.steps += 1
        first = np.asarray(action).reshape(-1)[0]
        return self.observation_space.sample(), float(first == 0), False, self.t >= 20, {}


def train(run_root, obs_space, action_space, algo, steps=200):
    env = GymnasiumEnv(SpaceEnv(obs_space, action_space))
    models = default_models(algo.name.lower(), env.obs_info, env.action_info, hidden=(16,), learning_rate=1e-3)
    if algo is DQN:
        params = DQNParameters(total_steps=steps, learning_starts=100, batch_size=16, buffer_size=1000,
                               eval_interval=0, calculate_episodes=1, epoch_length=100, update_interval=1,
                               replay_ratio=0.5)
    else:
        params = PPOParameters(total_steps=steps, rollout_steps=100, batch_size=50, update_epochs=2,
                               eval_interval=0, calculate_episodes=1)
    starter = RLTaskStarter(env=env, model_class_dict=models, algo=algo, algo_hyperparameter=params,
                            run_root=run_root, name="space", verbose=False, tensorboard=False, checkpoint_interval=0)
    final = starter.run()
    with open(os.path.join(starter.run_dir, "progress.csv")) as f:
        rows = list(csv.DictReader(f))
    assert int(rows[-1]["charts/updates"]) > 0
    loss = "losses/td_loss" if algo is DQN else "losses/policy_loss"
    assert all(np.isfinite(float(r[loss])) for r in rows if r[loss])
    assert np.isfinite(final["eval/return_mean"])
    return starter


@pytest.mark.parametrize("name, obs_space", [
    ("tuple", gym.spaces.Tuple((VECTOR, gym.spaces.Discrete(4)))),
    ("discrete", gym.spaces.Discrete(6)),
    ("multibinary", gym.spaces.MultiBinary(5)),
    ("multidiscrete", gym.spaces.MultiDiscrete([3, 4])),
    ("image", IMAGE),
    ("dict of image and vector", gym.spaces.Dict({"camera": IMAGE, "speed": VECTOR})),
])
def test_dqn_trains_on_every_common_observation_space(name, obs_space, run_root):
    starter = train(run_root, obs_space, gym.spaces.Discrete(3), DQN)
    if name == "tuple":
        assert starter.obs_info.names == ("obs_0", "obs_1")
    if "image" in name:  # the default Q-network sends the image through the Nature-DQN trunk
        model = starter.algo.actor.model
        assert any(trunk is not None for trunk in model.trunks)
        assert any(len(w.shape) == 4 for w in model.weights)  # convolution kernels


@pytest.mark.parametrize("action_space, column_shape", [
    (gym.spaces.MultiDiscrete([3, 2, 4]), (3,)),
    (gym.spaces.MultiBinary(4), (4,)),
    (gym.spaces.Discrete(3), ()),
])
def test_ppo_trains_on_product_action_spaces(action_space, column_shape, run_root):
    starter = train(run_root, gym.spaces.Tuple((VECTOR, gym.spaces.Discrete(2))), action_space, PPO)
    actions = starter.algo.act({"obs_0": np.zeros((5, 3), np.float32), "obs_1": np.zeros(5, np.int64)})
    assert actions["action"].shape == (5,) + column_shape
    assert actions["sample"].dtype == np.int64
    assert np.all(actions["action"] >= 0) and np.all(actions["action"] < np.max(getattr(action_space, "nvec", [3, 2])))


def test_product_distributions_match_the_probabilities_they_sample_from():
    import tensorflow as tf
    from scipy import stats
    from aquaml.models.distributions import (bernoulli_log_prob, bernoulli_sample, multi_categorical_log_prob,
                                             multi_categorical_sample)
    rng = np.random.default_rng(0)
    logits = tf.constant([[0.5, -1.0, 2.0, 0.0, 1.0]])  # components of 3 and 2 choices
    n = 40_000
    draws = multi_categorical_sample(tf.repeat(logits, n, 0), rng.gumbel(size=(n, 5)).astype(np.float32), (3, 2))
    pairs = draws.numpy() @ np.array([2, 1])
    p0 = np.exp([0.5, -1.0, 2.0]) / np.exp([0.5, -1.0, 2.0]).sum()
    p1 = np.exp([0.0, 1.0]) / np.exp([0.0, 1.0]).sum()
    expected = np.outer(p0, p1).reshape(-1)
    assert stats.chisquare(np.bincount(pairs, minlength=6), expected * n)[1] > 1e-3
    log_p = multi_categorical_log_prob(tf.constant([[2, 1]]), logits, (3, 2)).numpy()[0]
    assert log_p == pytest.approx(np.log(p0[2] * p1[1]), rel=1e-5)
    bits = bernoulli_sample(tf.repeat(tf.constant([[1.5, -0.5]]), n, 0), rng.gumbel(size=(n, 4)).astype(np.float32))
    np.testing.assert_allclose(bits.numpy().mean(0), 1 / (1 + np.exp([-1.5, 0.5])), atol=0.01)
    lp = bernoulli_log_prob(tf.constant([[1, 0]]), tf.constant([[1.5, -0.5]])).numpy()[0]
    assert lp == pytest.approx(np.log(1 / (1 + np.exp(-1.5))) + np.log(1 / (1 + np.exp(-0.5))), rel=1e-5)


@pytest.mark.parametrize("action_space, kind", [(gym.spaces.MultiDiscrete([3, 2]), "MultiDiscrete"),
                                                (gym.spaces.MultiBinary(3), "MultiBinary"),
                                                (gym.spaces.Box(-1, 1, (2,)), "continuous")])
def test_dqn_refuses_non_discrete_actions_before_any_step(action_space, kind, run_root):
    inner = SpaceEnv(VECTOR, action_space)
    env = GymnasiumEnv(inner)
    with pytest.raises(SpecError, match=f"DQN needs one Discrete action; this environment's action is {kind}"):
        RLTaskStarter(env=env, model_class_dict=default_models("ppo", env.obs_info, env.action_info), algo=DQN,
                      run_root=run_root, verbose=False)
    assert inner.steps == 0 and not os.path.exists(run_root)


@pytest.mark.parametrize("space", [gym.spaces.Text(8), gym.spaces.Graph(VECTOR, None), gym.spaces.Sequence(VECTOR),
                                   gym.spaces.Dict({"ok": VECTOR, "words": gym.spaces.Text(4)})])
def test_unsupported_observation_spaces_are_refused_with_the_supported_list(space):
    with pytest.raises(SpecError, match="is not supported; supported are Box, Discrete, MultiBinary, MultiDiscrete, "
                                        "and Dict or Tuple spaces of those"):
        GymnasiumEnv(SpaceEnv(space, gym.spaces.Discrete(2)))


def test_image_layouts():
    assert image_layout((84, 84, 3), np.uint8) == "hwc"
    assert image_layout((4, 84, 84), np.uint8) == "khw"
    assert image_layout((4, 84, 84, 3), np.uint8) == "khwc"
    assert image_layout((84, 84, 3), np.float32) is None  # float observations are vectors
    assert image_layout((8, 8, 3), np.uint8) is None  # too small for the Nature trunk
