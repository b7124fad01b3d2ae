"""Tutorial 2: a recurrent (LSTM) policy on a partially observed Pendulum-v1, in the reference's style.

    python tutorials/tutorial2.py                       # recurrent SAC, 50,000 steps in one process
    python tutorials/tutorial2.py --actor mlp           # the same with a feed-forward actor (baseline)
    python tutorials/tutorial2.py --algo ppo            # recurrent PPO, 500,000 steps
    mpirun -n 3 python tutorials/tutorial2.py           # one optimizer rank and two worker ranks

The actor sees only ``pos`` = (cos, sin) of the angle: the angular velocity is hidden, so it has to
be inferred from the angles seen so far. Its LSTM state travels as two observation entries,
``hidden1`` and ``hidden2``: the actor reads them (``input_name``) and returns their next value
(``output_info``), which is how aquaml tells that the actor is recurrent. The environment starts
them at zero and hands back what the actor returned (``initial_obs``/``check_obs``); every buffer
row keeps the state the actor was given at that step, and training replays whole sequences from
it. The critics see the full state ``obs`` = (cos, sin, velocity): an asymmetric actor-critic.
"""
import argparse

import gymnasium as gym
import numpy as np

import aquaml  # first: it sets TensorFlow's log level before TensorFlow loads
import tensorflow as tf
from aquaml import PPO, DataInfo, PPO_parameter, RLBaseEnv, RLBaseModel, RLTaskStarter, SAC2, SAC2_parameter

LSTM_UNITS = 64


class Actor_net(RLBaseModel):
    """LSTM actor on the angle only: one step per call, the state passed in and returned."""

    def __init__(self, with_log_std=True, learning_rate=1e-3):
        super().__init__()
        self.lstm = tf.keras.layers.LSTMCell(LSTM_UNITS)
        self.dense1 = tf.keras.layers.Dense(64, activation="relu")
        self.dense2 = tf.keras.layers.Dense(64, activation="relu")
        self.action_layer = tf.keras.layers.Dense(1)
        self.with_log_std = with_log_std
        if with_log_std:
            self.log_std = tf.keras.layers.Dense(1)
        self.learning_rate = learning_rate
        self.input_name = ("pos", "hidden1", "hidden2")
        self.output_info = {"action": (1,), **({"log_std": (1,)} if with_log_std else {}),
                            "hidden1": (LSTM_UNITS,), "hidden2": (LSTM_UNITS,)}
        self.optimizer = "Adam"

    def call(self, pos, hidden1, hidden2):
        whole, (h, c) = self.lstm(pos, [hidden1, hidden2])
        x = self.dense2(self.dense1(tf.concat([pos, whole], axis=-1)))
        if self.with_log_std:
            return (self.action_layer(x), self.log_std(x), h, c)
        return (self.action_layer(x), h, c)

    def reset(self):
        pass


class MLPActor_net(RLBaseModel):
    """The baseline: a feed-forward actor on the same view (the angle only, no memory)."""

    def __init__(self, with_log_std=True, learning_rate=1e-3):
        super().__init__()
        self.dense1 = tf.keras.layers.Dense(256, activation="relu")
        self.dense2 = tf.keras.layers.Dense(256, activation="relu")
        self.action_layer = tf.keras.layers.Dense(1)
        self.with_log_std = with_log_std
        if with_log_std:
            self.log_std = tf.keras.layers.Dense(1)
        self.learning_rate = learning_rate
        self.input_name = ("pos",)
        self.output_info = {"action": (1,), **({"log_std": (1,)} if with_log_std else {})}
        self.optimizer = "Adam"

    def call(self, pos):
        x = self.dense2(self.dense1(pos))
        return (self.action_layer(x), self.log_std(x)) if self.with_log_std else (self.action_layer(x),)

    def reset(self):
        pass


class Q_net(RLBaseModel):
    """Q(full state, action): the critic sees the velocity the actor does not."""

    def __init__(self):
        super().__init__()
        self.dense1 = tf.keras.layers.Dense(256, activation="relu")
        self.dense2 = tf.keras.layers.Dense(256, activation="relu")
        self.q = tf.keras.layers.Dense(1)
        self.learning_rate = 1e-3
        self.input_name = ("obs", "action")
        self.optimizer = "Adam"

    def call(self, obs, action):
        return self.q(self.dense2(self.dense1(tf.concat([obs, action], axis=-1))))


