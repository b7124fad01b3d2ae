"""WeightStore: versioned actor weights that a reader never sees half-written (a seqlock).

The writer makes the sequence number odd, writes, then makes it even again; a reader copies only
when the number is even and unchanged across its copy, and otherwise simply tries again at its
next step. Works over any array store: a shared window on a node, or local arrays.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from aquaml.buffers.replay import ArrayStore


class WeightStore:
    """Flat float32 storage for a list of weight arrays with fixed shapes.

    Args:
        shapes: the shape of every weight array, in ``get_weights()`` order.
        store: where the vector and its header live.
    """

    def __init__(self, shapes: Sequence[tuple[int, ...]], store: ArrayStore) -> None:
        self.shapes = [tuple(s) for s in shapes]
        self.sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        self.store = store
        arrays = store.allocate({"header": ((2,), np.dtype(np.int64)),
                                 "flat": ((sum(self.sizes),), np.dtype(np.float32))})
        self._header, self._flat = arrays["header"], arrays["flat"]

    @property
    def version(self) -> int:
        """Number of completed publications (0: nothing published yet)."""
        return int(self._header[1])

    def flatten(self, weights: Sequence[np.ndarray]) -> np.ndarray:
        """One float32 vector of ``weights`` in this store's layout.

        Raises:
            ValueError: the weights hold a different number of values than the store.
        """
        flat = np.concatenate([np.asarray(w, np.float32).ravel() for w in weights])
        if flat.size != self._flat.size:
            raise ValueError(f"WeightStore holds {self._flat.size} values, got {flat.size}")
        return flat

    def publish(self, weights: Sequence[np.ndarray]) -> int:
        """Write ``weights`` as the next version and return that version."""
        self.publish_flat(self.flatten(weights))
        return self.version

    def publish_flat(self, flat: np.ndarray, version: int | None = None) -> None:
        """Write an already-flat vector as ``version`` (default: the next one).

        A node leader passes the optimizer's version, so a version names the same weights on
        every node.
        """
        self._header[0] += 1  # odd: writing
        self.store.fence()
        self._flat[:] = flat
        self.store.fence()
        self._header[1] = self.version + 1 if version is None else version
        self._header[0] += 1  # even: stable
        self.store.fence()

    def read_flat(self, newer_than: int) -> tuple[int, np.ndarray] | None:
        """``(version, copy of the vector)`` if a version newer than ``newer_than`` is stable, else None."""
        seq = int(self._header[0])
        self.store.fence()
        version = int(self._header[1])
        if seq % 2 or version <= newer_than:
            return None
        flat = self._flat.copy()
        self.store.fence()
        if int(self._header[0]) != seq:
            return None  # written meanwhile: try again next time
        return version, flat

    def read(self, newer_than: int) -> tuple[int, list[np.ndarray]] | None:
        """Like ``read_flat`` but split back into arrays of the original shapes."""
        got = self.read_flat(newer_than)
        if got is None:
            return None
        version, flat = got
        parts = np.split(flat, np.cumsum(self.sizes)[:-1])
        return version, [p.reshape(s) for p, s in zip(parts, self.shapes)]
