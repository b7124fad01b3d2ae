"""Worker sampling throughput against the raw gymnasium loop, Pendulum-v1, in the same run.

    .venv/bin/python benchmarks/worker_throughput.py [--steps 20000] [--envs 1 8 32 64]

The raw loop steps ``gym.make('Pendulum-v1')`` with ``action_space.sample()``. The aquaml worker
acts with tutorial1's 256x256 actor as a worker rank does (``algo.host_policy``: the traced act
graph run in numpy, one batched call per step for all its environments), validates, and writes
every transition into a replay buffer in an MPI shared window. Prints the ratio of the two
throughputs per ``envs_per_worker``; target >= 0.5. ``--tf-act`` acts through TensorFlow instead
(``AQUAML_ACT_BACKEND=tensorflow``), for comparison.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tutorials"))

from aquaml.parallel.devices import limit_tf_threads  # noqa: E402


def raw_gymnasium(steps: int) -> float:
    import gymnasium as gym
    env = gym.make("Pendulum-v1")
    env.reset(seed=0)
    env.action_space.seed(0)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def aquaml_worker(steps: int, n_envs: int, tf_act: bool) -> tuple[float, str]:
    from tutorial1 import Actor_net, PendulumWrapper, Q_net

    from aquaml import SACParameters
    from aquaml.algos.sac import SAC
    from aquaml.buffers import ReplayBuffer
    from aquaml.model import build_models
    from aquaml.parallel.mpi import mpi
    from aquaml.parallel.shared import SharedArrayStore
    from aquaml.worker import Worker

    envs = [PendulumWrapper() for _ in range(n_envs)]
    models, action_info = build_models({"actor": Actor_net, "qf1": Q_net, "qf2": Q_net}, SAC.required_models,
                                       envs[0].obs_info, None)
    sac = SAC(models, envs[0].obs_info, action_info, SACParameters())
    store = SharedArrayStore(mpi().COMM_SELF)
    buffer = ReplayBuffer(sac.batch_info, steps + n_envs, 1, store)
    policy = sac.host_policy(0, numpy=not tf_act)
    worker = Worker(envs, envs[0].obs_info, action_info, policy, buffer)
    for _ in range(20):
        worker.step()
    start, done = time.perf_counter(), worker.steps
    while worker.steps - done < steps:
        worker.step()
    rate = (worker.steps - done) / (time.perf_counter() - start)
    store.close()
    return rate, policy.backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--tf-act", action="store_true", help="act through TensorFlow, not numpy")
    args = parser.parse_args()
    limit_tf_threads(1, 1)
    raw = raw_gymnasium(args.steps)
    print(f"raw gymnasium Pendulum-v1 random actions: {raw:.0f} steps/s")
    for n in args.envs:
        rate, backend = aquaml_worker(args.steps, n, args.tf_act)
        print(f"worker_throughput act={backend} envs_per_worker={n} steps_per_s={rate:.0f} ratio_to_raw={rate / raw:.2f} "
              f"target>=0.5 {'met' if rate / raw >= 0.5 else 'NOT met'}", flush=True)


if __name__ == "__main__":
    main()
