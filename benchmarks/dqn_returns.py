"""DQN learning figures: greedy evaluation return after a step budget, over seeds, with
rl-baselines3-zoo's DQN settings for each task.

    python benchmarks/dqn_returns.py --task cartpole --seeds 0 1 2 3 4          # 50k steps
    python benchmarks/dqn_returns.py --task acrobot --seeds 0 1 2                # 100k steps
    python benchmarks/dqn_returns.py --task lunarlander --seeds 0 1 2 --steps 300000
    mpiexec -n 3 python benchmarks/dqn_returns.py --task cartpole --seeds 0     # one optimizer, two workers

The settings are rl-baselines3-zoo's ``hyperparams/dqn.yml`` (CartPole-v1, Acrobot-v1 and
LunarLander-v2 entries), translated to aquaml's parameters: the zoo's ``train_freq`` is
``update_interval`` and ``gradient_steps / train_freq`` is ``replay_ratio`` (``-1`` = as many
updates as steps); its ``target_update_interval`` counts environment steps, and since the zoo's
target is copied between training bursts, it becomes the gradient updates of one burst (CartPole:
128) or the same count (Acrobot, LunarLander: one update per step). Exploration starts at
epsilon 1.0 and falls linearly to the final epsilon over ``exploration_fraction`` of the run,
Huber loss, gradient norm clipped at 10, as Stable-Baselines3's DQN. Acrobot and LunarLander
add Double DQN (aquaml's default); CartPole keeps the zoo's plain DQN target. With its bursts of
128 updates against a target copied once per burst, Double DQN ended 3 of 10 seeds (0-9) at 500
after 50k steps, plain DQN 7 of 10, Stable-Baselines3 (plain DQN) 7 of 10
(2026-12-01, commit a41cd0e).

Each seed prints one line with the final evaluation (``--eval-episodes`` greedy episodes),
training seconds and gradient updates per second; the last line gives the median return.
"""
import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import aquaml  # noqa: E402,F401  (first: TensorFlow's log level)

#: Per task: gymnasium id, default steps, hidden widths, learning rate, and DQNParameters fields.
TASKS = {
    "cartpole": dict(env="CartPole-v1", steps=50_000, hidden=(256, 256), learning_rate=2.3e-3, parameters=dict(
        batch_size=64, buffer_size=100_000, learning_starts=1_000, gamma=0.99, update_interval=256,
        replay_ratio=0.5, target_update_interval=128, exploration_fraction=0.16, epsilon_min=0.04,
        double_q=False)),
    "acrobot": dict(env="Acrobot-v1", steps=100_000, hidden=(256, 256), learning_rate=6.3e-4, parameters=dict(
        batch_size=128, buffer_size=50_000, learning_starts=0, gamma=0.99, update_interval=4, replay_ratio=1.0,
        target_update_interval=250, exploration_fraction=0.12, epsilon_min=0.1)),
    "lunarlander": dict(env="LunarLander-v3", steps=100_000, hidden=(256, 256), learning_rate=6.3e-4,
                        parameters=dict(batch_size=128, buffer_size=50_000, learning_starts=0, gamma=0.99,
                                        update_interval=4, replay_ratio=1.0, target_update_interval=250,
                                        exploration_fraction=0.12, epsilon_min=0.1)),
}


def run_seed(task: dict, steps: int, seed: int, eval_episodes: int, run_root: str, extra: dict,
             threads: int | None, eval_interval: int, stop_at: float | None = None) -> dict | None:
    from aquaml import DQN, DQNParameters, GymnasiumEnv, RLTaskStarter
    from aquaml.algos.registry import default_models
    probe = GymnasiumEnv(task["env"])
    models = default_models("dqn", probe.obs_info, probe.action_info, task["hidden"], task["learning_rate"])
    params = DQNParameters(total_steps=steps, seed=seed, eval_interval=eval_interval, calculate_episodes=eval_episodes,
                           epoch_length=5_000, **{**task["parameters"], **extra})
    starter = RLTaskStarter(env=task["env"], model_class_dict=models, algo=DQN, algo_hyperparameter=params,
                            name=f"{task['env']}_dqn_{seed}", run_root=run_root, verbose=False, tensorboard=False,
                            checkpoint_interval=0, optimizer_threads=threads, on_evaluation=None if stop_at is None
                            else lambda step, stats: stats["eval/return_mean"] >= stop_at)
    start = time.perf_counter()
    final = starter.run()
    if not final:  # a worker rank under MPI: the optimizer rank evaluates
        return None
    return {"wall_s": time.perf_counter() - start, **final}


def first_reaching(run_dir: str, threshold: float) -> str:
    """``reached_step=S reached_s=T elapsed_s=E``: the first evaluation at or above ``threshold``
    in the run's progress.csv; ``T`` is the run's seconds there without its evaluations so far
    (``time/elapsed_s - time/eval_s``: acting and training, as Stable-Baselines3's clock in
    benchmarks/sb3_dqn.py, which pauses for evaluations), ``E`` the seconds with them."""
    with open(os.path.join(run_dir, "progress.csv"), newline="") as f:
        for row in csv.DictReader(f):
            if row.get("eval/return_mean") and float(row["eval/return_mean"]) >= threshold:
                elapsed = float(row["time/elapsed_s"])
                return (f"reached_step={row['global_step']} reached_s={elapsed - float(row['time/eval_s']):.1f} "
                        f"elapsed_s={elapsed:.1f}")
    return "reached_step=never reached_s=inf elapsed_s=inf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="cartpole")
    parser.add_argument("--steps", type=int, default=None, help="environment steps (default: the task's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="override a DQNParameters field")
    parser.add_argument("--run-root", default=None, help="where runs go (default: a temporary directory)")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads of training (default 1)")
    parser.add_argument("--eval-interval", type=int, default=0,
                        help="steps between evaluations, 0 = only at the end (default 0)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="also print the training seconds at the first evaluation at or above this return")
    parser.add_argument("--stop-at-threshold", action="store_true",
                        help="end each run at that evaluation (its final return is then the return there)")
    args = parser.parse_args()
    task = TASKS[args.task]
    steps = args.steps or task["steps"]
    extra = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    run_root = args.run_root or tempfile.mkdtemp(prefix="dqn-returns-")
    returns = []
    for seed in args.seeds:
        result = run_seed(task, steps, seed, args.eval_episodes, run_root, extra, args.threads, args.eval_interval,
                          args.threshold if args.stop_at_threshold else None)
        if not result:  # a worker rank under MPI
            continue
        returns.append(result["eval/return_mean"])
        line = (f"aquaml dqn {task['env']} steps={steps} seed={seed} wall_s={result['wall_s']:.1f} "
                f"eval_return={result['eval/return_mean']:.1f}")
        if args.threshold is not None:
            line += " " + first_reaching(os.path.join(run_root, f"{task['env']}_dqn_{seed}"), args.threshold)
        print(line, flush=True)
    if returns:
        print(f"aquaml dqn {task['env']} steps={steps} seeds={len(returns)} "
              f"median_eval_return={statistics.median(returns):.1f}")


if __name__ == "__main__":
    main()
