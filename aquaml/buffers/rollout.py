"""RolloutBuffer: one segment of ``rollout_steps`` per worker, for on-policy training (PPO).

Every column is an array of shape ``(num_slices, rollout_steps, envs, *shape)``: a worker's segment
keeps its environments side by side, so each environment's steps form one time series (GAE runs
along axis 1). The per-slice counter counts time steps written and only grows; the segment of
round ``k`` is complete when the counter reaches ``(k + 1) * rollout_steps``.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from aquaml.buffers.replay import ArrayStore, LocalArrayStore
from aquaml.data import DataInfo


class RolloutBuffer:
    """Per-worker rollout segments over any array store (local arrays or a node's shared window).

    Args:
        info: the columns of one step.
        rollout_steps: time steps per segment.
        envs: environment copies per worker (rows per time step).
        num_slices: one per worker (one writer each).
        store: where the arrays live; defaults to local numpy arrays.

    Raises:
        ValueError: a size is not positive.
    """

    def __init__(self, info: DataInfo, rollout_steps: int, envs: int = 1, num_slices: int = 1,
                 store: ArrayStore | None = None) -> None:
        if min(rollout_steps, envs, num_slices) <= 0:
            raise ValueError(f"RolloutBuffer needs rollout_steps, envs and num_slices > 0, "
                             f"got {rollout_steps}, {envs}, {num_slices}")
        self.store = store or LocalArrayStore()
        self.info, self.rollout_steps, self.envs, self.num_slices = info, rollout_steps, envs, num_slices
        layout = {n: ((num_slices, rollout_steps, envs) + info.shape(n), info.dtype(n)) for n in info.names}
        arrays = self.store.allocate({**layout, "__counters__": ((num_slices,), np.dtype(np.int64))})
        self.counters = arrays.pop("__counters__")
        self.arrays = arrays

    def write_batch(self, slice_index: int, rows: Mapping[str, np.ndarray]) -> None:
        """Append time steps to a slice: ``m * envs`` rows, environment-minor (as a Worker writes them).

        Raises:
            ValueError: the row count is not a multiple of ``envs``.
        """
        n = len(rows[self.info.names[0]])
        if n % self.envs:
            raise ValueError(f"RolloutBuffer: {n} rows is not a whole number of steps of {self.envs} environments")
        steps = n // self.envs
        start = int(self.counters[slice_index])
        t = (start + np.arange(steps)) % self.rollout_steps
        for name, array in self.arrays.items():
            array[slice_index, t] = np.reshape(rows[name], (steps, self.envs) + self.info.shape(name))
        self.store.fence()
        self.counters[slice_index] = start + steps

    def restart_at(self, rounds: int) -> None:
        """Set every slice's counter to the start of round ``rounds`` (resuming after that many)."""
        self.counters[:] = rounds * self.rollout_steps

    def complete(self, rounds: int) -> bool:
        """True when every slice has written ``rounds`` whole segments."""
        self.store.fence()
        return bool(np.all(self.counters >= rounds * self.rollout_steps))

    def segments(self) -> dict[str, np.ndarray]:
        """The current segments, ``(num_slices, rollout_steps, envs, *shape)`` per column (views)."""
        self.store.fence()
        return dict(self.arrays)
