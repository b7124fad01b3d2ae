"""FrameReplayBuffer: a replay memory for stacked-frame observations that keeps each frame once.

gymnasium's ``FrameStackObservation`` turns each observation into the last ``k`` frames, stacked
on axis 0 (Atari: ``(4, 84, 84)`` uint8). A plain replay buffer stores ``obs`` and ``next_obs``
of every transition, ``2k`` frames, although consecutive observations share ``k - 1`` of them.
This buffer stores per row only the newest frame of ``obs`` and of ``next_obs`` (2 frames instead
of ``2k``: a quarter of the memory for ``k = 4``) and rebuilds the stacks when it is read:

- ``obs_t[k-1-j]`` is the newest frame of row ``t - j * stride`` (the same environment ``j`` steps
  back) as long as those steps continue one episode;
- before an episode's first row the stack holds padding: copies of the first frame
  (``padding_type='reset'``, the default) or zeros (``padding_type='zero'``), recognised when
  the row is written;
- ``next_obs_t`` is ``obs_t`` shifted by one with the row's next frame appended, which holds
  for every step of ``FrameStackObservation`` (checked on every write).

A row whose earlier frames are unknown (the first rows after a resume without the replay
buffer, mid-episode) or already overwritten is never sampled (``valid``). Every other column is
stored as in ``ReplayBuffer``, and the arrays come from the same kind of store, so under MPI the
frames live in the node's shared memory and the optimizer rebuilds stacks from any worker's slice.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from aquaml.buffers.replay import ArrayStore, LocalArrayStore, ReplayBuffer
from aquaml.data import DataInfo, SpecError

#: How a chain of rows (one episode's steps of one environment) starts: its first stack's padding.
CONTINUES, PAD_REPEAT, PAD_ZERO, PAD_UNKNOWN = 0, 1, 2, 3


def stacked_entries(info: DataInfo) -> tuple[str, ...]:
    """The observation entries that look like ``FrameStackObservation`` stacks: uint8, at least
    3-D (``(k, H, W)`` or ``(k, H, W, C)``) with ``k >= 2``, and a ``next_`` column beside them."""
    return tuple(n for n in info.names if not n.startswith("next_") and "next_" + n in info
                 and info.dtype(n) == np.uint8 and len(info.shape(n)) >= 3 and info.shape(n)[0] >= 2)


class FrameReplayBuffer(ReplayBuffer):
    """A ``ReplayBuffer`` whose ``stacked`` entries (and their ``next_`` columns) are kept as
    single frames and rebuilt on reading. Same arguments as ``ReplayBuffer`` plus ``stacked``.

    ``arrays`` holds the stored columns: every other column of ``info``, and per stacked entry
    ``<name>.frame`` and ``<name>.next_frame`` (``(slices, rows, *frame_shape)``), ``<name>.depth``
    (earlier rows the stack reads, at most ``k - 1``) and ``<name>.start`` (its chain's padding).

    Raises:
        SpecError: a ``stacked`` entry is not a uint8 stack of at least two frames with a
            ``next_`` column.
    """

    def __init__(self, info: DataInfo, capacity: int, stacked: Sequence[str], num_slices: int = 1,
                 store: ArrayStore | None = None, stride: int = 1) -> None:
        if capacity <= 0 or num_slices <= 0 or stride <= 0:
            raise ValueError(f"FrameReplayBuffer needs capacity, num_slices and stride > 0, "
                             f"got {capacity}, {num_slices}, {stride}")
        candidates = stacked_entries(info)
        wrong = [n for n in stacked if n not in candidates]
        if wrong or not stacked:
            raise SpecError(f"FrameReplayBuffer: {wrong or 'no entry'} given as stacked frames; it needs uint8 "
                            f"observations stacked on axis 0 (k >= 2 frames, as FrameStackObservation makes) "
                            f"with next_ columns; candidates in this spec: {candidates or 'none'}")
        self.store = store or LocalArrayStore()
        self.info, self.num_slices, self.stride = info, num_slices, stride
        self.stacked = tuple(stacked)
        self.depth = {n: info.shape(n)[0] for n in self.stacked}
        self.slice_capacity = -(-capacity // (num_slices * stride)) * stride
        skipped = set(self.stacked) | {"next_" + n for n in self.stacked}
        rows = (num_slices, self.slice_capacity)
        layout = {n: (rows + info.shape(n), info.dtype(n)) for n in info.names if n not in skipped}
        for n in self.stacked:
            frame = info.shape(n)[1:]
            layout.update({f"{n}.frame": (rows + frame, np.dtype(np.uint8)),
                           f"{n}.next_frame": (rows + frame, np.dtype(np.uint8)),
                           f"{n}.depth": (rows, np.dtype(np.int8)), f"{n}.start": (rows, np.dtype(np.int8))})
        arrays = self.store.allocate({**layout, "__counters__": ((num_slices,), np.dtype(np.int64))})
        self.counters = arrays.pop("__counters__")
        self.arrays = arrays
        self._plain = tuple(n for n in info.names if n not in skipped)
        # as ReplayBuffer's: rows a concurrent writer may be filling, and rows lost at a resume
        self.write_margin = stride if self.store.concurrent else 0
        self.valid_from = np.zeros(num_slices, np.int64)

    def write(self, slice_index: int, transition: Mapping[str, np.ndarray]) -> None:
        self.write_batch(slice_index, {k: np.asarray(v)[None] for k, v in transition.items()})

    def write_batch(self, slice_index: int, transitions: Mapping[str, np.ndarray]) -> None:
        """Append ``n`` transitions (arrays ``(n, *shape)``) in order; each stacked observation is
        checked to be the previous one shifted (raises ValueError naming the entry if not)."""
        n = len(transitions[self.info.names[0]])
        start = int(self.counters[slice_index])
        cap = self.slice_capacity
        local = (start + np.arange(n)) % cap
        for name in self._plain:
            self.arrays[name][slice_index, local] = transitions[name]
        for i in range(n):  # in order: a row's predecessor may be an earlier row of this call
            for name in self.stacked:
                self._write_frames(slice_index, start + i, name, transitions[name][i],
                                   transitions["next_" + name][i])
        self.store.fence()
        self.counters[slice_index] = start + n

    def _write_frames(self, s: int, g: int, name: str, obs: np.ndarray, next_obs: np.ndarray) -> None:
        if not np.array_equal(next_obs[:-1], obs[1:]):
            raise ValueError(f"FrameReplayBuffer: next_{name} is not {name} shifted by one frame; the frame "
                             "buffer (optimize_memory_usage) needs observations stacked by gymnasium's "
                             "FrameStackObservation, newest frame last")
        a, cap, k = self.arrays, self.slice_capacity, self.depth[name]
        row, prev = g % cap, g - self.stride
        before = prev % cap
        continues = (prev >= 0 and a["terminated"][s, before] < 0.5 and a["truncated"][s, before] < 0.5
                     and np.array_equal(a[f"{name}.next_frame"][s, before], obs[-1]))
        if continues:
            depth, start = min(k - 1, int(a[f"{name}.depth"][s, before]) + 1), int(a[f"{name}.start"][s, before])
        else:
            depth, start = 0, _padding(obs)
        a[f"{name}.frame"][s, row] = obs[-1]
        a[f"{name}.next_frame"][s, row] = next_obs[-1]
        a[f"{name}.depth"][s, row] = depth
        a[f"{name}.start"][s, row] = start

    def valid(self, slices: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Whether the stacks of the given global rows can be rebuilt: their chain's padding is
        known or they read ``k - 1`` earlier rows, and those rows are still held."""
        first = self._oldest_whole(self.read_counters())[slices]
        local = rows % self.slice_capacity
        ok = np.ones(len(rows), bool)
        for name in self.stacked:
            depth = self.arrays[f"{name}.depth"][slices, local].astype(np.int64)
            start = self.arrays[f"{name}.start"][slices, local]
            ok &= ((depth == self.depth[name] - 1) | (start == PAD_REPEAT) | (start == PAD_ZERO))
            ok &= rows - depth * self.stride >= first
        return ok

    def stack(self, name: str, slices: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The stacked observation ``name`` of the given global rows, ``(batch, k, *frame_shape)``."""
        cap, k = self.slice_capacity, self.depth[name]
        local = rows % cap
        depth = self.arrays[f"{name}.depth"][slices, local].astype(np.int64)
        repeat = self.arrays[f"{name}.start"][slices, local] == PAD_REPEAT
        frames = self.arrays[f"{name}.frame"]
        out = np.empty((len(rows),) + self.info.shape(name), np.uint8)
        for j in range(k):
            source = frames[slices, (rows - np.minimum(j, depth) * self.stride) % cap]
            keep = (j <= depth) | repeat  # before the chain's first row: its frame repeated, or zeros
            out[:, k - 1 - j] = source * keep.reshape((-1,) + (1,) * (source.ndim - 1)).astype(np.uint8)
        return out

    def gather(self, names: Sequence[str], slices: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Columns ``names`` of the given global rows, stacked observations rebuilt."""
        out = {}
        local = rows % self.slice_capacity
        for name in names:
            if name in self.stacked:
                out[name] = self.stack(name, slices, rows)
            elif name.startswith("next_") and name[5:] in self.stacked:
                base = name[5:]
                newest = self.arrays[f"{base}.next_frame"][slices, local]
                out[name] = np.concatenate([self.stack(base, slices, rows)[:, 1:], newest[:, None]], axis=1)
            else:
                out[name] = self.arrays[name][slices, local]
        return out

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``batch_size`` whole transitions drawn uniformly over the rows that can be rebuilt."""
        from aquaml.buffers.nstep import uniform_rows
        slices, rows = uniform_rows(self, 1, batch_size, rng)
        return self.gather(self.info.names, slices, rows)

    def bytes_per_row(self) -> int:
        """Memory one stored transition takes, over every array."""
        return int(sum(a[0, 0].nbytes if a.ndim > 2 else a.itemsize for a in self.arrays.values()))


def _padding(obs: np.ndarray) -> int:
    """How the first stack of a chain is padded: copies of its frame, zeros, or not known."""
    earlier = obs[:-1]
    if np.array_equal(earlier, np.broadcast_to(obs[-1], earlier.shape)):
        return PAD_REPEAT
    if not earlier.any():
        return PAD_ZERO
    return PAD_UNKNOWN
