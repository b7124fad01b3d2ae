"""Adversarial imitation: the discriminator's losses, penalty and rewards by hand, relabelling that leaves
the environment's rewards alone, start-up checks of datasets and discriminators, a task learned from the
discriminator alone, exact resume, and GAIL under mpiexec."""
import csv
import json
import math
import os
import re
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import curve, load_tutorial

import aquaml
from aquaml import (DataInfo, GailPPO, GailPPOParameters, GailSAC, GailSACParameters, GymnasiumEnv,
                    ModelContractError, RLBaseEnv, RLBaseModel, RLTaskStarter, SpecError, Trajectories, record_policy,
                    save_data)
from aquaml.algos.imitation import (Discriminator, ExpertSampler, GailObjective, amp_reward,
                                    bce_discriminator_loss, discriminator_loss, gail_reward, gradient_penalty,
                                    least_squares_discriminator_loss, logit_penalty, weight_penalty)
from aquaml.models.base import build_models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")
tutorial5 = load_tutorial("tutorial5")


# --- losses, penalties and rewards by hand ---------------------------------------------------------

def logit(p):
    return math.log(p / (1 - p))


def test_gail_loss_is_the_cross_entropy_of_expert_ones_and_policy_zeros():
    expert, policy = [0.8, 0.5], [0.2, 0.9]
    by_hand = 0.5 * ((-math.log(0.8) - math.log(0.5)) / 2 + (-math.log(0.8) - math.log(0.1)) / 2)
    got = bce_discriminator_loss(tf.constant([logit(p) for p in expert]), tf.constant([logit(p) for p in policy]))
    assert float(got) == pytest.approx(by_hand, rel=1e-5)
    assert float(bce_discriminator_loss(tf.zeros(3), tf.zeros(5))) == pytest.approx(math.log(2), rel=1e-6)


def test_amp_loss_is_least_squares_towards_plus_and_minus_one():
    got = least_squares_discriminator_loss(tf.constant([1.0, 0.0]), tf.constant([-1.0, 1.0, 0.5]))
    assert float(got) == pytest.approx((0 + 1) / 2 + (0 + 4 + 2.25) / 3)


def test_gail_rewards_as_functions_of_d():
    d = np.array([0.8, 0.5, 0.1])
    logits = tf.constant([logit(p) for p in d], tf.float32)
    np.testing.assert_allclose(gail_reward(logits, "gail").numpy(), -np.log(1 - d), rtol=1e-5)
    np.testing.assert_allclose(gail_reward(logits, "airl").numpy(), np.log(d) - np.log(1 - d), rtol=1e-5)
    with pytest.raises(ValueError, match=r"reward_form must be one of \('gail', 'airl'\), got 'wgan'"):
        gail_reward(logits, "wgan")


def test_amp_reward_as_a_function_of_d():
    scores = tf.constant([1.0, -1.0, 0.0, 2.0, 3.0, -3.0, 0.5])
    np.testing.assert_allclose(amp_reward(scores).numpy(), [1.0, 0.0, 0.75, 0.75, 0.0, 0.0, 1 - 0.25 * 0.25])


def test_gradient_penalty_of_linear_and_quadratic_scores():
    weights = {"obs": tf.constant([[1.0], [-2.0]]), "action": tf.constant([[3.0]])}
    linear = lambda x: tf.reshape(x["obs"] @ weights["obs"] + x["action"] @ weights["action"] + 0.5, [-1])  # noqa
    inputs = {"obs": tf.random.normal((4, 2)), "action": tf.random.normal((4, 1)), "count": tf.ones((4,), tf.int64)}
    scores, penalty = gradient_penalty(linear, inputs)
    assert float(penalty) == pytest.approx(1 + 4 + 9)  # the gradient is the weights, for every sample
    np.testing.assert_allclose(scores.numpy(), linear(inputs).numpy())
    x = tf.constant([[1.0, 2.0], [0.0, 3.0]])
    _, penalty = gradient_penalty(lambda d: tf.reduce_sum(tf.square(d["obs"]), axis=1), {"obs": x})
    assert float(penalty) == pytest.approx(np.mean([4 * 5, 4 * 9]))  # grad 2x, |2x|^2 = 4|x|^2


