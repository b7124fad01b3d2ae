"""SharedArrayStore: numpy arrays in one MPI-3 shared-memory window per node.

The node's rank 0 allocates the whole window; the other ranks of the node map the same memory
(``Win.Allocate_shared`` / ``Shared_query``), so a worker's write is the optimizer's read with no
copy. MPICH unlinks the window's backing file as soon as it is mapped, so nothing is left in
/dev/shm even when a job is killed.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from aquaml.parallel.mpi import mpi, sleepy_barrier

_ALIGN = 64  # a cache line: columns never share one, so two writers never contend on a line


class SharedArrayStore:
    """Allocates every array of a layout in one shared window on ``node_comm``.

    ``fence()`` is a full memory barrier (``Win.Sync``); writers call it between writing data and
    publishing a counter, readers between reading a counter and the data it covers.
    ``concurrent`` is True: the node's other ranks write while this one reads.
    """

    concurrent = True

    def __init__(self, node_comm: Any) -> None:
        self.node_comm = node_comm
        self._windows: list[Any] = []

    def allocate(self, layout: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> dict[str, np.ndarray]:
        """Zeroed arrays ``{name: array of shape and dtype}``, all in one new window (collective)."""
        MPI = mpi()
        offsets, total = {}, 0
        for name, (shape, dtype) in layout.items():
            offsets[name] = total
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            total += -(-nbytes // _ALIGN) * _ALIGN
        mine = max(total, _ALIGN) if self.node_comm.Get_rank() == 0 else 0
        win = MPI.Win.Allocate_shared(mine, 1, comm=self.node_comm)
        win.Lock_all(MPI.MODE_NOCHECK)
        self._windows.append(win)
        memory, _ = win.Shared_query(0)
        base = np.frombuffer(memory, dtype=np.uint8, count=max(total, _ALIGN))
        if self.node_comm.Get_rank() == 0:
            base[:] = 0
        sleepy_barrier(self.node_comm)
        return {name: base[offsets[name]:offsets[name] + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize]
                .view(dtype).reshape(shape) for name, (shape, dtype) in layout.items()}

    def fence(self) -> None:
        for win in self._windows:
            win.Sync()

    def close(self) -> None:
        """Free the windows (collective over the node); arrays from this store are invalid after."""
        for win in self._windows:
            win.Unlock_all()
            win.Free()
        self._windows.clear()
