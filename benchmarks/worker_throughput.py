"""Worker sampling throughput against the raw gymnasium loop, Pendulum-v1, in the same run.

    .venv/bin/python benchmarks/worker_throughput.py [--steps 20000] [--rounds 5] [--envs 1 8 32 64]
    .venv/bin/python benchmarks/worker_throughput.py --finite-check-cost [--rounds 15] [--envs 1 8]

The raw loop steps ``gym.make('Pendulum-v1')`` with ``action_space.sample()``. The aquaml worker
acts with tutorial1's 256x256 actor as a worker rank does (``algo.host_policy``: the traced act
graph run in numpy, one batched call per step for all its environments), validates, and writes
every transition into a replay buffer in an MPI shared window. ``--tf-act`` acts through
TensorFlow instead (``AQUAML_ACT_BACKEND=tensorflow``), for comparison.

The machine's speed drifts by tens of percent from one second to the next when its host is
shared, so each round times the raw loop and then every worker configuration, and the ratio is
taken within the round. Prints each configuration's median ratio over the rounds; target >= 0.5.

``--finite-check-cost`` times each worker also with its NaN/infinity check of every step's rewards
and observations (``Worker.check_step``) replaced by a no-op, in the same rounds, and prints the
check's median share of the worker's throughput (target: under 2%). That difference is a few
percent of noise wide on a shared machine, so each round also times the check alone (as many
calls on the worker's current observations as the round had steps) against the step time of the
same round without it, and prints that share too.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tutorials"))

from aquaml.parallel.devices import limit_tf_threads  # noqa: E402


class RawLoop:
    def __init__(self) -> None:
        import gymnasium as gym
        self.env = gym.make("Pendulum-v1")
        self.env.reset(seed=0)
        self.env.action_space.seed(0)

    def rate(self, steps: int) -> float:
        env = self.env
        start = time.perf_counter()
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                env.reset()
        return steps / (time.perf_counter() - start)


class AquamlWorker:
    def __init__(self, n_envs: int, tf_act: bool, capacity: int) -> None:
        from tutorial1 import Actor_net, PendulumWrapper, Q_net

        from aquaml import SACParameters
        from aquaml.algos.sac import SAC
        from aquaml.buffers import ReplayBuffer
        from aquaml.models.base import build_models
        from aquaml.parallel.mpi import mpi
        from aquaml.parallel.shared import SharedArrayStore
        from aquaml.acting.worker import Worker

        envs = [PendulumWrapper() for _ in range(n_envs)]
        models, action_info = build_models({"actor": Actor_net, "qf1": Q_net, "qf2": Q_net}, SAC.required_models,
                                           envs[0].obs_info, None)
        sac = SAC(models, envs[0].obs_info, action_info, SACParameters())
        self.store = SharedArrayStore(mpi().COMM_SELF)
        buffer = ReplayBuffer(sac.batch_info, capacity, 1, self.store)  # a ring: later rounds overwrite
        self.policy = sac.host_policy(0, numpy=not tf_act)
        self.worker = Worker(envs, envs[0].obs_info, action_info, self.policy, buffer)
        for _ in range(20):
            self.worker.step()

    def checks(self, on: bool) -> None:
        """With or without the worker's check of every step for NaN and infinities."""
        if on:
            self.worker.__dict__.pop("check_step", None)
        else:
            self.worker.check_step = lambda *args, **kwargs: None

    def check_seconds(self, calls: int) -> float:
        """Seconds per call of the worker's own check on its current observations and rewards."""
        worker, check = self.worker, type(self.worker).check_step
        obs = worker.obs
        reward = np.zeros(len(worker.envs), np.float32)
        start = time.perf_counter()
        for _ in range(calls):
            check(worker, obs, reward)
        return (time.perf_counter() - start) / calls

    def rate(self, steps: int) -> float:
        worker = self.worker
        start, done = time.perf_counter(), worker.steps
        while worker.steps - done < steps:
            worker.step()
        return (worker.steps - done) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000, help="steps per timing (default 20000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of raw-then-workers timings (default 5)")
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--tf-act", action="store_true", help="act through TensorFlow, not numpy")
    parser.add_argument("--finite-check-cost", action="store_true",
                        help="time each worker with and without its NaN/infinity check, in the same rounds")
    args = parser.parse_args()
    if args.finite_check_cost:
        return finite_check_cost(args)
    limit_tf_threads(1, 1)
    raw = RawLoop()
    workers = {n: AquamlWorker(n, args.tf_act, args.steps + n) for n in args.envs}
    raws: list[float] = []
    ratios: dict[int, list[float]] = {n: [] for n in args.envs}
    rates: dict[int, list[float]] = {n: [] for n in args.envs}
    for _ in range(args.rounds):
        raws.append(raw.rate(args.steps))
        for n, w in workers.items():
            rates[n].append(w.rate(args.steps))
            ratios[n].append(rates[n][-1] / raws[-1])
    print(f"raw gymnasium Pendulum-v1 random actions: median {statistics.median(raws):.0f} steps/s "
          f"(rounds: {', '.join(f'{r:.0f}' for r in raws)})")
    for n, w in workers.items():
        ratio = statistics.median(ratios[n])
        print(f"worker_throughput act={w.policy.backend} envs_per_worker={n} "
              f"median_steps_per_s={statistics.median(rates[n]):.0f} median_ratio_to_raw={ratio:.2f} "
              f"(rounds: {', '.join(f'{r:.2f}' for r in ratios[n])}) target>=0.5 {'met' if ratio >= 0.5 else 'NOT met'}",
              flush=True)
    for w in workers.values():
        w.store.close()


def finite_check_cost(args) -> None:
    """The NaN/infinity check's share of a worker's steps/s, alternating with and without it."""
    limit_tf_threads(1, 1)
    workers = {n: AquamlWorker(n, args.tf_act, args.steps + n) for n in args.envs}
    costs: dict[int, list[float]] = {n: [] for n in args.envs}
    direct: dict[int, list[float]] = {n: [] for n in args.envs}
    for k in range(args.rounds):
        for n, w in workers.items():
            timed = {}
            for on in ((True, False) if k % 2 else (False, True)):  # alternate which goes first
                w.checks(on)
                timed[on] = w.rate(args.steps)
            w.checks(True)
            costs[n].append(1.0 - timed[True] / timed[False])
            direct[n].append(w.check_seconds(args.steps) * timed[False])  # check time / step time
    for n in args.envs:
        cost, share = statistics.median(costs[n]), statistics.median(direct[n])
        print(f"finite_check_cost envs_per_worker={n} median_share_of_throughput={100 * cost:.2f}% "
              f"(rounds: {', '.join(f'{100 * c:.2f}' for c in costs[n])}) target<2% {'met' if cost < 0.02 else 'NOT met'}",
              flush=True)
        print(f"finite_check_cost envs_per_worker={n} direct: the check alone takes "
              f"{100 * share:.2f}% of a step's time, median of the rounds "
              f"({', '.join(f'{100 * c:.2f}' for c in direct[n])}) target<2% {'met' if share < 0.02 else 'NOT met'}",
              flush=True)
    for w in workers.values():
        w.store.close()


if __name__ == "__main__":
    main()