def test_regularisers_and_the_total_loss():
    assert float(logit_penalty(tf.constant([1.0, 3.0]), tf.constant([2.0]))) == pytest.approx(0.5 * (5.0 + 4.0))
    kernel, bias = tf.Variable([[1.0, 2.0], [3.0, 0.0]]), tf.Variable([5.0, 5.0])
    assert float(weight_penalty([kernel, bias])) == pytest.approx(14.0)  # biases left out
    total = discriminator_loss(tf.constant(0.7), tf.constant(2.0), tf.constant(3.0), tf.constant(14.0),
                               grad_penalty=10.0, logit_reg=0.1, weight_decay=0.01)
    assert float(total) == pytest.approx(0.7 + 5 * 2.0 + 0.1 * 3.0 + 0.01 * 14.0)


class LinearDiscriminator(RLBaseModel):
    def __init__(self):
        super().__init__()
        self.score = tf.keras.layers.Dense(1, kernel_initializer=keras.initializers.Constant(0.5),
                                           bias_initializer=keras.initializers.Constant(0.1))
        self.learning_rate = 0.1
        self.optimizer = "SGD"
        self.input_name = ("obs", "action")

    def call(self, obs, action):
        return self.score(tf.concat([obs, action], -1))


def test_one_discriminator_step_follows_the_hand_gradient():
    """A linear D(o, a) = w.[o, a] + b, plain SGD, GAIL's loss with a gradient penalty and weight
    decay: the step is w -= lr * (d BCE/dw + grad_penalty * w + 2 * weight_decay * w)."""
    obs_info, action_info = DataInfo("obs", (2,)), DataInfo("action", (1,))
    models, _ = build_models({"actor": TinyActor, "discriminator": LinearDiscriminator}, ("actor", "discriminator"),
                             obs_info, action_info, model_view=lambda k, o, a: GailObjective.view(o, a))
    expert = {"obs": np.array([[1.0, 0.0]], np.float32), "action": np.array([[1.0]], np.float32)}
    policy = {"obs": np.array([[0.0, 2.0]], np.float32), "action": np.array([[-1.0]], np.float32)}
    disc = Discriminator(models["discriminator"], GailObjective(), ExpertSampler(expert, seed=0), grad_penalty=10.0,
                         logit_reg=0.0, weight_decay=0.01)
    w, b = np.full(3, 0.5), 0.1
    xe, xp = np.array([1.0, 0.0, 1.0]), np.array([0.0, 2.0, -1.0])
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    le, lp = w @ xe + b, w @ xp + b
    grad_w = 0.5 * (-(1 - sig(le)) * xe + sig(lp) * xp) + 10.0 * w + 2 * 0.01 * w
    grad_b = 0.5 * (-(1 - sig(le)) + sig(lp))
    metrics = disc.train_step({k: tf.constant(v) for k, v in policy.items()}).numpy()
    bce = 0.5 * (np.log1p(np.exp(-le)) + np.log1p(np.exp(lp)))
    np.testing.assert_allclose(metrics, [bce, w @ w, 0.5 * (1.0 + 0.0)], rtol=1e-5)  # lp = 0.6 > 0: wrong side
    kernel, bias = (v.numpy() for v in models["discriminator"].model.weights)
    np.testing.assert_allclose(kernel[:, 0], w - 0.1 * grad_w, rtol=1e-5)
    np.testing.assert_allclose(bias, [b - 0.1 * grad_b], rtol=1e-5)


# --- small tasks -------------------------------------------------------------------------------------

