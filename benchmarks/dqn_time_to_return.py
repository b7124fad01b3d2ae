"""Wall-clock until DQN's greedy evaluation on CartPole-v1 first reaches 475, against Stable-Baselines3.

    python benchmarks/dqn_time_to_return.py [--seeds 0 1 2] [--threshold 475] [--peer PYTHON]

Both use rl-baselines3-zoo's CartPole-v1 settings (see benchmarks/dqn_returns.py and
benchmarks/sb3_dqn.py) and evaluate 10 deterministic episodes every 1,000 steps, for at most
50,000 steps, one training thread. aquaml runs in one process and as ``mpiexec -n 3`` (one
optimizer, two workers); its time is the run's seconds at the first evaluation at or above the
threshold without the evaluations (progress.csv's ``time/elapsed_s - time/eval_s``), as
Stable-Baselines3's (benchmarks/sb3_dqn.py time-to-return, its Python from
benchmarks/sb3_peer.sh) pauses its clock during evaluations. Both stop at the threshold.
Each prints its median over the seeds; the last line gives the ratios. Target: <= 0.5.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def aquaml_times(seeds, threshold: float, ranks: int) -> list[float]:
    times = []
    for seed in seeds:
        prefix = [os.path.join(os.path.dirname(sys.executable), "mpiexec"), "-n", str(ranks)] if ranks > 1 else []
        cmd = prefix + [sys.executable, os.path.join(HERE, "dqn_returns.py"), "--task", "cartpole", "--seeds",
                        str(seed), "--eval-interval", "1000", "--threshold", str(threshold), "--stop-at-threshold",
                        "--run-root", tempfile.mkdtemp(prefix="dqn-ttr-")]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": ROOT}).stdout
        line = [item for item in out.splitlines() if "reached_s=" in item][0]
        print(f"aquaml ranks={ranks} {line}", flush=True)
        times.append(float(re.search(r"reached_s=(\S+)", line).group(1)))
    return times


def sb3_times(python: str, seeds, threshold: float) -> list[float]:
    out = subprocess.run([python, os.path.join(HERE, "sb3_dqn.py"), "time-to-return", "--seeds",
                          *map(str, seeds), "--threshold", str(threshold)], capture_output=True, text=True,
                         check=True).stdout
    times = []
    for line in out.splitlines():
        print(line, flush=True)
        match = re.search(r"reached=\((\d+), ([\d.]+)", line)
        if "seed=" in line:
            times.append(float(match.group(2)) if match else float("inf"))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threshold", type=float, default=475.0)
    parser.add_argument("--peer", default=os.environ.get("SB3_PYTHON", "/tmp/sb3-peer-venv/bin/python"))
    args = parser.parse_args()
    one = statistics.median(aquaml_times(args.seeds, args.threshold, 1))
    three = statistics.median(aquaml_times(args.seeds, args.threshold, 3))
    peer = statistics.median(sb3_times(args.peer, args.seeds, args.threshold))
    print(f"dqn_time_to_return threshold={args.threshold:g} aquaml_one_process_s={one:.1f} "
          f"aquaml_mpirun3_s={three:.1f} sb3_s={peer:.1f} ratio_one_process={one / peer:.2f} "
          f"ratio_mpirun3={three / peer:.2f} target<=0.5")


if __name__ == "__main__":
    main()
