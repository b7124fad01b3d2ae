"""Tutorial 4: DQN on CartPole-v1, LunarLander-v3 and Atari Pong, written the way the reference tutorials are.

    python tutorials/tutorial4.py                          # CartPole-v1, 50,000 steps in one process
    mpirun -n 3 python tutorials/tutorial4.py              # one optimizer rank and two worker ranks
    python tutorials/tutorial4.py --task lunarlander       # LunarLander-v3, 300,000 steps
    python tutorials/tutorial4.py --task pong --steps 10000000

The pieces a user writes: a Q-network (an RLBaseModel whose ``action`` output holds one Q-value
per choice), DQN's parameters, and an RLTaskStarter. The environments come from gymnasium ids;
``--task pong`` goes through gymnasium's AtariPreprocessing and FrameStackObservation
(``aquaml.envs.atari`` does that for any ALE id), a convolutional Q-network, and the frame buffer that stores each frame
once (``optimize_memory_usage``). The settings are rl-baselines3-zoo's for these tasks, with
Double DQN (aquaml's default) except on CartPole: there the zoo's bursts of 128 updates against a
target copied once per burst learn more reliably with the plain DQN target (500 after 50k steps in
7 of 10 seeds, as Stable-Baselines3, against 3 of 10 with Double DQN; see docs/dqn.md).
"""
import argparse

import aquaml  # first: it sets TensorFlow's log level before TensorFlow loads
import tensorflow as tf
from aquaml import DQN, DQNParameters, RLBaseModel, RLTaskStarter


class Q_net(RLBaseModel):
    """Two ReLU hidden layers, then one Q-value per action."""

    def __init__(self, actions, hidden=256, learning_rate=1e-3):
        super().__init__()
        self.dense1 = tf.keras.layers.Dense(hidden, activation="relu")
        self.dense2 = tf.keras.layers.Dense(hidden, activation="relu")
        self.q = tf.keras.layers.Dense(actions)
        self.learning_rate = learning_rate
        self.optimizer = "Adam"
        self.input_name = ("obs",)
        self.output_info = {"action": (actions,)}

    def call(self, obs):
        return (self.q(self.dense2(self.dense1(obs))),)


class Atari_Q_net(RLBaseModel):
    """The Nature-DQN network: stacked 84x84 grey frames (4, 84, 84) uint8 -> one Q-value per action."""

    def __init__(self, actions, learning_rate=1e-4):
        super().__init__()
        self.conv1 = tf.keras.layers.Conv2D(32, 8, strides=4, activation="relu")
        self.conv2 = tf.keras.layers.Conv2D(64, 4, strides=2, activation="relu")
        self.conv3 = tf.keras.layers.Conv2D(64, 3, strides=1, activation="relu")
        self.flatten = tf.keras.layers.Flatten()
        self.dense = tf.keras.layers.Dense(512, activation="relu")
        self.q = tf.keras.layers.Dense(actions)
        self.learning_rate = learning_rate
        self.optimizer = "Adam"
        self.input_name = ("obs",)
        self.output_info = {"action": (actions,)}

    def call(self, obs):
        x = tf.transpose(tf.cast(obs, tf.float32) / 255.0, [0, 2, 3, 1])  # frames to channels, last
        return (self.q(self.dense(self.flatten(self.conv3(self.conv2(self.conv1(x)))))),)


#: Per task: the environment, the network, its learning rate, the default steps and DQN's parameters.
TASKS = {
    "cartpole": dict(env="CartPole-v1", actions=2, net=Q_net, learning_rate=2.3e-3, steps=50_000, parameters=dict(
        batch_size=64, max_mem=100_000, learning_starts=1_000, discount=0.99, update_freq=256, replay_ratio=0.5,
        target_update_interval=128, exploration_fraction=0.16, epsilon_min=0.04, eval_interval=10_000,
        calculate_episodes=10, double_q=False)),
    "lunarlander": dict(env="LunarLander-v3", actions=4, net=Q_net, learning_rate=6.3e-4, steps=300_000,
                        parameters=dict(batch_size=128, max_mem=50_000, learning_starts=0, discount=0.99,
                                        update_freq=4, replay_ratio=1.0, target_update_interval=250,
                                        exploration_fraction=0.12, epsilon_min=0.1, eval_interval=25_000,
                                        calculate_episodes=10)),
    "pong": dict(env="ALE/Pong-v5", actions=6, net=Atari_Q_net, learning_rate=1e-4, steps=10_000_000,
                 parameters=dict(batch_size=32, max_mem=100_000, optimize_memory_usage=True,
                                 learning_starts=100_000, discount=0.99, update_freq=4, replay_ratio=0.25,
                                 target_update_interval=1_000, exploration_fraction=0.1, epsilon_min=0.01,
                                 eval_interval=250_000, calculate_episodes=3)),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="cartpole", help="which task (default cartpole)")
    parser.add_argument("--steps", type=int, default=None,
                        help="environment steps (default 50000 cartpole, 300000 lunarlander, 10000000 pong)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--learning-starts", type=int, default=None,
                        help="transitions before the first update (default: the task's)")
    parser.add_argument("--eval-interval", type=int, default=None,
                        help="steps between evaluations (default: the task's)")
    parser.add_argument("--name", default=None, help="run name under runs/ (default dqn_<task>)")
    parser.add_argument("--run-root", default="runs", help="directory that holds runs (default runs)")
    parser.add_argument("--threads", type=int, default=None,
                        help="TensorFlow threads for training (default: TensorFlow's choice)")
    args = parser.parse_args(argv)
    task = TASKS[args.task]
    overrides = {k: v for k, v in (("learning_starts", args.learning_starts), ("eval_interval", args.eval_interval))
                 if v is not None}

    dqn_parameter = DQNParameters(total_steps=args.steps or task["steps"], seed=args.seed,
                                  **{**task["parameters"], **overrides})
    lr = task["learning_rate"]
    starter = RLTaskStarter(
        env=task["env"],  # a gymnasium id; Atari ids come preprocessed (aquaml.envs.atari)
        model_class_dict={"actor": lambda: task["net"](task["actions"], learning_rate=lr)},
        algo=DQN,
        algo_hyperparameter=dqn_parameter,
        name=args.name or f"dqn_{args.task}",
        run_root=args.run_root,
        optimizer_threads=args.threads,
    )
    result = starter.run()
    if result:  # under MPI only the optimizer rank (rank 0) evaluates
        print(f"final evaluation return: {result['eval/return_mean']:.1f}")
    return result


if __name__ == "__main__":
    main()
