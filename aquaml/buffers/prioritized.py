"""Proportional prioritized replay (Schaul et al., 2016) over a replay buffer's slices.

Row ``i`` is drawn with probability ``P(i) = p_i^alpha / sum_k p_k^alpha``, where ``p_i`` is the
absolute TD error of its last update plus ``eps``; the loss is weighted by the importance weight
``w_i = (N P(i))^-beta / max_k (N P(k))^-beta = (P(i) / min_k P(k))^-beta`` over the ``N`` rows
that can be drawn, with ``beta`` annealed to 1 over the run. Sampling is exact (a cumulative sum
over every drawable row, then one search per draw), not a sum tree's approximation of it.

The priorities live beside the transitions, one per row of every slice, in arrays allocated
through the buffer's store (node-shared memory under MPI). Only the optimizer reads or writes
them, so workers write transitions exactly as for a plain buffer; a row gets its first priority
(the largest seen so far) when the optimizer first finds it, before it can be drawn. Each
priority is kept with the write count of the row it belongs to (``priority_row``), so a slot
that a worker has since overwritten is recognised as new, and a TD error computed for its old
contents is dropped instead of being given to the new row.
"""
from __future__ import annotations

from typing import Any

import numpy as np


class ProportionalPriorities:
    """Priorities for every row of a buffer's ``num_slices x slice_capacity`` rows.

    Args:
        store: where the arrays live (the buffer's ``store``).
        num_slices, slice_capacity: the buffer's layout.
        alpha: how much priorities count (0: uniform sampling).
        eps: added to every absolute TD error so that no row becomes undrawable.

    Arrays (``arrays``, all in ``store``): ``priority`` (``p^alpha`` per row, float64),
    ``priority_row`` (the global row the priority belongs to, plus one; 0: none yet) and
    ``max_priority`` (the largest ``p`` given so far, shape (1,)).
    """

    def __init__(self, store: Any, num_slices: int, slice_capacity: int, alpha: float, eps: float = 1e-6) -> None:
        rows = (num_slices, slice_capacity)
        self.arrays = store.allocate({"priority": (rows, np.dtype(np.float64)),
                                      "priority_row": (rows, np.dtype(np.int64)),
                                      "max_priority": ((1,), np.dtype(np.float64))})
        self.priority, self.priority_row = self.arrays["priority"], self.arrays["priority_row"]
        self.max_priority = self.arrays["max_priority"]
        if self.max_priority[0] == 0.0:
            self.max_priority[0] = 1.0
        self.alpha, self.eps = float(alpha), float(eps)
        self.slice_capacity = slice_capacity
        self._seen: np.ndarray | None = None  # per slice, the write count up to which rows have priorities

    def assign_new(self, counters: np.ndarray) -> None:
        """Give every row written since the last call the largest priority so far.

        The first call (also after a resume) looks at every row held; later calls only at the
        rows written since, so the cost is per new row.
        """
        counters = np.asarray(counters, np.int64).copy()
        cap = self.slice_capacity
        seen = np.zeros_like(counters) if self._seen is None else self._seen
        top = self.max_priority[0] ** self.alpha
        for s, (since, end) in enumerate(zip(seen, counters)):
            rows = np.arange(max(since, end - cap, 0), end)
            if not len(rows):
                continue
            local = rows % cap
            new = self.priority_row[s, local] != rows + 1
            self.priority[s, local[new]] = top
            self.priority_row[s, local[new]] = rows[new] + 1
        self._seen = counters

    def sample(self, first: np.ndarray, end: np.ndarray, size: int, rng: np.random.Generator,
               valid: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """``size`` draws with probability proportional to ``p^alpha`` among the global rows
        ``[first[s], end[s])`` of every slice ``s`` (and, if given, where ``valid(slices, rows)``).

        Returns ``(slices, rows, probabilities of the drawn rows, smallest probability of any
        drawable row)``.

        Raises:
            ValueError: no row can be drawn.
        """
        counts = np.maximum(end - first, 0)
        slices = np.repeat(np.arange(len(counts)), counts)
        rows = np.concatenate([np.arange(a, b) for a, b in zip(first, np.maximum(end, first))]) \
            if counts.sum() else np.zeros(0, np.int64)
        weights = self.priority[slices, rows % self.slice_capacity]
        if valid is not None and len(rows):
            weights = np.where(valid(slices, rows), weights, 0.0)
        cumulative = np.cumsum(weights)
        total = cumulative[-1] if len(cumulative) else 0.0
        if not total > 0:
            raise ValueError("no row of the replay buffer can be drawn yet (prioritized replay)")
        pick = np.searchsorted(cumulative, rng.random(size) * total, side="right")
        pick = np.minimum(pick, len(rows) - 1)  # a draw of exactly total (rounding) takes the last row
        smallest = weights[weights > 0].min() / total
        return slices[pick], rows[pick], weights[pick] / total, float(smallest)

    @staticmethod
    def importance_weights(probabilities: np.ndarray, smallest: float, beta: float) -> np.ndarray:
        """``(P(i) / min_k P(k))^-beta``: 1 for the least likely row, below 1 for the others."""
        return np.power(probabilities / smallest, -beta).astype(np.float32)

    def update(self, slices: np.ndarray, rows: np.ndarray, td_errors: np.ndarray, counters: np.ndarray) -> None:
        """Set the priorities of the drawn global ``rows`` from their new TD errors, except for
        rows a worker has overwritten since they were drawn (their slot holds a new row now)."""
        p = np.abs(np.asarray(td_errors, np.float64)).reshape(-1) + self.eps
        slices, rows = np.asarray(slices).reshape(-1), np.asarray(rows).reshape(-1)
        local = rows % self.slice_capacity
        held = rows >= np.asarray(counters)[slices] - self.slice_capacity
        alive = held & (self.priority_row[slices, local] == rows + 1)
        self.priority[slices[alive], local[alive]] = p[alive] ** self.alpha
        if len(p):
            self.max_priority[0] = max(self.max_priority[0], float(p.max()))
