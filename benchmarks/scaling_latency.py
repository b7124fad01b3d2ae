"""Sampling throughput with a latency-bound environment (2 ms per step) and 1, 2, 4, 8 worker ranks.

    .venv/bin/python benchmarks/scaling_latency.py [--workers 1 2 4 8] [--steps-per-worker 1500]
                                                   [--random-actions | --tf-act]

Each configuration is one ``mpiexec -n workers+1`` run of an RLTaskStarter whose optimizer collects
but never trains (learning_starts above the budget). Workers act with the actor (no random warm-up)
on Pendulum-v1 whose every step also sleeps 2 ms, like a remote simulator. Throughput is taken
between the first and last progress.csv rows, so start-up is excluded. Target at 8 workers:
>= 0.9 x 8 the one-worker figure. Workers act in numpy (aquaml.acting.inference), as by default;
``--tf-act`` makes them act through TensorFlow (``AQUAML_ACT_BACKEND=tensorflow``) for comparison.
"""
import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.abspath(__file__)
LATENCY = 0.002


def task(steps: int, run_root: str, random_actions: bool) -> None:
    from aquaml import GymnasiumEnv, RLTaskStarter, SACParameters
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "..", "tutorials"))
    from tutorial1 import Actor_net, Q_net

    class RemoteSimulator(GymnasiumEnv):
        def step(self, action_dict):
            time.sleep(LATENCY)
            return super().step(action_dict)

    params = SACParameters(total_steps=steps, epoch_length=max(steps // 10, 1), learning_starts=steps + 1,
                           random_steps=steps if random_actions else 0, eval_interval=0, calculate_episodes=1)
    RLTaskStarter(env=lambda: RemoteSimulator("Pendulum-v1"),
                  model_class_dict={"actor": Actor_net, "qf1": Q_net, "qf2": Q_net}, algo_hyperparameter=params,
                  run_root=run_root, name="scaling", verbose=False, tensorboard=False).run()


def measure(workers: int, steps_per_worker: int, random_actions: bool, tf_act: bool) -> float:
    with tempfile.TemporaryDirectory() as root:
        cmd = [os.path.join(os.path.dirname(sys.executable), "mpiexec"), "-n", str(workers + 1), sys.executable, HERE,
               "--task", str(workers * steps_per_worker), "--run-root", root] + ["--random-actions"] * random_actions
        env = {**os.environ, "AQUAML_ACT_BACKEND": "tensorflow" if tf_act else "numpy"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        with open(os.path.join(root, "scaling", "progress.csv")) as f:
            rows = list(csv.DictReader(f))
    first, last = rows[0], rows[-2]  # the last row also holds the final evaluation
    return (int(last["global_step"]) - int(first["global_step"])) / (
        float(last["time/elapsed_s"]) - float(first["time/elapsed_s"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--steps-per-worker", type=int, default=1500)
    parser.add_argument("--random-actions", action="store_true", help="act uniformly at random (no actor calls)")
    parser.add_argument("--tf-act", action="store_true", help="act through TensorFlow, not numpy")
    parser.add_argument("--task", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--run-root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.task:
        return task(args.task, args.run_root, args.random_actions)
    base = None
    for w in args.workers:
        rate = measure(w, args.steps_per_worker, args.random_actions, args.tf_act)
        base = base or rate / w
        print(f"scaling_latency workers={w} steps_per_s={rate:.0f} speedup={rate / base:.2f} "
              f"(ideal {w}) actions={'random' if args.random_actions else 'actor'}"
              f"{'' if args.random_actions else ' act=' + ('tensorflow' if args.tf_act else 'numpy')}", flush=True)
    if 8 in args.workers:
        print(f"target at 8 workers: >= {0.9 * 8:.1f}x one worker")


if __name__ == "__main__":
    main()
