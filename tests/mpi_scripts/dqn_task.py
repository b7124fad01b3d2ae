"""A DQN task for the tests, in one process or under mpiexec: CartPole-v1 that must learn, or an
Atari smoke run through the frame buffer.

    dqn_task.py --task cartpole|pong --run-root DIR [--steps N] [--seed S] [--prioritized] [--n-steps N]

Rank 0 prints one JSON line: the final evaluation, the update count, the TD losses per epoch,
the replay buffer's class and (for a frame buffer) its bytes per row.
"""
import argparse
import csv
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import aquaml  # noqa: E402,F401
from aquaml import DQN, DQNParameters, RLTaskStarter  # noqa: E402
from aquaml.envs.atari import make_env  # noqa: E402
from aquaml.algos.registry import default_models  # noqa: E402

SETTINGS = {
    "cartpole": dict(env="CartPole-v1", hidden=(64, 64), learning_rate=2.3e-3, parameters=dict(
        batch_size=64, buffer_size=20_000, learning_starts=500, update_interval=4, replay_ratio=0.5,
        target_update_interval=100, exploration_fraction=0.3, epsilon_min=0.04, calculate_episodes=5,
        epoch_length=1000)),
    "pong": dict(env="ALE/Pong-v5", hidden=(64,), learning_rate=1e-4, parameters=dict(
        batch_size=16, buffer_size=2_000, optimize_memory_usage=True, learning_starts=300, update_interval=4,
        replay_ratio=0.25, target_update_interval=50, exploration_fraction=0.5, epsilon_min=0.1,
        calculate_episodes=1, epoch_length=250)),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", choices=sorted(SETTINGS), default="cartpole")
    parser.add_argument("--run-root", required=True)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prioritized", action="store_true")
    parser.add_argument("--n-steps", type=int, default=1)
    args = parser.parse_args()
    task = SETTINGS[args.task]
    probe = make_env(task["env"])
    models = default_models("dqn", probe.obs_info, probe.action_info, task["hidden"], task["learning_rate"])
    params = DQNParameters(total_steps=args.steps, seed=args.seed, eval_interval=0, prioritized=args.prioritized,
                           n_steps=args.n_steps, **task["parameters"])
    starter = RLTaskStarter(env=task["env"], model_class_dict=models, algo=DQN, algo_hyperparameter=params,
                            run_root=args.run_root, name=args.task, verbose=False, tensorboard=False,
                            checkpoint_interval=0)
    final = starter.run()
    if not final:
        return
    with open(os.path.join(starter.run_dir, "progress.csv")) as f:
        rows = list(csv.DictReader(f))
    buffer = starter.algo.buffer
    print(json.dumps({"eval_return": final["eval/return_mean"], "updates": int(rows[-1]["charts/updates"]),
                      "td_loss": [float(r["losses/td_loss"]) for r in rows if r["losses/td_loss"]],
                      "buffer": type(buffer).__name__,
                      "bytes_per_row": buffer.bytes_per_row() if hasattr(buffer, "bytes_per_row") else None}),
          flush=True)


if __name__ == "__main__":
    main()
