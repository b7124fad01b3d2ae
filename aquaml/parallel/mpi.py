"""Small MPI helpers: launch detection, waiting without spinning, and /dev/shm hygiene.

MPICH's blocking calls (Recv, Wait, Barrier) spin on the CPU. With more ranks than cores, a spinning
rank steals the core from the rank it waits for, so every wait here polls a non-blocking request
and sleeps between polls.
"""
from __future__ import annotations

import os
import time
from typing import Any

#: Seconds slept between polls while waiting: short enough for sub-millisecond hand-offs to cost
#: little, long enough that a waiting rank uses well under 1% of a core.
POLL_SECONDS = 0.0005
#: The longest sleep of a ``Backoff`` (waits for a whole training round or rollout segment).
MAX_POLL_SECONDS = 0.005


def launched_ranks() -> int:
    """How many ranks the MPI launcher started, read from its environment (1 for a plain process)."""
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 1


def launched_rank() -> int:
    """This process's rank as the MPI launcher numbered it, from its environment (0 for a plain
    process): known before MPI starts, so that an error every rank finds alike is printed once."""
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"):
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 0


def mpi() -> Any:
    """The mpi4py MPI module (imported on first use: a plain process never initialises MPI)."""
    from mpi4py import MPI
    return MPI


class Backoff:
    """Sleeps for a wait that may be long: from ``POLL_SECONDS``, doubling up to ``MAX_POLL_SECONDS``.

    Each wake-up costs some CPU, so a rank that waits seconds for a training round should wake less
    often than one waiting a millisecond for the next transition; ``reset()`` once the wait is over.
    """

    def __init__(self) -> None:
        self.delay = POLL_SECONDS

    def sleep(self) -> None:
        time.sleep(self.delay)
        self.delay = min(2 * self.delay, MAX_POLL_SECONDS)

    def reset(self) -> None:
        self.delay = POLL_SECONDS


def sleepy_wait(request: Any) -> None:
    """Complete a non-blocking MPI request without spinning."""
    while not request.Test():
        time.sleep(POLL_SECONDS)


def sleepy_barrier(comm: Any) -> None:
    """A barrier that sleeps while it waits (``Ibarrier`` polled)."""
    sleepy_wait(comm.Ibarrier())


def unlink_mpich_shm(node_comm: Any) -> None:
    """Remove MPICH's intranode segment names from /dev/shm once every local rank has mapped them.

    MPICH creates ``/dev/shm/mpich_shm_*`` at start-up and unlinks it only in MPI_Finalize, so a
    crashed or aborted job would leave it behind. The mappings stay valid after the name is gone.
    """
    sleepy_barrier(node_comm)
    if node_comm.Get_rank() == 0:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            names = {line.split()[-1] for line in maps
                     if "/dev/shm/mpich_shm_" in line and not line.rstrip().endswith("(deleted)")}
        for name in names:
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass
    sleepy_barrier(node_comm)