class TinyActor(RLBaseModel):
    def __init__(self, outputs=1, width=32, log_std=True):
        super().__init__()
        self.hidden = tf.keras.layers.Dense(width, activation="tanh")
        self.mean = tf.keras.layers.Dense(outputs)
        self.log_std = tf.keras.layers.Dense(outputs) if log_std else None
        self.learning_rate = 3e-3
        self.input_name = ("obs",)
        self.output_info = {"action": (outputs,), **({"log_std": (outputs,)} if log_std else {})}

    def call(self, obs):
        x = self.hidden(obs)
        return (self.mean(x),) if self.log_std is None else (self.mean(x), self.log_std(x))


class ZeroRewardMatch(RLBaseEnv):
    """A state among ``k`` (one-hot) each step; the expert answers ``(state + 1) % k``. The
    environment's reward is always 0, and every episode is cut at ``horizon`` steps (no termination
    to survive, so only the discriminator's reward can teach anything)."""

    def __init__(self, k=4, horizon=8):
        super().__init__()
        self.k, self.horizon = k, horizon
        self._obs_info = DataInfo("obs", (k,), np.float32)
        self._action_info = DataInfo("action", (), np.int64, {"action": {"n": k, "start": 0}})
        self.rng = np.random.default_rng(0)
        self.t, self.state = 0, 0

    def _obs(self):
        self.state = int(self.rng.integers(self.k))
        return {"obs": np.eye(self.k, dtype=np.float32)[self.state]}

    def reset(self, seed=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.t = 0
        return self.initial_obs(self._obs())

    def step(self, action_dict):
        self.t += 1
        return self.check_obs(self._obs(), action_dict), {"total_reward": 0.0}, False, self.t >= self.horizon, {}


def match_expert(obs, deterministic=True):
    return {"action": (np.argmax(obs["obs"], axis=-1) + 1) % obs["obs"].shape[-1]}


def test_a_task_only_the_expert_action_solves_is_learned_from_the_discriminator_alone(tmp_path):
    env = ZeroRewardMatch()
    path = str(tmp_path / "match.h5")
    save_data(path, record_policy(env, match_expert, episodes=50, seed=1))
    models = {"actor": lambda: TinyActor(outputs=4, log_std=False), "critic": lambda: TinyCritic(),
              "discriminator": lambda: TinyDiscriminator(("obs", "action"))}
    params = GailPPOParameters(expert=path, total_steps=8_192, rollout_steps=64, envs_per_worker=4, batch_size=64,
                               update_epochs=4, disc_batch_size=64, disc_epochs=2, eval_interval=0,
                               calculate_episodes=4, seed=0)
    starter = RLTaskStarter(ZeroRewardMatch(), models, algo="gail-ppo", algo_hyperparameter=params,
                            run_root=str(tmp_path / "runs"), name="match", verbose=False, tensorboard=False)
    starter.run()
    chosen = starter.algo.act({"obs": np.eye(4, dtype=np.float32)}, deterministic=True)["action"]
    assert chosen.tolist() == [1, 2, 3, 0]  # a random start answers right one time in four
    rows = list(csv.DictReader(open(os.path.join(starter.run_dir, "progress.csv"))))
    assert {float(r["charts/env_reward"]) for r in rows} == {0.0}
    accuracy = [float(r["losses/disc_accuracy"]) for r in rows]
    assert max(accuracy) > 0.65 and np.mean(accuracy[-4:]) < 0.6  # told them apart, then no longer could


class TinyCritic(RLBaseModel):
    def __init__(self, names=("obs",)):
        super().__init__()
        self.hidden = tf.keras.layers.Dense(32, activation="tanh")
        self.out = tf.keras.layers.Dense(1)
        self.learning_rate = 3e-3
        self.input_name = tuple(names)

    def build(self, *shapes):
        self.built = True  # the dense layers build on the first call, whatever the number of inputs

    def call(self, *inputs):
        return self.out(self.hidden(tf.concat([tf.cast(x, tf.float32) for x in inputs], -1)))


class TinyDiscriminator(TinyCritic):
    def __init__(self, names):
        super().__init__(names)


def small_pendulum_dataset(path, episodes=2):
    save_data(path, record_policy(GymnasiumEnv("Pendulum-v1"), tutorial5.pendulum_swing_up, episodes=episodes,
                                  seed=100))
    return path


def built(algo_cls, obs_info, action_info, params, models):
    specs, action_info = build_models(models, algo_cls.required_models, obs_info, action_info,
                                      algo_cls.optional_models, algo_cls.critics_take_action, algo_cls.model_view)
    return algo_cls(specs, obs_info, action_info, params)


def test_gail_ppo_relabels_a_copy_and_never_learns_from_the_environments_reward(tmp_path):
    env = GymnasiumEnv("Pendulum-v1")
    path = small_pendulum_dataset(str(tmp_path / "pendulum.h5"))
    params = GailPPOParameters(expert=path, rollout_steps=64, batch_size=32, update_epochs=2, disc_batch_size=32,
                               seed=3)
    models = {"actor": lambda: TinyActor(log_std=False), "critic": TinyCritic,
              "discriminator": lambda: TinyDiscriminator(("obs", "action"))}
    rng = np.random.default_rng(0)
    segments = {"obs": rng.normal(size=(1, 64, 1, 3)).astype(np.float32),
                "next_obs": rng.normal(size=(1, 64, 1, 3)).astype(np.float32),
                "sample": rng.normal(size=(1, 64, 1, 1)).astype(np.float32) * 2,
                "log_prob": np.full((1, 64, 1), -1.0, np.float32), "reward": rng.normal(size=(1, 64, 1)).astype(np.float32),
                "terminated": np.zeros((1, 64, 1), np.float32), "truncated": np.zeros((1, 64, 1), np.float32)}
    stored = {k: v.copy() for k, v in segments.items()}
    runs = []
    for scale in (1.0, 1000.0):  # the environment's reward, and a very different one
        keras.utils.set_random_seed(0)
        algo = built(GailPPO, env.obs_info, env.action_info, params, models)
        given = dict(segments, reward=segments["reward"] * scale + 5.0)
        metrics = dict(zip(GailPPO.metric_names, algo.train(given)))
        inputs = {"obs": segments["obs"].reshape(64, 3), "action": np.clip(segments["sample"].reshape(64, 1), -1, 1)}
        by_hand = gail_reward(algo.discriminator.scores(inputs), "gail").numpy()  # after the round's training
        assert metrics["charts/disc_reward"] == pytest.approx(by_hand.mean(), rel=1e-5)
        assert metrics["charts/env_reward"] == pytest.approx(given["reward"].mean(), rel=1e-5)
        runs.append([w.numpy() for w in algo.actor_weight_variables()])
    for k, v in stored.items():
        np.testing.assert_array_equal(segments[k], v)  # the segments (the rollout buffer's) are as stored
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)  # task_reward_weight=0: the environment's reward never reaches PPO


