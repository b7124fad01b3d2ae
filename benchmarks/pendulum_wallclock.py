"""Wall-clock of 10,000 Pendulum-v1 steps in one process with the tutorial1 configuration, one thread.

    .venv/bin/python benchmarks/pendulum_wallclock.py [--steps 10000] [--seed 0] [--sb3-seconds S]

Times ``RLTaskStarter.run()`` whole: acting, training, logging and the periodic evaluations (which
Stable-Baselines3's figure leaves out). With ``--sb3-seconds`` (the wall_s printed by
../shared/peers/sb3_sac_pendulum.sh in the same session) it prints the ratio; target <= 0.65.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tutorials"))

from aquaml.parallel.devices import limit_tf_threads  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--learning-starts", type=int, default=1000,
                        help="steps before the first update; 100 makes as many updates as Stable-Baselines3 (9,900)")
    parser.add_argument("--sb3-seconds", type=float, default=None,
                        help="Stable-Baselines3's wall-clock for the same steps, measured in this session")
    args = parser.parse_args()
    limit_tf_threads(1, 1)
    import tutorial1
    with tempfile.TemporaryDirectory() as cwd:
        os.chdir(cwd)
        start = time.perf_counter()
        result = tutorial1.main(["--steps", str(args.steps), "--seed", str(args.seed), "--threads", "1",
                                 "--learning-starts", str(args.learning_starts)])
        wall = time.perf_counter() - start
    line = (f"pendulum_wallclock steps={args.steps} seed={args.seed} learning_starts={args.learning_starts} "
            f"updates={int(args.steps - args.learning_starts)} wall_s={wall:.1f} "
            f"steps_per_s={args.steps / wall:.1f} eval_return={result['eval/return_mean']:.1f}")
    if args.sb3_seconds:
        ratio = wall / args.sb3_seconds
        line += f" sb3_wall_s={args.sb3_seconds:.1f} ratio={ratio:.2f} target<=0.65 {'met' if ratio <= 0.65 else 'NOT met'}"
    print(line)


if __name__ == "__main__":
    main()
