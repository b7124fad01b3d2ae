"""Whole runs: the reference tutorial's code, tutorial1, the run directory, and a task actually learned."""
import csv
import glob
import json
import os

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf
from helpers import MLPActor, MLPQ, load_tutorial

from aquaml import SAC2, DataInfo, RLBaseEnv, RLTaskStarter, SAC2_parameter, SACParameters



# --- the reference README's tutorial, with its typos fixed (dense3 defined, gymnasium reset) ---------
class Actor_net(tf.keras.Model):
    def __init__(self):
        super(Actor_net, self).__init__()
        self.dense1 = tf.keras.layers.Dense(64, activation='relu')
        self.dense2 = tf.keras.layers.Dense(64, activation='tanh')
        self.dense3 = tf.keras.layers.Dense(1)
        self.log_std = tf.keras.layers.Dense(1)
        self.learning_rate = 2e-4
        self.input_name = ('obs',)
        self.output_info = {'action': (1,), 'log_std': (1,)}
        self.optimizer = 'Adam'

    def call(self, obs):
        x = self.dense1(obs)
        x = self.dense2(x)
        return (self.dense3(x), self.log_std(x))

    def reset(self):
        pass


class Q_net(tf.keras.Model):
    def __init__(self):
        super(Q_net, self).__init__()
        self.dense1 = tf.keras.layers.Dense(64, activation='relu')
        self.dense2 = tf.keras.layers.Dense(64, activation='relu')
        self.dense3 = tf.keras.layers.Dense(1)
        self.learning_rate = 2e-4
        self.input_name = ('obs', 'action')
        self.optimizer = 'Adam'

    def call(self, obs, action):
        return self.dense3(self.dense2(self.dense1(tf.concat([obs, action], axis=-1))))

    def reset(self):
        pass


class PendulumWrapper(RLBaseEnv):
    def __init__(self, env_name: str):
        super().__init__()
        self.env = gym.make(env_name)
        self.env_name = env_name
        self._obs_info = DataInfo(names=('obs',), shapes=((3,)), dtypes=np.float32)

    def reset(self):
        observation, _ = self.env.reset()
        observation = observation.reshape(1, -1)
        obs = {'obs': observation}
        obs = self.initial_obs(obs)
        return obs

    def step(self, action_dict):
        action = action_dict['action']
        action *= 2
        observation, reward, terminated, truncated, info = self.env.step(action)
        info['TimeLimit.truncated'] = truncated
        observation = observation.reshape(1, -1)
        obs = {'obs': observation}
        obs = self.check_obs(obs, action_dict)
        reward = {'total_reward': reward}
        return obs, reward, terminated or truncated, info


