"""ReplayBuffer: struct-of-arrays transitions in per-worker slices, over any array store.

Every column of the buffer's DataInfo is one array of shape ``(num_slices, slice_capacity, *shape)``.
Each worker owns one slice and its write counter; the counter only grows, so ``counter % capacity``
is the next row and ``min(counter, capacity)`` the rows filled. Sampling is uniform over every row
written in every slice.
"""
from __future__ import annotations

from typing import Mapping, Protocol

import numpy as np

from aquaml.data import DataInfo


class ArrayStore(Protocol):
    """Where a buffer's arrays live.

    ``allocate({name: (shape, dtype)})`` returns zeroed arrays; ``fence()`` orders memory between a
    writer's data and the counter that publishes it (a no-op within one process).
    """

    def allocate(self, layout: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> dict[str, np.ndarray]: ...

    def fence(self) -> None: ...


class LocalArrayStore:
    """Plain numpy arrays in this process."""

    def allocate(self, layout: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> dict[str, np.ndarray]:
        return {name: np.zeros(shape, dtype) for name, (shape, dtype) in layout.items()}

    def fence(self) -> None:
        pass


def _uniform_over(counts: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``size`` draws, uniform with replacement over all ``counts.sum()`` items of the slices:
    the slice of each and its index within the slice."""
    flat = rng.integers(0, int(counts.sum()), size=size)
    offsets = np.cumsum(counts) - counts
    slices = np.searchsorted(offsets, flat, side="right") - 1  # empty slices share the next one's offset
    return slices, flat - offsets[slices]


class ReplayBuffer:
    """A FIFO replay memory split into ``num_slices`` slices of equal capacity.

    Args:
        info: the columns of one transition (see ``aquaml.algos.sac.transition_info``).
        capacity: total rows over all slices (rounded up to a multiple of ``num_slices``).
        num_slices: one per worker (one writer each).
        store: where the arrays live; defaults to local numpy arrays.
        stride: rows per time step of a slice (a worker stepping ``n`` environments writes their
            rows interleaved, so one environment's steps are ``n`` rows apart); the slice capacity
            is rounded up to a multiple of it, so wrapping keeps that order.

    Raises:
        ValueError: capacity, num_slices or stride is not positive.
    """

    def __init__(self, info: DataInfo, capacity: int, num_slices: int = 1, store: ArrayStore | None = None,
                 stride: int = 1):
        if capacity <= 0 or num_slices <= 0 or stride <= 0:
            raise ValueError(f"ReplayBuffer needs capacity, num_slices and stride > 0, "
                             f"got {capacity}, {num_slices}, {stride}")
        self.store = store or LocalArrayStore()
        self.info = info
        self.num_slices = num_slices
        self.stride = stride
        self.slice_capacity = -(-capacity // (num_slices * stride)) * stride
        layout = {n: ((num_slices, self.slice_capacity) + info.shape(n), info.dtype(n)) for n in info.names}
        arrays = self.store.allocate({**layout, "__counters__": ((num_slices,), np.dtype(np.int64))})
        self.counters = arrays.pop("__counters__")
        self.arrays = arrays

    @property
    def capacity(self) -> int:
        return self.num_slices * self.slice_capacity

    def filled(self) -> np.ndarray:
        """Rows holding data, per slice."""
        return np.minimum(self.counters, self.slice_capacity)

    def __len__(self) -> int:
        return int(self.filled().sum())

    def write(self, slice_index: int, transition: Mapping[str, np.ndarray]) -> None:
        """Append one transition (a dict with every column) to a slice; the counter moves last."""
        row = int(self.counters[slice_index] % self.slice_capacity)
        for name, array in self.arrays.items():
            array[slice_index, row] = transition[name]
        self.store.fence()
        self.counters[slice_index] += 1

    def write_batch(self, slice_index: int, transitions: Mapping[str, np.ndarray]) -> None:
        """Append ``n`` transitions (arrays of shape ``(n, *shape)``) to a slice, in order."""
        n = len(transitions[self.info.names[0]])
        start = int(self.counters[slice_index])
        if n == 1:  # the common case of one environment per worker: plain indexing is 3x cheaper
            row = start % self.slice_capacity
            for name, array in self.arrays.items():
                array[slice_index, row] = transitions[name][0]
        else:
            rows = (start + np.arange(n)) % self.slice_capacity
            for name, array in self.arrays.items():
                array[slice_index, rows] = transitions[name]
        self.store.fence()
        self.counters[slice_index] = start + n

    def rows_since(self, slice_index: int, start: int) -> tuple[dict[str, np.ndarray], int]:
        """Copies of the rows a slice received since its counter was ``start``, in order, and the new count.

        Raises:
            ValueError: rows since ``start`` were already overwritten (the reader fell a capacity behind).
        """
        end = int(self.counters[slice_index])
        self.store.fence()
        if end - start > self.slice_capacity:
            raise ValueError(f"slice {slice_index}: rows {start}..{end - self.slice_capacity} were overwritten "
                             f"before being read (capacity {self.slice_capacity})")
        rows = np.arange(start, end) % self.slice_capacity
        return {n: a[slice_index, rows] for n, a in self.arrays.items()}, end

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``batch_size`` transitions drawn uniformly, with replacement, from all filled rows.

        Raises:
            ValueError: the buffer is empty.
        """
        filled = self.filled()
        self.store.fence()
        total = int(filled.sum())
        if total == 0:
            raise ValueError("cannot sample from an empty ReplayBuffer")
        slices, rows = _uniform_over(filled, batch_size, rng)
        return {n: a[slices, rows] for n, a in self.arrays.items()}

    def sequence_starts(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Per slice, the first and one-past-last write count at which a whole sequence of
        ``length`` steps of one environment starts (rows still held, all written)."""
        counts = self.counters.copy()
        self.store.fence()
        first = np.maximum(counts - self.slice_capacity, 0)
        end = np.maximum(counts - (length - 1) * self.stride, first)
        return first, end

    def sample_sequences(self, batch_size: int, length: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``batch_size`` sequences of ``length`` consecutive steps of one environment, each
        ``(batch_size, length, *shape)``, drawn uniformly over every start a slice holds.

        A sequence may run across episode ends (``aquaml.models.recurrent.sequence_mask`` cuts them off).

        Raises:
            ValueError: no slice holds ``length`` steps of an environment yet.
        """
        first, end = self.sequence_starts(length)
        starts = end - first
        total = int(starts.sum())
        if total == 0:
            raise ValueError(f"no slice of the ReplayBuffer holds a sequence of {length} steps yet "
                             f"(rows per slice: {self.filled().tolist()}, {self.stride} per step)")
        slices, index = _uniform_over(starts, batch_size, rng)
        begin = first[slices] + index
        rows = (begin[:, None] + self.stride * np.arange(length)[None, :]) % self.slice_capacity
        return {n: a[slices[:, None], rows] for n, a in self.arrays.items()}