def test_gail_sac_recomputes_each_batch_and_the_replay_keeps_the_environments_reward(tmp_path):
    env = GymnasiumEnv("Pendulum-v1")
    path = small_pendulum_dataset(str(tmp_path / "pendulum.h5"))
    params = GailSACParameters(expert=path, batch_size=32, grad_penalty=10.0, seed=1)
    models = {"actor": TinyActor, "qf1": lambda: TinyCritic(("obs", "action")),
              "qf2": lambda: TinyCritic(("obs", "action")), "discriminator": lambda: TinyDiscriminator(("obs", "action"))}
    keras.utils.set_random_seed(0)
    algo = built(GailSAC, env.obs_info, env.action_info, params, models)
    buffer = algo.make_buffer()
    rng = np.random.default_rng(0)
    rows = {k: rng.normal(size=(200,) + algo.batch_info.shape(k)).astype(np.float32) for k in algo.batch_info.names}
    rows["action"] = np.tanh(rows["action"])
    rows["terminated"][:] = rows["truncated"][:] = 0.0
    buffer.write_batch(0, rows)
    batch = algo.sample(buffer, np.random.default_rng(1))
    metrics = dict(zip(GailSAC.metric_names, algo.update(batch)))
    by_hand = gail_reward(algo.discriminator.scores({"obs": batch["obs"], "action": batch["action"]})).numpy()
    assert metrics["charts/disc_reward"] == pytest.approx(by_hand.mean(), rel=1e-5)
    assert metrics["charts/env_reward"] == pytest.approx(batch["reward"].mean(), rel=1e-5)
    assert metrics["losses/disc_grad_penalty"] > 0
    np.testing.assert_array_equal(buffer.arrays["reward"][0, :200], rows["reward"])


