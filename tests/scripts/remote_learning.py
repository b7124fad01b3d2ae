"""Learn through a remote environment, in one process or under mpiexec (every rank runs this).

    remote_learning.py sac URL --steps N [--run-root DIR] [--name NAME] [--resume]
    remote_learning.py ppo URL --steps N [...]

sac: tutorial 1's SAC (64-unit networks) on the environment at URL (a serve-nats Pendulum-v1);
ppo: tutorial 3's CartPole PPO (8 environments per worker) on URL (aquaml serve). Prints
``final evaluation return: X`` on the optimizer rank.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tutorials"))

import aquaml  # noqa: E402,F401  (first: it sets TensorFlow's log level)
from aquaml import PPO, PPO_parameter, RLTaskStarter, SAC2, SAC2_parameter  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("algo", choices=["sac", "ppo"])
    parser.add_argument("url")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--run-root", default="runs")
    parser.add_argument("--name", default="remote")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--checkpoint-interval", type=int, default=None)
    args = parser.parse_args()
    if args.algo == "sac":
        import tutorial1
        tutorial1.HIDDEN = 64
        params = SAC2_parameter(total_steps=args.steps, epoch_length=1000, batch_size=256, alpha_learning_rate=1e-3,
                                mini_buffer_size=500, eval_interval=0, calculate_episodes=10, seed=0)
        models = {"actor": tutorial1.Actor_net, "qf1": tutorial1.Q_net, "qf2": tutorial1.Q_net}
        algo = SAC2
    else:
        import tutorial3
        task = tutorial3.TASKS["cartpole"]
        params = PPO_parameter(total_steps=args.steps, seed=0, **{**task["parameters"], "eval_interval": 0})
        lr = task["learning_rate"]
        models = {"actor": lambda: tutorial3.Actor(task["outputs"], learning_rate=lr),
                  "critic": lambda: tutorial3.Critic(learning_rate=lr)}
        algo = PPO
    starter = RLTaskStarter(env=args.url, model_class_dict=models, algo=algo, algo_hyperparameter=params,
                            name=args.name, run_root=args.run_root, tensorboard=False, resume=args.resume,
                            checkpoint_interval=args.checkpoint_interval)
    result = starter.run()
    if result:
        print(f"final evaluation return: {result['eval/return_mean']:.1f}", flush=True)


if __name__ == "__main__":
    main()
