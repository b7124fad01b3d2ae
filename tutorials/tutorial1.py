"""Tutorial 1: Soft Actor-Critic on Pendulum-v1, written the way the reference AquaML tutorial is.

    python tutorials/tutorial1.py                      # 10,000 steps in one process
    mpirun -n 6 python tutorials/tutorial1.py          # one optimizer rank and five worker ranks
    python tutorials/tutorial1.py --steps 2000 --seed 3

The pieces a user writes: an actor and a critic (RLBaseModel subclasses), an environment wrapper
(RLBaseEnv), the algorithm's parameters, and an RLTaskStarter that runs it all.
"""
import argparse

import gymnasium as gym
import numpy as np

import aquaml  # first: it sets TensorFlow's log level before TensorFlow loads
import tensorflow as tf
from aquaml import DataInfo, RLBaseEnv, RLBaseModel, RLTaskStarter, SAC2, SAC2_parameter


HIDDEN = 256  # width of both hidden layers of every network (--hidden)


class Actor_net(RLBaseModel):
    """Outputs the mean (before tanh squashing) and log standard deviation of the action."""

    def __init__(self):
        super().__init__()
        self.dense1 = tf.keras.layers.Dense(HIDDEN, activation="relu")
        self.dense2 = tf.keras.layers.Dense(HIDDEN, activation="relu")
        self.action_layer = tf.keras.layers.Dense(1)
        self.log_std = tf.keras.layers.Dense(1)
        self.learning_rate = 1e-3
        self.input_name = ("obs",)
        self.output_info = {"action": (1,), "log_std": (1,)}
        self.optimizer = "Adam"

    def call(self, obs):
        x = self.dense2(self.dense1(obs))
        return (self.action_layer(x), self.log_std(x))

    def reset(self):
        pass


class Q_net(RLBaseModel):
    """Scores an (observation, action) pair; returns a tensor, not a tuple."""

    def __init__(self):
        super().__init__()
        self.dense1 = tf.keras.layers.Dense(HIDDEN, activation="relu")
        self.dense2 = tf.keras.layers.Dense(HIDDEN, activation="relu")
        self.q = tf.keras.layers.Dense(1)
        self.learning_rate = 1e-3
        self.input_name = ("obs", "action")
        self.optimizer = "Adam"

    def call(self, obs, action):
        return self.q(self.dense2(self.dense1(tf.concat([obs, action], axis=-1))))

    def reset(self):
        pass


class PendulumWrapper(RLBaseEnv):
    """Pendulum-v1 as an RLBaseEnv: actions arrive in [-1, 1] and are scaled to the torque range."""

    def __init__(self, env_name="Pendulum-v1"):
        super().__init__()
        self.env = gym.make(env_name)
        self._obs_info = DataInfo(names=("obs",), shapes=((3,)), dtypes=np.float32)

    def reset(self, seed=None):
        observation, _ = self.env.reset(seed=seed)
        return self.initial_obs({"obs": observation.astype(np.float32)})

    def step(self, action_dict):
        action = action_dict["action"] * 2.0
        observation, reward, terminated, truncated, info = self.env.step(action)
        obs = self.check_obs({"obs": observation.astype(np.float32)}, action_dict)
        return obs, {"total_reward": reward}, terminated, truncated, info


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000, help="environment steps (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--name", default="pendulum_sac", help="run name under runs/ (default pendulum_sac)")
    parser.add_argument("--learning-starts", type=int, default=1000,
                        help="transitions collected before the first update (default 1000)")
    parser.add_argument("--eval-interval", type=int, default=2000,
                        help="environment steps between evaluations (default 2000)")
    parser.add_argument("--hidden", type=int, default=256, help="hidden layer width (default 256)")
    parser.add_argument("--run-root", default="runs", help="directory that holds runs (default runs)")
    parser.add_argument("--threads", type=int, default=None,
                        help="TensorFlow threads for training (default: TensorFlow's choice)")
    args = parser.parse_args(argv)
    global HIDDEN
    HIDDEN = args.hidden

    sac_parameter = SAC2_parameter(
        total_steps=args.steps,
        epoch_length=1000,
        batch_size=256,
        discount=0.99,
        tau=0.005,
        alpha_learning_rate=1e-3,
        buffer_size=100_000,
        mini_buffer_size=args.learning_starts,
        eval_interval=args.eval_interval,
        calculate_episodes=10,
        seed=args.seed,
    )
    model_class_dict = {"actor": Actor_net, "qf1": Q_net, "qf2": Q_net}
    starter = RLTaskStarter(
        env=PendulumWrapper(),
        model_class_dict=model_class_dict,
        algo=SAC2,
        algo_hyperparameter=sac_parameter,
        name=args.name,
        run_root=args.run_root,
        optimizer_threads=args.threads,
    )
    result = starter.run()
    if result:  # under MPI only the optimizer rank (rank 0) evaluates
        print(f"final evaluation return: {result['eval/return_mean']:.1f}")
    return result


if __name__ == "__main__":
    main()