# --- start-up checks -----------------------------------------------------------------------------------

class CountingPendulum(GymnasiumEnv):
    steps_taken = 0

    def __init__(self):
        super().__init__("Pendulum-v1")

    def step(self, action_dict):
        CountingPendulum.steps_taken += 1
        return super().step(action_dict)


def start_gail(tmp_path, expert, algo="gail-sac", models=None, **extra):
    env = CountingPendulum()
    models = models or aquaml.default_models(algo, env.obs_info, env.action_info, (16,))
    params = aquaml.algorithm(algo).parameters_class(expert=expert, total_steps=100, **extra)
    return RLTaskStarter(env, models, algo=algo, algo_hyperparameter=params, run_root=str(tmp_path / "runs"),
                         verbose=False, tensorboard=False)


def test_a_dataset_of_another_task_is_refused_before_any_step(tmp_path):
    cartpole = str(tmp_path / "cartpole.h5")
    save_data(cartpole, record_policy(GymnasiumEnv("CartPole-v1"), tutorial5.cartpole_balance, episodes=1, seed=0))
    CountingPendulum.steps_taken = 0
    for algo in ("gail-sac", "amp-ppo"):
        with pytest.raises(SpecError, match=r"cartpole.h5: observation 'obs' has shape \(4,\) but the task expects "
                                             r"\(3,\)"):
            start_gail(tmp_path, cartpole, algo)
    wrong_action = str(tmp_path / "two_torques.h5")
    rows = {"obs": np.zeros((5, 3), np.float32), "action": np.zeros((5, 2), np.float32),
            "reward": np.zeros(5, np.float32), "terminated": np.zeros(5, bool), "truncated": np.eye(5, dtype=bool)[4]}
    save_data(wrong_action, Trajectories(DataInfo("obs", (3,)), DataInfo("action", (2,)), rows, [0]))
    with pytest.raises(SpecError, match=r"action 'action' has shape \(2,\) but the task expects \(1,\)"):
        start_gail(tmp_path, wrong_action)
    start_gail(tmp_path, wrong_action, "amp-sac")  # AMP reads no action: the observations are what must fit
    assert CountingPendulum.steps_taken == 0 and not (tmp_path / "runs").exists()


def test_missing_or_short_datasets_and_wrong_discriminators_are_refused(tmp_path):
    path = small_pendulum_dataset(str(tmp_path / "two.h5"))
    with pytest.raises(ValueError, match=r"expert: GAIL-SAC learns from an expert dataset; give expert='path.h5'"):
        start_gail(tmp_path, None)
    with pytest.raises(FileNotFoundError, match="no dataset at"):
        start_gail(tmp_path, str(tmp_path / "none.h5"))
    with pytest.raises(ValueError, match=r"expert_episodes=3 but .*two.h5 holds 2 episodes"):
        start_gail(tmp_path, path, expert_episodes=3)
    gail_models = {"actor": TinyActor, "qf1": lambda: TinyCritic(("obs", "action")),
                   "qf2": lambda: TinyCritic(("obs", "action"))}
    with pytest.raises(ModelContractError, match=r"discriminator.input_name=\('obs',\) must hold observation names "
                                                 r"and 'action'"):
        start_gail(tmp_path, path, models={**gail_models, "discriminator": lambda: TinyDiscriminator(("obs",))})
    with pytest.raises(ModelContractError, match=r"discriminator.input_name has \['next_obs'\], which this algorithm "
                                                 r"does not give that model; available names are \('obs', 'action'\)"):
        start_gail(tmp_path, path, models={**gail_models,
                                           "discriminator": lambda: TinyDiscriminator(("obs", "next_obs"))})
    with pytest.raises(ModelContractError, match=r"must name observation entries and their next_ counterparts.*"
                                                 r"missing \['next_obs'\]"):
        start_gail(tmp_path, path, "amp-sac", models={**gail_models,
                                                      "discriminator": lambda: TinyDiscriminator(("obs",))})
    with pytest.raises(TypeError, match=r"valid fields are: .*expert, expert_episodes"):
        GailSACParameters(expert=path, expertt=3)
    with pytest.raises(ValueError, match=r"disc_batch_size must be None or at most batch_size=256"):
        GailSACParameters(disc_batch_size=512)


