"""Who does what: rank 0 of the task communicator optimizes, every other rank steps environments.

Ranks that share memory form a node. ``AQUAML_PSEUDO_NODE_SIZE=k`` groups the task's ranks into
pseudo-nodes of k consecutive ranks instead, so that the between-node path (transitions and
weights sent as MPI messages) can be exercised on one machine.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from aquaml.parallel.mpi import mpi, unlink_mpich_shm

PSEUDO_NODE_VAR = "AQUAML_PSEUDO_NODE_SIZE"


@dataclasses.dataclass(frozen=True)
class Topology:
    """The ranks of one task and how they are placed.

    Attributes:
        comm: the task communicator (rank 0 is the optimizer).
        node_comm: the ranks sharing memory with this one (a pseudo-node under the test setting).
        node_of: the node number of every task rank (node 0 holds the optimizer).
    """
    comm: Any
    node_comm: Any
    node_of: tuple[int, ...]

    @property
    def rank(self) -> int:
        return self.comm.Get_rank()

    @property
    def size(self) -> int:
        return self.comm.Get_size()

    @property
    def is_optimizer(self) -> bool:
        return self.rank == 0

    @property
    def role(self) -> str:
        return "optimizer" if self.is_optimizer else "worker"

    @property
    def num_workers(self) -> int:
        return self.size - 1

    @property
    def worker_index(self) -> int:
        """This worker's slice number (0-based); -1 on the optimizer."""
        return self.rank - 1

    @property
    def node(self) -> int:
        return self.node_of[self.rank]

    @property
    def on_optimizer_node(self) -> bool:
        return self.node == self.node_of[0]

    @property
    def node_leader(self) -> int:
        return min(r for r, n in enumerate(self.node_of) if n == self.node)

    @property
    def is_node_leader(self) -> bool:
        return self.rank == self.node_leader

    @property
    def remote_leaders(self) -> list[int]:
        """Lowest task rank of every node other than the optimizer's."""
        nodes = sorted(set(self.node_of) - {self.node_of[0]})
        return [min(r for r, n in enumerate(self.node_of) if n == node) for node in nodes]

    def remote_workers(self) -> list[int]:
        """Task ranks of workers on nodes other than the optimizer's."""
        return [r for r, n in enumerate(self.node_of) if n != self.node_of[0]]

    def free(self) -> None:
        """Free the node communicator ``make_topology`` made (collective over the node), once the
        task is over: a process that runs many tasks (tuning trials) would otherwise use up MPI's
        communicators."""
        self.node_comm.Free()


def make_topology(comm: Any) -> Topology:
    """Split ``comm`` into nodes (real, or pseudo-nodes of ``AQUAML_PSEUDO_NODE_SIZE`` ranks).

    Raises:
        ValueError: the pseudo-node setting is not a positive integer.
    """
    MPI = mpi()
    pseudo = os.environ.get(PSEUDO_NODE_VAR, "")
    if pseudo and (not pseudo.isdigit() or int(pseudo) < 1):
        raise ValueError(f"{PSEUDO_NODE_VAR} must be a positive integer, got {pseudo!r}")
    real_node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    unlink_mpich_shm(real_node)
    if pseudo:
        real_node.Free()
        node_comm = comm.Split(color=comm.Get_rank() // int(pseudo), key=comm.Get_rank())
    else:
        node_comm = real_node
    # number nodes by their lowest task rank, so that node 0 holds the optimizer
    leader = node_comm.allreduce(comm.Get_rank(), op=MPI.MIN)
    leaders = comm.allgather(leader)
    order = sorted(set(leaders))
    return Topology(comm=comm, node_comm=node_comm, node_of=tuple(order.index(x) for x in leaders))
