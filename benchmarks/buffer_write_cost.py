"""Cost of writing one Pendulum-v1 transition into the shared-memory replay buffer.

    .venv/bin/python benchmarks/buffer_write_cost.py [--writes 200000]

The buffer lives in an MPI-3 shared window (on COMM_SELF here: the same memory path a worker
uses) with Pendulum's columns: obs (3,), next_obs (3,), action (1,), reward, terminated, truncated.
Prints the median over three runs of microseconds per transition for the worker's path (write_batch
of one row). Target <= 5.
"""
import argparse
import time

import numpy as np

from aquaml import DataInfo
from aquaml.algos.sac import transition_info
from aquaml.buffers import ReplayBuffer
from aquaml.parallel.mpi import mpi
from aquaml.parallel.shared import SharedArrayStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=200_000)
    args = parser.parse_args()
    info = transition_info(DataInfo("obs", (3,)), DataInfo("action", (1,)))
    store = SharedArrayStore(mpi().COMM_SELF)
    buffer = ReplayBuffer(info, 100_000, 1, store)
    rng = np.random.default_rng(0)
    rows = [{n: rng.normal(size=(1,) + info.shape(n)).astype(info.dtype(n)) for n in info.names} for _ in range(64)]
    results = []
    for _ in range(3):
        start = time.perf_counter()
        for i in range(args.writes):
            buffer.write_batch(0, rows[i & 63])
        results.append((time.perf_counter() - start) / args.writes * 1e6)
    store.close()
    median = sorted(results)[1]
    print(f"buffer_write_cost pendulum_transition shared_window us_per_transition={median:.2f} "
          f"(runs: {', '.join(f'{r:.2f}' for r in results)}) target<=5 {'met' if median <= 5 else 'NOT met'}")


if __name__ == "__main__":
    main()
