"""tutorial3 (PPO): median final deterministic evaluation return over seeds, and each run's wall-clock.

    .venv/bin/python benchmarks/ppo_return.py --task cartpole [--seeds 0 1 2 3 4] [--jobs 2]
    .venv/bin/python benchmarks/ppo_return.py --task pendulum --seeds 0 1 2
    .venv/bin/python benchmarks/ppo_return.py --task cartpole --ranks 5 --jobs 1

Each seed runs ``tutorials/tutorial3.py`` as its own process (``--ranks K`` launches it with
``mpiexec -n K``: one optimizer rank, K-1 worker ranks) in a temporary directory, with the task's
default step budget (CartPole-v1 100,000, Pendulum-v1 200,000) unless ``--steps`` is given. The
final evaluation is 10 deterministic episodes. Targets: CartPole median >= 475 (and under
``mpirun -n 5`` within 5% of the one-process figure); Pendulum median >= -250.
"""
import argparse
import concurrent.futures
import os
import statistics
import sys

from tutorial_runs import ROOT, final_return
TARGETS = {"cartpole": 475.0, "pendulum": -250.0}


def run_seed(task: str, steps: int | None, seed: int, ranks: int) -> tuple[int, float, float]:
    cmd = [sys.executable, os.path.join(ROOT, "tutorials", "tutorial3.py"), "--task", task, "--seed", str(seed)]
    if steps:
        cmd += ["--steps", str(steps)]
    if ranks > 1:
        cmd = [os.path.join(os.path.dirname(sys.executable), "mpiexec"), "-n", str(ranks)] + cmd
    else:
        cmd += ["--threads", "1"]
    ret, wall = final_return(cmd, f"seed {seed}")
    return seed, ret, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TARGETS), default="cartpole")
    parser.add_argument("--steps", type=int, default=None, help="default: the task's budget in tutorial3")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--ranks", type=int, default=1, help="MPI ranks per run (default 1: one process)")
    parser.add_argument("--jobs", type=int, default=2, help="seeds run at once (default 2, one per core here)")
    args = parser.parse_args()
    n = len(args.seeds)
    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run_seed, [args.task] * n, [args.steps] * n, args.seeds, [args.ranks] * n))
    for seed, ret, wall in results:
        print(f"task={args.task} ranks={args.ranks} seed={seed} eval_return={ret:.1f} wall_s={wall:.1f} "
              f"(with {args.jobs} runs at once)", flush=True)
    median = statistics.median(r for _, r, _ in results)
    target = TARGETS[args.task]
    print(f"ppo_return task={args.task} ranks={args.ranks} seeds={n} median_eval_return={median:.1f} "
          f"median_wall_s={statistics.median(w for _, _, w in results):.1f} "
          f"target>={target:g} {'met' if median >= target else 'NOT met'}")


if __name__ == "__main__":
    main()