def test_reference_tutorial_runs(run_root):
    sac_parameter = SAC2_parameter(epoch_length=200, n_epochs=2, batch_size=32, discount=0.99, alpha=0.2, tau=0.005,
                                   buffer_size=100000, mini_buffer_size=100, update_interval=50)
    model_class_dict = {'actor': Actor_net, 'qf1': Q_net, 'qf2': Q_net}
    starter = RLTaskStarter(env=PendulumWrapper('Pendulum-v1'), model_class_dict=model_class_dict, algo=SAC2,
                            algo_hyperparameter=sac_parameter, name='SAC', run_root=run_root, verbose=False)
    with pytest.warns(UserWarning, match="4-tuple"):
        result = starter.run()
    with open(os.path.join(starter.run_dir, "progress.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["global_step"]) for r in rows] == [200, 400]
    assert int(rows[-1]["charts/updates"]) == 300  # (400 - 100) steps at replay ratio 1
    assert rows[-1]["charts/episode_return"] != "" and float(rows[-1]["charts/episodes"]) == 1
    assert np.isfinite(result["eval/return_mean"])


def test_run_directory_contents_and_no_overwrite(run_root):
    def run():
        starter = RLTaskStarter(env="Pendulum-v1", model_class_dict={"actor": MLPActor, "qf1": MLPQ, "qf2": MLPQ},
                                algo_hyperparameter=SACParameters(total_steps=300, epoch_length=100, learning_starts=100,
                                                                  eval_interval=200, calculate_episodes=1),
                                name="demo", run_root=run_root, verbose=False)
        starter.run()
        return starter.run_dir
    first, second = run(), run()
    assert os.path.basename(first) == "demo" and os.path.basename(second) == "demo-2"
    files = set(os.listdir(first))
    assert {"config.json", "progress.csv", "models"} <= files
    assert glob.glob(os.path.join(first, "events.out.tfevents.*"))
    assert sorted(os.listdir(os.path.join(first, "models"))) == ["actor.weights.h5", "qf1.weights.h5",
                                                                  "qf2.weights.h5", "sac_state.npz"]
    config = json.load(open(os.path.join(first, "config.json")))
    assert config["parameters"]["total_steps"] == 300 and config["obs_info"]["names"] == ["obs"]
    assert config["versions"]["tensorflow"] == tf.__version__
    with open(os.path.join(first, "progress.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["eval/return_mean"] != "" for r in rows] == [False, True, True]
    for key in ("losses/qf_loss", "losses/actor_loss", "losses/alpha", "losses/entropy", "charts/SPS"):
        assert key in rows[0]
    # the saved actor reloads and acts like the trained one
    actor = MLPActor()
    actor(tf.zeros((1, 3)))
    actor.load_weights(os.path.join(first, "models", "actor.weights.h5"))
    assert all(np.isfinite(w).all() for w in actor.get_weights())


def test_tutorial1_script(run_root, monkeypatch, capsys):
    monkeypatch.chdir(os.path.dirname(run_root))
    tutorial1 = load_tutorial("tutorial1")
    result = tutorial1.main(["--steps", "1200", "--name", "t1"])
    out = capsys.readouterr().out
    assert "final evaluation return:" in out and "step 1000/1200" in out
    assert os.path.isfile(os.path.join(os.path.dirname(run_root), "runs", "t1", "models", "actor.weights.h5"))
    assert np.isfinite(result["eval/return_mean"])


def test_sac_learns_pendulum(run_root):
    """The learned policy must swing up and hold: random play scores about -1200, a learned one above -400."""
    starter = RLTaskStarter(env="Pendulum-v1", model_class_dict={"actor": MLPActor, "qf1": MLPQ, "qf2": MLPQ},
                            algo_hyperparameter=SACParameters(total_steps=8000, learning_starts=500,
                                                              alpha_learning_rate=1e-3, eval_interval=0,
                                                              calculate_episodes=5, seed=0),
                            run_root=run_root, verbose=False, tensorboard=False)
    result = starter.run()
    assert result["eval/return_mean"] > -400, result


def test_ctrl_c_keeps_the_weights(run_root):
    from helpers import CountingEnv

    class Interrupting(CountingEnv):
        def step(self, action_dict):
            if self.steps_taken == 150:
                raise KeyboardInterrupt
            return super().step(action_dict)
    starter = RLTaskStarter(env=Interrupting(), model_class_dict={"actor": MLPActor, "qf1": MLPQ, "qf2": MLPQ},
                            algo_hyperparameter=SACParameters(total_steps=1000, learning_starts=100, epoch_length=100),
                            run_root=run_root, verbose=False, tensorboard=False)
    with pytest.raises(KeyboardInterrupt):
        starter.run()
    assert os.path.isfile(os.path.join(starter.run_dir, "models", "actor.weights.h5"))
    with open(os.path.join(starter.run_dir, "progress.csv")) as f:
        assert [r["global_step"] for r in csv.DictReader(f)] == ["100"]


def test_several_envs_per_worker_count_every_transition(run_root):
    starter = RLTaskStarter(env="Pendulum-v1", model_class_dict={"actor": MLPActor, "qf1": MLPQ, "qf2": MLPQ},
                            algo_hyperparameter=SACParameters(total_steps=400, epoch_length=200, learning_starts=100,
                                                              envs_per_worker=4, calculate_episodes=2),
                            run_root=run_root, verbose=False, tensorboard=False)
    starter.run()
    assert int(starter.buffer.counters[0]) == 400
    with open(os.path.join(starter.run_dir, "progress.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["global_step"]) for r in rows] == [200, 400]
    assert int(rows[-1]["charts/updates"]) == 300


def test_the_first_screen_of_a_run_holds_only_aquamls_lines(tmp_path):
    """TensorFlow's import prints absl's "log messages before absl::InitializeLog()" notice and the
    oneDNN note (twice each, on every rank); a user's terminal should show aquaml's lines alone."""
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "OMPI_", "PMIX_", "TF_CPP_", "TF_ENABLE_ONEDNN"))}
    proc = subprocess.run([sys.executable, "-m", "aquaml.cli", "train", "--env", "Pendulum-v1", "--steps", "200",
                           "--hidden", "16,16", "--set", "learning_starts=100", "--set", "epoch_length=100",
                           "--eval-episodes", "1", "--no-tensorboard"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:]
    lines = proc.stdout.splitlines()
    assert lines and all(line.startswith("[Pendulum-v1_sac] ") for line in lines), "\n".join(lines[:12])
