"""A small seeded run that can be killed and resumed: SAC or PPO on Pendulum-v1, or DQN (prioritized,
3-step, epsilon-greedy) on CartPole-v1, with small models.

    resumable.py --algo sac|ppo|dqn --run-root DIR --name NAME [--steps N] [--interval N] [--resume]
                 [--step-sleep S]

Prints ``checkpoint <step>`` lines as checkpoints appear (so a test knows when to kill it) and
``done`` at the end. --step-sleep slows each environment step so a test can kill it mid-run.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from helpers import MLPActor, MLPQ, MLPV  # noqa: E402

from aquaml import (DQN, PPO, DQNParameters, GymnasiumEnv, PPOParameters, RLTaskStarter, SAC,  # noqa: E402
                    SACParameters)
from aquaml.algos.registry import default_models  # noqa: E402


class SlowPendulum(GymnasiumEnv):
    def __init__(self, sleep, env_id="Pendulum-v1"):
        super().__init__(env_id)
        self.sleep = sleep

    def step(self, action_dict):
        if self.sleep:
            time.sleep(self.sleep)
        return super().step(action_dict)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--algo", choices=["sac", "ppo", "dqn"], default="sac")
    parser.add_argument("--run-root", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--interval", type=int, default=200)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--step-sleep", type=float, default=0.0)
    parser.add_argument("--no-buffer", action="store_true")
    args = parser.parse_args()
    if args.algo == "sac":
        algo, models = SAC, {"actor": MLPActor, "qf1": MLPQ, "qf2": MLPQ}
        params = SACParameters(total_steps=args.steps, epoch_length=100, learning_starts=200, batch_size=32,
                               eval_interval=300, calculate_episodes=1, seed=3)
    elif args.algo == "ppo":
        algo, models = PPO, {"actor": MLPActor, "critic": MLPV}
        params = PPOParameters(total_steps=args.steps, rollout_steps=100, update_epochs=2, batch_size=50,
                               eval_interval=300, calculate_episodes=1, normalize_obs=True, seed=3)
    env = SlowPendulum(args.step_sleep)
    if args.algo == "dqn":  # the epsilon schedule, priorities, n-step windows and Q-targets all resume
        env = SlowPendulum(args.step_sleep, "CartPole-v1")
        algo, models = DQN, default_models("dqn", env.obs_info, env.action_info, (32, 32), 1e-3)
        params = DQNParameters(total_steps=args.steps, epoch_length=100, learning_starts=200, batch_size=32,
                               eval_interval=300, calculate_episodes=1, seed=3, prioritized=True, n_steps=3,
                               update_interval=1, target_update_interval=50, epsilon_schedule="exponential",
                               epsilon_decay=2e-3)
    starter = RLTaskStarter(env=env, model_class_dict=models, algo=algo,
                            algo_hyperparameter=params, run_root=args.run_root, name=args.name, verbose=False,
                            tensorboard=False, checkpoint_interval=args.interval, resume=args.resume,
                            checkpoint_buffer=not args.no_buffer)
    starter.run()
    print("interrupted" if starter.interrupted else "done", flush=True)


if __name__ == "__main__":
    main()