class V_net(RLBaseModel):
    """V(full state), PPO's critic."""

    def __init__(self, learning_rate=1e-3):
        super().__init__()
        self.dense1 = tf.keras.layers.Dense(64, activation="tanh")
        self.dense2 = tf.keras.layers.Dense(64, activation="tanh")
        self.value = tf.keras.layers.Dense(1)
        self.learning_rate = learning_rate
        self.input_name = ("obs",)
        self.optimizer = "Adam"

    def call(self, obs):
        return self.value(self.dense2(self.dense1(obs)))


class PendulumPOMDPWrapper(RLBaseEnv):
    """Pendulum-v1 with two views: ``obs`` (cos, sin, velocity) and ``pos`` (cos, sin)."""

    def __init__(self, env_name="Pendulum-v1"):
        super().__init__()
        self.env = gym.make(env_name)
        self._obs_info = DataInfo(names=("obs", "pos"), shapes=((3,), (2,)), dtypes=np.float32)

    def _views(self, observation):
        observation = observation.astype(np.float32)
        return {"obs": observation, "pos": observation[:2]}

    def reset(self, seed=None):
        observation, _ = self.env.reset(seed=seed)
        return self.initial_obs(self._views(observation))

    def step(self, action_dict):
        action = action_dict["action"] * 2.0
        observation, reward, terminated, truncated, info = self.env.step(action)
        obs = self.check_obs(self._views(observation), action_dict)
        return obs, {"total_reward": reward}, terminated, truncated, info


def sac_parameters(args):
    return SAC2_parameter(
        total_steps=args.steps, epoch_length=1000, batch_size=256, discount=0.99, tau=0.005,
        alpha_learning_rate=1e-3, buffer_size=100_000, mini_buffer_size=1000,
        sequence_length=args.sequence_length, burn_in=args.burn_in, jit_compile=args.actor == "lstm",
        eval_interval=args.eval_interval, calculate_episodes=10, seed=args.seed)


def ppo_parameters(args):
    return PPO_parameter(
        total_steps=args.steps, envs_per_worker=8, epoch_length=256, batch_size=512,
        update_times=10, gamma=0.95, lambada=0.95, epsilon=0.2, entropy_coeff=0.0, anneal_lr=True,
        normalize_obs=True, reward_scale=0.1, sequence_length=args.sequence_length,
        eval_interval=args.eval_interval, calculate_episodes=10, seed=args.seed)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=("sac", "ppo"), default="sac", help="algorithm (default sac)")
    parser.add_argument("--actor", choices=("lstm", "mlp"), default="lstm", help="actor network (default lstm)")
    parser.add_argument("--steps", type=int, default=None,
                        help="environment steps (default 50000 for sac, 500000 for ppo)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--sequence-length", type=int, default=None,
                        help="steps per training sequence (default 32 for sac, 64 for ppo)")
    parser.add_argument("--burn-in", type=int, default=8, help="SAC: burn-in steps per sequence (default 8)")
    parser.add_argument("--eval-interval", type=int, default=None,
                        help="environment steps between evaluations (default 5000 for sac, 25000 for ppo)")
    parser.add_argument("--name", default=None, help="run name under runs/ (default pomdp_<algo>_<actor>)")
    parser.add_argument("--run-root", default="runs", help="directory that holds runs (default runs)")
    parser.add_argument("--threads", type=int, default=None,
                        help="TensorFlow threads for training (default: TensorFlow's choice)")
    args = parser.parse_args(argv)
    sac = args.algo == "sac"
    args.steps = args.steps or (50_000 if sac else 500_000)
    args.sequence_length = args.sequence_length or (32 if sac else 64)
    args.eval_interval = args.eval_interval or (5_000 if sac else 25_000)

    actor = Actor_net if args.actor == "lstm" else MLPActor_net
    if sac:
        model_class_dict = {"actor": actor, "qf1": Q_net, "qf2": Q_net}
        algo, parameters = SAC2, sac_parameters(args)
    else:  # PPO learns a state-independent log_std
        model_class_dict = {"actor": lambda: actor(with_log_std=False, learning_rate=3e-4), "critic": V_net}
        algo, parameters = PPO, ppo_parameters(args)
    starter = RLTaskStarter(
        env=PendulumPOMDPWrapper(),
        model_class_dict=model_class_dict,
        algo=algo,
        algo_hyperparameter=parameters,
        name=args.name or f"pomdp_{args.algo}_{args.actor}",
        run_root=args.run_root,
        optimizer_threads=args.threads,
    )
    result = starter.run()
    if result:  # under MPI only the optimizer rank (rank 0) evaluates
        print(f"final evaluation return: {result['eval/return_mean']:.1f}")
    return result


if __name__ == "__main__":
    main()
