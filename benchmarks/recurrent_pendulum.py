"""tutorial2 (POMDP Pendulum, velocity hidden from the actor): median final evaluation return over seeds.

    .venv/bin/python benchmarks/recurrent_pendulum.py --algo sac              # LSTM and MLP actors, 50k steps
    .venv/bin/python benchmarks/recurrent_pendulum.py --algo ppo --actors lstm  # recurrent PPO, 500k steps

Each (actor, seed) runs ``tutorials/tutorial2.py`` as its own process with one TensorFlow thread,
in a temporary directory, with the algorithm's default budget unless ``--steps`` is given; the
final evaluation is 10 deterministic episodes. Targets: recurrent SAC median >= -300 at 50,000
steps and clearly above the MLP actor on the same view; recurrent PPO median >= -400 at 500,000.
"""
import argparse
import concurrent.futures
import os
import statistics
import sys

from tutorial_runs import ROOT, final_return

TARGETS = {"sac": -300.0, "ppo": -400.0}


def run(algo: str, actor: str, seed: int, steps: int | None) -> tuple[str, int, float, float]:
    cmd = [sys.executable, os.path.join(ROOT, "tutorials", "tutorial2.py"), "--algo", algo, "--actor", actor,
           "--seed", str(seed), "--threads", "1"]
    if steps:
        cmd += ["--steps", str(steps)]
    ret, wall = final_return(cmd, f"{algo} {actor} seed {seed}")
    print(f"algo={algo} actor={actor} seed={seed} eval_return={ret:.1f} wall_s={wall:.1f}", flush=True)
    return actor, seed, ret, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=sorted(TARGETS), default="sac")
    parser.add_argument("--actors", nargs="+", choices=("lstm", "mlp"), default=["lstm", "mlp"])
    parser.add_argument("--steps", type=int, default=None, help="default: tutorial2's (sac 50000, ppo 500000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (default 2, one per core here)")
    args = parser.parse_args()
    jobs = [(args.algo, a, s, args.steps) for a in args.actors for s in args.seeds]
    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run, *zip(*jobs)))
    medians = {}
    for actor in args.actors:
        rows = [(s, r, w) for a, s, r, w in results if a == actor]
        medians[actor] = statistics.median(r for _, r, _ in rows)
        print(f"recurrent_pendulum algo={args.algo} actor={actor} seeds={len(rows)} "
              f"returns={[round(r, 1) for _, r, _ in rows]} median_eval_return={medians[actor]:.1f} "
              f"median_wall_s={statistics.median(w for _, _, w in rows):.1f} ({args.jobs} runs at once)")
    if "lstm" in medians:
        target = TARGETS[args.algo]
        verdict = "met" if medians["lstm"] >= target else "NOT met"
        above = f", MLP actor {medians['mlp']:.1f}" if "mlp" in medians else ""
        print(f"recurrent_pendulum algo={args.algo} lstm median {medians['lstm']:.1f} target>={target:g} "
              f"{verdict}{above}")


if __name__ == "__main__":
    main()
