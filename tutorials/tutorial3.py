"""Tutorial 3: PPO on CartPole-v1 (discrete actions) and on Pendulum-v1 (continuous actions).

    python tutorials/tutorial3.py                         # CartPole-v1, 100,000 steps in one process
    python tutorials/tutorial3.py --task pendulum         # Pendulum-v1, 200,000 steps
    mpirun -n 5 python tutorials/tutorial3.py             # one optimizer rank and four worker ranks

PPO needs an actor and a value critic. For a discrete action the actor's ``action`` output is the
logits of a Categorical (one per choice); for a continuous one it is the mean of a Gaussian, and
without a ``log_std`` output PPO learns a state-independent log standard deviation. Environments
come straight from gymnasium ids: ``GymnasiumEnv`` rescales [-1, 1] actions to the Box bounds.
"""
import argparse

import aquaml  # first: it sets TensorFlow's log level before TensorFlow loads
import tensorflow as tf
from aquaml import GymnasiumEnv, PPO, PPO_parameter, RLBaseModel, RLTaskStarter


class Actor(RLBaseModel):
    """Two tanh hidden layers; outputs the Categorical's logits or the Gaussian's mean."""

    def __init__(self, outputs, hidden=64, learning_rate=3e-4):
        super().__init__()
        self.dense1 = tf.keras.layers.Dense(hidden, activation="tanh")
        self.dense2 = tf.keras.layers.Dense(hidden, activation="tanh")
        self.out = tf.keras.layers.Dense(outputs, kernel_initializer=tf.keras.initializers.Orthogonal(0.01))
        self.learning_rate = learning_rate
        self.optimizer = "Adam"
        self.input_name = ("obs",)
        self.output_info = {"action": (outputs,)}

    def call(self, obs):
        return (self.out(self.dense2(self.dense1(obs))),)


class Critic(RLBaseModel):
    """V(obs): two tanh hidden layers and a linear output of shape (batch, 1)."""

    def __init__(self, hidden=64, learning_rate=3e-4):
        super().__init__()
        self.dense1 = tf.keras.layers.Dense(hidden, activation="tanh")
        self.dense2 = tf.keras.layers.Dense(hidden, activation="tanh")
        self.value = tf.keras.layers.Dense(1)
        self.learning_rate = learning_rate
        self.optimizer = "Adam"
        self.input_name = ("obs",)

    def call(self, obs):
        return self.value(self.dense2(self.dense1(obs)))


#: Per task: the environment, the actor's output width, the learning rate and PPO's parameters.
TASKS = {
    "cartpole": dict(env="CartPole-v1", outputs=2, learning_rate=1e-3, steps=100_000, parameters=dict(
        envs_per_worker=8, epoch_length=32, batch_size=256, update_times=20, gamma=0.98, lambada=0.8,
        epsilon=0.2, entropy_coeff=0.0, anneal_lr=True, eval_interval=10_000, calculate_episodes=10)),
    "pendulum": dict(env="Pendulum-v1", outputs=1, learning_rate=3e-4, steps=200_000, parameters=dict(
        envs_per_worker=1, epoch_length=2048, batch_size=64, update_times=10, gamma=0.95, lambada=0.95,
        epsilon=0.2, entropy_coeff=0.0, anneal_lr=True, normalize_obs=True, reward_scale=0.1,
        eval_interval=20_000, calculate_episodes=10)),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="cartpole", help="which task (default cartpole)")
    parser.add_argument("--steps", type=int, default=None,
                        help="environment steps (default 100000 for cartpole, 200000 for pendulum)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--name", default=None, help="run name under runs/ (default ppo_<task>)")
    parser.add_argument("--run-root", default="runs", help="directory that holds runs (default runs)")
    parser.add_argument("--threads", type=int, default=None,
                        help="TensorFlow threads for training (default: TensorFlow's choice)")
    args = parser.parse_args(argv)
    task = TASKS[args.task]

    ppo_parameter = PPO_parameter(total_steps=args.steps or task["steps"], seed=args.seed, **task["parameters"])
    lr = task["learning_rate"]
    starter = RLTaskStarter(
        env=GymnasiumEnv(task["env"]),
        model_class_dict={"actor": lambda: Actor(task["outputs"], learning_rate=lr),
                          "critic": lambda: Critic(learning_rate=lr)},
        algo=PPO,
        algo_hyperparameter=ppo_parameter,
        name=args.name or f"ppo_{args.task}",
        run_root=args.run_root,
        optimizer_threads=args.threads,
    )
    result = starter.run()
    if result:  # under MPI only the optimizer rank (rank 0) evaluates
        print(f"final evaluation return: {result['eval/return_mean']:.1f}")
    return result


if __name__ == "__main__":
    main()
