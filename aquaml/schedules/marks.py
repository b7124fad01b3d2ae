"""What both schedules share: how work is split between actors, the marks of their snapshots, and
the weights they are handed."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

#: The mark of an actor's last snapshot when it stopped (a signal) before its quota.
STOP_MARK = 1 << 40
#: The mark of an actor's last message in synchronous rounds when it reached its quota.
END_MARK = 1 << 41


def async_marks(total_steps: int, interval: int) -> list[int]:
    """Total step counts at which an asynchronous run checkpoints (the last one is the end)."""
    if not interval:
        return [total_steps]
    return [min(c * interval, total_steps) for c in range(1, -(-total_steps // interval) + 1)]


def share(total: int, workers: int, index: int) -> int:
    """Worker ``index``'s part of ``total`` when split as evenly as possible."""
    return total // workers + (1 if index < total % workers else 0)


def stopped_worker(snapshots: Mapping[int, tuple[int, Any]]) -> int | None:
    """The lowest worker whose last snapshot says it stopped before its quota, or None."""
    return next((w for w, (mark, _) in sorted(snapshots.items()) if mark == STOP_MARK), None)


def flat_weights(algo: Any) -> np.ndarray:
    """The algorithm's actor weights as one float32 vector (``actor_weights()`` order)."""
    return np.concatenate([np.asarray(w, np.float32).ravel() for w in algo.actor_weights()])
