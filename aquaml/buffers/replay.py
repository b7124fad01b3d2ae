"""ReplayBuffer: struct-of-arrays transitions in per-worker slices, over any array store.

Every column of the buffer's DataInfo is one array of shape ``(num_slices, slice_capacity, *shape)``.
Each worker owns one slice and its write counter; the counter only grows, so ``counter % capacity``
is the next row and ``min(counter, capacity)`` the rows filled. Sampling is uniform over every row
written in every slice.

When workers write while the optimizer reads (a node's shared window), the oldest rows of a full
slice are the next to be overwritten, column by column. A reader therefore copies first, then reads
the counters again and draws anew whatever a writer may have touched meanwhile: every row written
since, plus one write batch (``stride`` rows) past the counter, which a writer may be filling
unpublished. In one process nothing writes concurrently, nothing is redrawn, and a batch is exactly
the rows of the generator's draws.
"""
from __future__ import annotations

import functools
from typing import Callable, Mapping, Protocol

import numpy as np

from aquaml.data import DataInfo

#: Redraws in a row after which sampling gives up (a writer that laps its slice during every copy).
MAX_REDRAWS = 100


class ArrayStore(Protocol):
    """Where a buffer's arrays live.

    ``allocate({name: (shape, dtype)})`` returns zeroed arrays; ``fence()`` orders memory between a
    writer's data and the counter that publishes it (a no-op within one process). ``concurrent``
    is True when other processes write into the arrays while this one reads them.
    """

    concurrent: bool

    def allocate(self, layout: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> dict[str, np.ndarray]: ...

    def fence(self) -> None: ...


class LocalArrayStore:
    """Plain numpy arrays in this process."""

    concurrent = False

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
        #: Rows a writer may be filling beyond its published counter: one Worker step of ``stride``
        #: environments (remote workers' rows are written by the reading process itself).
        self.write_margin = stride if self.store.concurrent else 0
        #: Per slice, the first write count still held whole (rows before it, if the ring still
        #: counts them, were lost when a checkpoint was taken while a worker wrote; see load_replay).
        self.valid_from = np.zeros(num_slices, np.int64)
        if self.write_margin and self.slice_capacity <= 2 * self.write_margin:
            raise ValueError(f"ReplayBuffer: {self.slice_capacity} rows per slice leave nothing to sample while "
                             f"workers write {self.write_margin} rows a step; raise the capacity")

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

    def read_counters(self) -> np.ndarray:
        """The counters as they are now, fenced on both sides: after every row this process read
        before, and before every row it reads next."""
        self.store.fence()
        counts = self.counters.copy()
        self.store.fence()
        return counts

    def _oldest_whole(self, counts: np.ndarray) -> np.ndarray:
        """Per slice, the first write count no writer can be touching at ``counts``: the ring's
        oldest row, ``write_margin`` rows later (the next to be overwritten), or ``valid_from``."""
        return np.maximum(np.maximum(counts + self.write_margin - self.slice_capacity, self.valid_from), 0)

    def _touched(self, slices: np.ndarray, written: np.ndarray,
                 counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which rows just copied (write counts ``written`` of ``slices``, drawn at ``counts``) a
        writer may have touched during the copy, and the counters now."""
        now = self.read_counters()
        oldest = self._oldest_whole(now)
        if np.all(oldest <= np.maximum(counts - self.slice_capacity, 0)):
            return np.zeros(len(slices), bool), now  # no slice's writer reached a row that was drawn
        return written < oldest[slices], now

    def overwritten(self, slices: np.ndarray, written: np.ndarray,
                    counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For rows a sampler of its own copied out (the oldest row of each draw at write count
        ``written`` of ``slices``, drawn at ``counts``): which a concurrent writer may have touched
        during the copy, to be drawn again, and the counters now. All False in one process."""
        if not self._rechecks():
            return np.zeros(len(slices), bool), counts
        return self._touched(slices, written, counts)

    def _rechecks(self) -> bool:
        """Whether rows drawn must be checked against the counters after their copy: with
        concurrent writers, or rows lost at a resume. Never in one process."""
        return bool(self.write_margin) or bool(self.valid_from.any())

    def _draw_rows(self, count: int, counts: np.ndarray, rng: np.random.Generator) -> tuple:
        """``count`` rows uniform over the filled ones: (their index into a column, slices, and
        their write counts when ``_rechecks``)."""
        slices, rows = _uniform_over(np.minimum(counts, self.slice_capacity), count, rng)
        if not self._rechecks():
            return (slices, rows), slices, None
        last = counts[slices] - 1
        return (slices, rows), slices, last - (last - rows) % self.slice_capacity

    def _draw_sequences(self, length: int, count: int, counts: np.ndarray, rng: np.random.Generator) -> tuple:
        """``count`` sequence starts uniform over the whole ones: (index, slices, first write counts)."""
        first, end = self.sequence_starts(length, counts)
        slices, index = _uniform_over(end - first, count, rng)
        begin = first[slices] + index
        rows = (begin[:, None] + self.stride * np.arange(length)[None, :]) % self.slice_capacity
        return (slices[:, None], rows), slices, begin  # a sequence's first row is its oldest

    def _copy_draws(self, draw: Callable, count: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``count`` draws copied out of every column. With concurrent writers (or rows lost at a
        resume) those a writer may have touched meanwhile are drawn again, until none is."""
        counts = self.read_counters()
        index, slices, written = draw(count, counts, rng)
        out = {n: a[index] for n, a in self.arrays.items()}
        if not self._rechecks():
            return out  # one process: nothing else writes, every row drawn is whole
        stale, counts = self._touched(slices, written, counts)
        redraw = np.flatnonzero(stale)
        for _ in range(MAX_REDRAWS):
            if not len(redraw):
                return out
            index, slices, written = draw(len(redraw), counts, rng)
            for n, a in self.arrays.items():
                out[n][redraw] = a[index]
            stale, counts = self._touched(slices, written, counts)
            redraw = redraw[stale]
        raise RuntimeError(f"ReplayBuffer: writers overwrote the rows drawn {MAX_REDRAWS} times in a row; its "
                           f"slices ({self.slice_capacity} rows each) are too small for their write rate: "
                           "raise buffer_size")

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``batch_size`` transitions drawn uniformly, with replacement, from all filled rows.

        Rows a concurrent writer may have touched during the copy are drawn again (module note).

        Raises:
            ValueError: the buffer is empty.
        """
        if not self.counters.any():
            raise ValueError("cannot sample from an empty ReplayBuffer")
        return self._copy_draws(self._draw_rows, batch_size, rng)

    def sequence_starts(self, length: int, counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per slice, the first and one-past-last write count at which a whole sequence of
        ``length`` steps of one environment starts (rows held whole, all written), at ``counts``
        (default: the counters now)."""
        counts = self.read_counters() if counts is None else counts
        first = self._oldest_whole(counts)
        end = np.maximum(counts - (length - 1) * self.stride, first)
        return first, end

    def sample_sequences(self, batch_size: int, length: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``batch_size`` sequences of ``length`` consecutive steps of one environment, each
        ``(batch_size, length, *shape)``, drawn uniformly over every start a slice holds.

        A sequence may run across episode ends (``aquaml.models.recurrent.sequence_mask`` cuts them
        off). Sequences a concurrent writer may have touched during the copy are drawn again.

        Raises:
            ValueError: no slice holds ``length`` steps of an environment yet.
        """
        first, end = self.sequence_starts(length)
        if int((end - first).sum()) == 0:
            raise ValueError(f"no slice of the ReplayBuffer holds a sequence of {length} steps yet "
                             f"(rows per slice: {self.filled().tolist()}, {self.stride} per step)")
        return self._copy_draws(functools.partial(self._draw_sequences, length), batch_size, rng)

    def copy_rows(self, slice_index: int, first: int, end: int) -> tuple[dict[str, np.ndarray], int]:
        """Copies of the rows of write counts ``first`` to ``end`` of a slice (held whole when
        called), less the oldest ones a concurrent writer may have touched during the copy; returns
        them and the write count of the first row kept (``end`` when none is)."""
        rows = np.arange(first, end) % self.slice_capacity
        data = {n: a[slice_index, rows] for n, a in self.arrays.items()}
        kept = min(max(first, int(self._oldest_whole(self.read_counters())[slice_index])), end)
        return {n: v[kept - first:] for n, v in data.items()}, kept
