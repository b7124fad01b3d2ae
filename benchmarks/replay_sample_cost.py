"""Cost of sampling a full Pendulum-v1 replay buffer, against the bare draw-and-copy it is made of.

    .venv/bin/python benchmarks/replay_sample_cost.py [--calls 500] [--rounds 15]

The buffer holds 100,000 Pendulum transitions (obs (3,), next_obs (3,), action (1,), reward,
terminated, truncated), written past its capacity so that its ring has wrapped. ``local`` is the
one-process store; ``shared`` an MPI-3 shared window on COMM_SELF, whose store declares concurrent
writers, so every batch is checked against the counters read again after its copy (nothing writes
here, so nothing is redrawn: this is the check's cost). The peer is the bare sample without any
check: the uniform draw over the filled rows and the copy of every column. Rounds alternate the
two; printed are the fastest round's microseconds per call of each (the least disturbed by other
work on the machine), their ratio, and the median of the per-round ratios, for SAC's batch of 256
and for the 8 x 256 rows of one ``updates_per_call=8`` call.
"""
import argparse
import time

import numpy as np

from aquaml import DataInfo
from aquaml.algos.sac import transition_info
from aquaml.buffers import ReplayBuffer
from aquaml.buffers.replay import LocalArrayStore, _uniform_over
from aquaml.parallel.mpi import mpi
from aquaml.parallel.shared import SharedArrayStore


def bare_sample(buffer: ReplayBuffer, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The peer: draw and copy, no counter re-read."""
    slices, rows = _uniform_over(np.minimum(buffer.counters, buffer.slice_capacity), batch, rng)
    return {n: a[slices, rows] for n, a in buffer.arrays.items()}


def seconds_per_call(sample, buffer: ReplayBuffer, batch: int, calls: int) -> float:
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(calls):
        sample(buffer, batch, rng)
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    info = transition_info(DataInfo("obs", (3,)), DataInfo("action", (1,)))
    rng = np.random.default_rng(0)
    rows = {n: rng.normal(size=(25_000,) + info.shape(n)).astype(info.dtype(n)) for n in info.names}
    shared = SharedArrayStore(mpi().COMM_SELF)
    for label, store in (("local", LocalArrayStore()), ("shared", shared)):
        buffer = ReplayBuffer(info, 100_000, 1, store)
        for _ in range(5):
            buffer.write_batch(0, rows)
        for batch in (256, 2048):
            ratios, ours, peers = [], [], []
            for _ in range(args.rounds):
                peer = seconds_per_call(bare_sample, buffer, batch, args.calls)
                mine = seconds_per_call(ReplayBuffer.sample, buffer, batch, args.calls)
                ratios.append(mine / peer)
                ours.append(mine * 1e6)
                peers.append(peer * 1e6)
            print(f"replay_sample_cost pendulum {label} batch={batch} sample_us={min(ours):.1f} "
                  f"bare_us={min(peers):.1f} ratio={min(ours) / min(peers):.3f} "
                  f"median_round_ratio={np.median(ratios):.3f}", flush=True)
    shared.close()


if __name__ == "__main__":
    main()
