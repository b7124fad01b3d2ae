"""Figures of the tuning layer (docs/tuning.md): run them on an otherwise idle machine.

    python benchmarks/tune_layouts.py layouts  [--out DIR] [--trials 8] [--steps 4096]
    python benchmarks/tune_layouts.py pendulum [--out DIR] [--trials 12] [--steps 5000] [--seeds 3]

``layouts``: one fixed study (PPO on CartPole-v1, random sampler seeded per trial number, so every
layout draws the same trials, no pruning) run as 1 group of 4 ranks, 2 groups of 2 and 4 groups of
1 under ``mpiexec -n 4``: trials per hour from the wall time of each whole command, and the tuning
layer's time between two trials of a group (``seconds.between_tasks``: tell, claim, plan and
agreement) against the task's own start-up (``seconds.build``).

``pendulum``: SAC on Pendulum-v1, 5k steps a trial, 12 trials (TPE, median pruner) over
docs/spaces/sac_pendulum.yaml as 2 groups of 1; then the best trial's parameters and the default
parameters each train again with ``--seeds`` new seeds (the study's best value is the best of 12
noisy runs, so it is not compared directly), and the mean final evaluation returns are printed.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
MPIEXEC = os.path.join(os.path.dirname(PYTHON), "mpiexec")
LAYOUT_SPACE = {"search": {"learning_rate": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True},
                           "gamma": {"type": "float", "low": 0.95, "high": 0.999},
                           "hidden_width": {"type": "categorical", "choices": [32, 64]}},
                "fixed": {"rollout_steps": 256, "update_epochs": 4, "eval_interval": 1024, "calculate_episodes": 3}}


def environment() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def run(command: list[str], cwd: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, env=environment(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(command)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def study_trials(storage: str, name: str) -> list:
    import optuna
    from aquaml.tuning.study import open_storage
    return optuna.load_study(study_name=name, storage=open_storage(storage, 20, 60, 0)).get_trials()


def layouts(args: argparse.Namespace) -> None:
    out = os.path.abspath(os.path.join(args.out, "layouts"))
    os.makedirs(out, exist_ok=True)
    space = os.path.join(out, "space.json")
    with open(space, "w", encoding="utf-8") as f:
        json.dump(LAYOUT_SPACE, f)
    print(f"PPO CartPole-v1, {args.trials} trials x {args.steps} steps, mpiexec -n 4, {time.strftime('%F')}")
    print(f"{'layout':>12}  {'wall s':>7}  {'trials/h':>8}  {'trial s':>7}  {'start-up s':>10}  {'between s (median, max)':>24}")
    rates = {}
    for groups, size in ((1, 4), (2, 2), (4, 1)):
        name = f"layout_{groups}x{size}"
        storage = os.path.join(out, f"{name}.log")
        if os.path.exists(storage):
            raise SystemExit(f"{storage} exists: give a fresh --out")
        command = [MPIEXEC, "-n", "4", PYTHON, "-m", "aquaml.cli", "tune", "--env", "CartPole-v1", "--algo", "ppo",
                   "--space", space, "--trials", str(args.trials), "--group-size", str(size), "--storage", storage,
                   "--run-root", out, "--steps", str(args.steps), "--pruner", "none", "--sampler", "random",
                   "--no-tensorboard", "--quiet"]
        wall = run(command, out)
        trials = study_trials(storage, name)
        seconds = [t.user_attrs["seconds"] for t in trials]
        between = [s["between_tasks"] for s in seconds if "between_tasks" in s]
        rates[name] = len(trials) / wall * 3600
        print(f"{groups:>4} x {size} ranks  {wall:7.1f}  {rates[name]:8.1f}  "
              f"{statistics.mean(s['run'] for s in seconds):7.1f}  {statistics.mean(s['build'] for s in seconds):10.2f}  "
              f"{statistics.median(between):11.3f}, {max(between):.3f}", flush=True)
    base = rates["layout_1x4"]
    print("relative to 1 x 4: " + ", ".join(f"{k[7:]} {v / base:.2f}x" for k, v in rates.items()))


def final_return(run_dir: str) -> float:
    import csv
    with open(os.path.join(run_dir, "progress.csv"), newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r.get("eval/return_mean") not in (None, "", "nan")]
    return float(rows[-1]["eval/return_mean"])


def train_pair(args: argparse.Namespace, out: str, flags: list[str], name: str) -> list[float]:
    """Train ``flags`` with seeds 100, 101, ... two processes at a time; their final returns."""
    returns = []
    seeds = list(range(100, 100 + args.seeds))
    for k in range(0, len(seeds), 2):
        procs = []
        for seed in seeds[k:k + 2]:
            command = [PYTHON, "-m", "aquaml.cli", "train", *flags, "--seed", str(seed), "--run-root", out,
                       "--name", f"{name}_seed{seed}", "--no-tensorboard", "--quiet", "--threads", "1"]
            procs.append(subprocess.Popen(command, cwd=out, env=environment(), stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True))
        for proc in procs:
            if proc.wait() != 0:
                raise SystemExit(f"training failed: {proc.stderr.read()[-3000:]}")
        returns += [final_return(os.path.join(out, f"{name}_seed{seed}")) for seed in seeds[k:k + 2]]
    return returns


def pendulum(args: argparse.Namespace) -> None:
    out = os.path.abspath(os.path.join(args.out, "pendulum"))
    os.makedirs(out, exist_ok=True)
    storage = os.path.join(out, "pendulum.log")
    space = os.path.join(ROOT, "docs", "spaces", "sac_pendulum.yaml")
    command = [MPIEXEC, "-n", "2", PYTHON, "-m", "aquaml.cli", "tune", "--env", "Pendulum-v1", "--algo", "sac",
               "--space", space, "--trials", str(args.trials), "--group-size", "1", "--storage", storage,
               "--run-root", out, "--steps", str(args.steps), "--sampler-startup", "5", "--pruner-startup", "3",
               "--no-tensorboard"]
    wall = run(command, out)
    trials = study_trials(storage, "pendulum")
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    best = max(complete, key=lambda t: t.value)
    print(f"SAC Pendulum-v1, {args.trials} trials x {args.steps} steps, 2 groups of 1, {time.strftime('%F')}: "
          f"{wall:.0f} s; {len(complete)} completed, {sum(t.state.name == 'PRUNED' for t in trials)} pruned; "
          f"best trial {best.number} value {best.value:.1f} {best.params}")
    with open(os.path.join(out, "pendulum", "best.json"), encoding="utf-8") as f:
        best_args = json.load(f)["best"]["train_args"]
    best_flags = [a for i, a in enumerate(best_args) if a != "--seed" and (i == 0 or best_args[i - 1] != "--seed")]
    default_flags = ["--env", "Pendulum-v1", "--algo", "sac", "--steps", str(args.steps), "--set", "eval_interval=1000"]
    tuned = train_pair(args, out, best_flags, "best")
    default = train_pair(args, out, default_flags, "default")
    print(f"final evaluation return over seeds 100..{99 + args.seeds}: best trial's parameters "
          f"{statistics.mean(tuned):.1f} ({', '.join(f'{r:.1f}' for r in tuned)}), default parameters "
          f"{statistics.mean(default):.1f} ({', '.join(f'{r:.1f}' for r in default)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=("layouts", "pendulum"))
    parser.add_argument("--out", default="/tmp/aquaml-tune-bench", help="directory for the studies and runs")
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=3, help="pendulum: seeds of each retraining")
    args = parser.parse_args()
    if args.part == "layouts":
        args.trials, args.steps = args.trials or 8, args.steps or 4096
        layouts(args)
    else:
        args.trials, args.steps = args.trials or 12, args.steps or 5000
        pendulum(args)


if __name__ == "__main__":
    main()
