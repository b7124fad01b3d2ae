"""LocalLink: both ends of the learner-actor link in one process (the one-rank case).

The buffer is the algorithm's own, on local arrays; snapshots, finished episodes and the update
count are plain attributes; weights are not copied, because the actor acts on the learner's own
variables (``shares_weights``). Nothing here ever waits: in one process the driver alternates the
roles, so a wait that is not already over would never end.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np


class LocalLink:
    """The learner's and the only actor's end of a link within one process."""

    #: The actor acts on the learner's variables: published weights need no copy.
    shares_weights = True

    def __init__(self, buffer: Any) -> None:
        self.buffer = self.sink = buffer
        self.num_workers, self.index, self.rank = 1, 0, 0
        self._episodes: Callable[[list], None] = lambda episodes: None
        self._snapshots: dict[int, tuple[int, Any]] = {}
        self._updates = self._version = 0
        self._stop = self._done = False
        self._restore: Any = None

    # --- the learner's end ---------------------------------------------------------------------
    def start(self, episodes: Callable[[list], None]) -> None:
        self._episodes = episodes

    def poll(self) -> None:
        pass  # everything is already here

    def snapshots(self) -> dict[int, tuple[int, Any]]:
        return self._snapshots

    def finished(self) -> np.ndarray:
        return np.array([self._done])

    def set_updates(self, updates: int) -> None:
        self._updates = updates

    def publish(self, flat: np.ndarray | None, version: int | None = None) -> int:
        self._version = self._version + 1 if version is None else version
        return self._version

    def restore_workers(self, states: list) -> None:
        self._restore = states[0]

    def wait_until(self, ready: Callable[[], bool], finished: Callable[[], np.ndarray]) -> None:
        if not ready():
            raise RuntimeError("the one-process schedule waited for its own actor: a bug in the schedule")

    def stop_workers(self) -> None:
        self._stop = True

    def busy(self) -> None:
        pass

    def idle(self) -> None:
        pass

    def close(self, verbose: bool, name: str) -> None:
        pass

    # --- the actor's end -----------------------------------------------------------------------
    def restore_state(self) -> Any:
        return self._restore

    def updates(self) -> int:
        return self._updates

    def stopping(self) -> bool:
        return self._stop

    def newer_weights(self, version: int) -> tuple[int, None] | None:
        return (self._version, None) if self._version > version else None

    def record_episodes(self, episodes: list) -> None:
        self._episodes(episodes)

    def send_snapshot(self, mark: int, state: Any) -> None:
        self._snapshots[0] = (mark, state)

    def waiting(self, flag: bool) -> None:
        pass

    def flush(self) -> None:
        pass

    def finish(self) -> None:
        self._done = True