def cli(*args, timeout=300):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def test_the_command_line_refuses_a_wrong_dataset_and_an_expert_for_sac(tmp_path):
    cartpole = str(tmp_path / "cartpole.h5")
    save_data(cartpole, record_policy(GymnasiumEnv("CartPole-v1"), tutorial5.cartpole_balance, episodes=1, seed=0))
    proc = cli(sys.executable, "-m", "aquaml.cli", "train", "--algo", "gail-sac", "--env", "Pendulum-v1",
               "--expert", cartpole, "--run-root", str(tmp_path / "runs"), "--steps", "100")
    assert proc.returncode == 2
    assert re.search(r"error: .*cartpole.h5: observation 'obs' has shape \(4,\) but the task expects \(3,\)",
                     proc.stderr), proc.stderr[-2000:]
    assert not (tmp_path / "runs").exists()
    proc = cli(sys.executable, "-m", "aquaml.cli", "train", "--algo", "sac", "--env", "Pendulum-v1",
               "--expert", cartpole, "--run-root", str(tmp_path / "runs"))
    assert proc.returncode == 2
    assert "--expert: SACParameters learns from no expert dataset; algorithms that do: amp-ppo, amp-sac, " \
           "gail-ppo, gail-sac" in proc.stderr



def test_a_tuning_study_passes_the_expert_to_every_trial_and_sac_refuses_it(tmp_path):
    pytest.importorskip("optuna")
    pendulum = str(tmp_path / "pendulum.h5")
    save_data(pendulum, record_policy(GymnasiumEnv("Pendulum-v1"), tutorial5.pendulum_swing_up, episodes=2, seed=0))
    space = tmp_path / "space.yaml"
    space.write_text("search:\n  grad_penalty: {type: float, low: 0.01, high: 1.0, log: true}\n"
                     "fixed:\n  learning_starts: 200\n")
    study = ["tune", "--env", "Pendulum-v1", "--space", str(space), "--trials", "1", "--steps", "300",
             "--run-root", str(tmp_path / "runs"), "--no-tensorboard", "--quiet", "--expert", pendulum,
             "--set", "batch_size=64"]
    proc = cli(sys.executable, "-m", "aquaml.cli", *study, "--algo", "gail-sac", "--storage", str(tmp_path / "s.log"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(tmp_path / "runs" / "s" / "trials.csv") as f:
        assert [row["state"] for row in csv.DictReader(f)] == ["COMPLETE"]
    with open(tmp_path / "runs" / "s" / "trial_0" / "progress.csv") as f:
        assert "losses/disc_loss" in next(csv.reader(f))
    with open(tmp_path / "runs" / "s" / "trial_0" / "config.json") as f:
        parameters = json.load(f)["parameters"]
    assert (parameters["expert"], parameters["batch_size"]) == (pendulum, 64)
    proc = cli(sys.executable, "-m", "aquaml.cli", *study, "--algo", "sac", "--storage", str(tmp_path / "t.log"))
    assert proc.returncode == 2
    assert "fixed.expert: unknown parameter 'expert'; SACParameters fields" in proc.stderr

# --- resume and MPI ----------------------------------------------------------------------------------

class StoppingPendulum(GymnasiumEnv):
    """Sends this process SIGTERM once, at the ``stop_at``-th step over all copies (0: never)."""
    stop_at, steps = 0, 0

    def __init__(self):
        super().__init__("Pendulum-v1")

    def step(self, action_dict):
        StoppingPendulum.steps += 1
        if StoppingPendulum.steps == StoppingPendulum.stop_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().step(action_dict)


@pytest.mark.parametrize("algo", ["gail-sac", "amp-ppo"])
def test_a_run_stopped_and_resumed_matches_an_uninterrupted_one(algo, tmp_path):
    """SIGTERM mid-run, then resume: the progress.csv and the discriminator's weights equal an
    uninterrupted run's (discriminator, its optimizer, the expert sampling stream and AMP's replay
    of policy transitions are all in the checkpoint)."""
    expert = small_pendulum_dataset(str(tmp_path / "pendulum.h5"))
    env = GymnasiumEnv("Pendulum-v1")
    models = aquaml.default_models(algo, env.obs_info, env.action_info, (16,))
    extra = dict(learning_starts=100, batch_size=32, epoch_length=100, grad_penalty=1.0) if algo == "gail-sac" else \
        dict(rollout_steps=100, batch_size=50, update_epochs=2, disc_batch_size=50, policy_replay_size=150)

    def run(name, stop_at, resume=False):
        StoppingPendulum.steps, StoppingPendulum.stop_at = 0, stop_at
        params = aquaml.algorithm(algo).parameters_class(expert=expert, total_steps=600, eval_interval=300,
                                                         calculate_episodes=1, seed=2, **extra)
        starter = RLTaskStarter(StoppingPendulum(), models, algo=algo, algo_hyperparameter=params, name=name,
                                run_root=str(tmp_path / "runs"), verbose=False, tensorboard=False,
                                checkpoint_interval=200, resume=resume)
        starter.run()
        return starter

    full = run("full", 0)
    stopped = run("stopped", 350)
    assert stopped.interrupted
    resumed = run("stopped", 0, resume=True)
    assert curve(resumed.run_dir) == curve(full.run_dir)
    for a, b in zip(full.algo.discriminator.spec.model.weights, resumed.algo.discriminator.spec.model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert "models/discriminator.weights.h5" in {os.path.relpath(os.path.join(d, f), full.run_dir)
                                                  for d, _, fs in os.walk(full.run_dir) for f in fs}


def test_gail_under_mpiexec_trains_on_rank_0_and_exports_the_policy(tmp_path):
    expert = small_pendulum_dataset(str(tmp_path / "pendulum.h5"))
    proc = cli(MPIEXEC, "-n", "3", sys.executable, "-m", "aquaml.cli", "train", "--algo", "gail-sac", "--env",
               "Pendulum-v1", "--expert", expert, "--steps", "1200", "--hidden", "32,32", "--set",
               "learning_starts=400", "--set", "batch_size=64", "--set", "epoch_length=400", "--set",
               "grad_penalty=10", "--eval-interval", "0", "--eval-episodes", "2", "--name", "gail",
               "--run-root", str(tmp_path / "runs"), "--no-tensorboard", timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "gail"
    rows = list(csv.DictReader(open(run_dir / "progress.csv")))
    assert len(rows) == 3 and int(rows[-1]["global_step"]) == 1200  # a row per epoch, as the learner saw them
    last = rows[-1]
    assert 0 < float(last["losses/disc_loss"]) < 1 and float(last["losses/disc_grad_penalty"]) > 0
    assert float(last["charts/disc_reward"]) > 0 and float(last["charts/env_reward"]) < 0
    assert '"ranks": 3' in open(run_dir / "config.json").read()
    assert os.path.isfile(run_dir / "models" / "discriminator.weights.h5")
    policy = aquaml.load_policy(str(run_dir))
    assert policy.act({"obs": np.zeros(3, np.float32)})["action"].shape == (1,)
