"""tutorial1 under mpirun: final evaluation return and wall-clock to a return, over seeds.

    .venv/bin/python benchmarks/mpi_pendulum_return.py [--ranks 6] [--seeds 0 1 2] [--steps 10000]
                                                       [--threshold -200] [--eval-interval 1000]

Runs ``mpiexec -n RANKS python tutorials/tutorial1.py`` once per seed, one after the other, and
reads its progress.csv: the final deterministic evaluation (10 episodes) and the first evaluation
at or above ``--threshold`` with the wall-clock seconds since the run started (evaluation time
included). Targets: median final >= -200 with 6 ranks; with 3 ranks, time to -200 <= 0.5x
Stable-Baselines3's (benchmarks/sb3_time_to_return.py, run in the peer's venv).
"""
import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(ranks: int, seed: int, steps: int, eval_interval: int, threshold: float,
        extra: list[str]) -> tuple[float, float | None, int | None, float]:
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        cmd = [os.path.join(os.path.dirname(sys.executable), "mpiexec"), "-n", str(ranks), sys.executable,
               os.path.join(ROOT, "tutorials", "tutorial1.py"), "--steps", str(steps), "--seed", str(seed),
               "--eval-interval", str(eval_interval), "--run-root", root, "--name", "bench"] + extra
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        with open(os.path.join(root, "bench", "progress.csv")) as f:
            rows = [r for r in csv.DictReader(f) if r["eval/return_mean"]]
    reached = next((r for r in rows if float(r["eval/return_mean"]) >= threshold), None)
    return (float(rows[-1]["eval/return_mean"]), float(reached["time/elapsed_s"]) if reached else None,
            int(reached["global_step"]) if reached else None, wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=6)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--threshold", type=float, default=-200.0)
    parser.add_argument("--eval-interval", type=int, default=1000)
    parser.add_argument("--learning-starts", type=int, default=None, help="passed to tutorial1 (its default: 1000)")
    args = parser.parse_args()
    extra = [] if args.learning_starts is None else ["--learning-starts", str(args.learning_starts)]
    finals, times = [], []
    for seed in args.seeds:
        final, t, step, wall = run(args.ranks, seed, args.steps, args.eval_interval, args.threshold, extra)
        finals.append(final)
        times.append(t if t is not None else float("inf"))
        print(f"ranks={args.ranks} seed={seed} final_eval_return={final:.1f} "
              f"reached_{args.threshold:g}_at_step={step} after_s={t} process_wall_s={wall:.1f}", flush=True)
    print(f"mpi_pendulum_return ranks={args.ranks} steps={args.steps} {' '.join(extra)} median_final={statistics.median(finals):.1f} "
          f"median_time_to_{args.threshold:g}_s={statistics.median(times):.1f}")


if __name__ == "__main__":
    main()
