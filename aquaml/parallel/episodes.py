"""Finished-episode records on the optimizer's node: one ring per local worker, read between steps.

A worker writes ``(return, length)`` of each episode it finishes into its ring; the optimizer
reads what is new whenever it polls. A ring that the optimizer does not read in time (a slow
evaluation while workers finish many short episodes) must not end the run: the oldest unread
records are dropped, counted, and reported once.
"""
from __future__ import annotations

import warnings

import numpy as np

#: Finished episodes each worker's ring holds at least (see ``ring_size``).
EPISODE_RING = 1024


def ring_size(steps_between_reads: int, envs_per_worker: int) -> int:
    """Records per worker's ring: at least ``EPISODE_RING``, and enough for one-step episodes of
    every environment over ``steps_between_reads`` steps (the longest a worker runs unread)."""
    return max(EPISODE_RING, steps_between_reads * envs_per_worker)


class EpisodeRingReader:
    """Reads the new records of some slices of an episode ring (a ReplayBuffer of
    ``transport.EPISODE_INFO`` rows), keeping the newest when a ring was overwritten unread.

    Args:
        ring: the rings, one slice per worker.
        slices: the slices this reader reads (the workers on the optimizer's node).
    """

    def __init__(self, ring, slices: list[int]) -> None:
        self.ring, self.slices = ring, list(slices)
        self._read = np.zeros(ring.num_slices, np.int64)
        # a worker may add a few records while the rows are copied: start far enough behind its head
        self._margin = max(ring.slice_capacity // 8, 1)
        self.dropped = 0

    def read(self) -> list[tuple[int, dict]]:
        """``[(slice, columns)]`` of the records written since the last call."""
        out = []
        for s in self.slices:
            written, start = int(self.ring.counters[s]), int(self._read[s])
            if written <= start:
                continue
            oldest = written - self.ring.slice_capacity + self._margin
            if start < oldest:  # overwritten before they were read: keep the newest, count the rest
                self._drop(oldest - start, s)
                start = oldest
            columns, self._read[s] = self.ring.rows_since(s, start)
            out.append((s, columns))
        return out

    def _drop(self, count: int, worker: int) -> None:
        if not self.dropped:
            warnings.warn(f"worker {worker} finished episodes faster than the optimizer read them: {count} "
                          "episode records were dropped from the console and progress.csv statistics "
                          "(training is not affected); the total is printed at the end", stacklevel=3)
        self.dropped += count
