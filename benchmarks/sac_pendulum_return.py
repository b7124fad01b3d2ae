"""Pendulum-v1 with the tutorial1 configuration: median deterministic evaluation return over seeds.

    .venv/bin/python benchmarks/sac_pendulum_return.py [--steps 10000] [--seeds 0 1 2 3 4] [--jobs 2]

Each seed runs tutorials/tutorial1.py as its own process (one TensorFlow thread) in a temporary
directory; the final evaluation is 10 deterministic episodes. Target: median >= -200 at 10,000 steps.
"""
import argparse
import concurrent.futures
import os
import statistics
import sys

from tutorial_runs import ROOT, final_return


def run_seed(steps: int, seed: int) -> tuple[int, float, float]:
    ret, wall = final_return([sys.executable, os.path.join(ROOT, "tutorials", "tutorial1.py"), "--steps", str(steps),
                              "--seed", str(seed), "--threads", "1", "--name", f"seed{seed}"], f"seed {seed}")
    return seed, ret, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--jobs", type=int, default=2, help="seeds run at once (default 2, one per core here)")
    args = parser.parse_args()
    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run_seed, [args.steps] * len(args.seeds), args.seeds))
    for seed, ret, wall in results:
        print(f"seed={seed} steps={args.steps} eval_return={ret:.1f} wall_s={wall:.1f} (with {args.jobs} jobs at once)")
    median = statistics.median(r for _, r, _ in results)
    print(f"sac_pendulum_return steps={args.steps} seeds={len(results)} median_eval_return={median:.1f} "
          f"target>=-200 {'met' if median >= -200 else 'NOT met'}")


if __name__ == "__main__":
    main()
