"""What a schedule is given: a typed task context, and the links between its learner and actors.

A schedule has two roles: the learner (the optimizer rank: trains, publishes weights, logs,
evaluates, checkpoints) and the actors (worker ranks: step environments, store transitions). They
talk only through a link:

- ``LearnerLink``: the learner's end (the buffer every actor writes into, the actors' snapshots and
  finished episodes, the update count and weights it hands out, the stop flag);
- ``ActorLink``: an actor's end (where its transitions go, the update count and weights it reads).

``aquaml.schedules.local.LocalLink`` is both ends in one process; ``aquaml.parallel.links`` holds
the MPI ends (node-shared windows, messages to and from other nodes). The roles are the same code
either way; only the driver differs (``aquaml.schedules.drivers``).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from aquaml.data import DataInfo


class CheckpointSink(Protocol):
    """Where the learner writes checkpoints (the run layer: files, the algorithm's variables,
    the progress bookkeeping); see ``aquaml.run.checkpoint``."""

    def save(self, step: int, learner: Mapping[str, Any], workers: Sequence[Mapping[str, Any]], buffer: Any,
             counts: np.ndarray | None = None) -> str:
        """Write a checkpoint of everything at ``step``: the algorithm, the learner's own state,
        each worker's snapshot, and the buffer (cut at ``counts`` rows per slice when given)."""

    def restore(self, restored: tuple[dict, dict], buffer: Any) -> tuple[dict, list]:
        """Load a checkpoint's algorithm state and buffer; return ``(learner state, worker states)``."""


@dataclasses.dataclass
class TaskContext:
    """Everything a schedule needs, passed explicitly (no call-backs into the starter).

    Attributes:
        algo: the algorithm (its class says which schedule runs it).
        params: its parameters (``ReplayParameters`` or ``RolloutParameters`` and the shared ones).
        envs: this rank's environment copies (``params.envs_per_worker`` of them).
        obs_info, action_info: the specs the environments and models agreed on.
        stop: the StopRequest the loops check (signals, a stopped worker, a tuning pruner).
        progress: the learner's epoch bookkeeping (``aquaml.run.progress.Progress``); None on workers.
        checkpoints: where the learner writes checkpoints; None on workers.
        restored: the checkpoint to continue from (read on the learner), or None.
        checkpoint_interval: environment steps between checkpoints (0: only at the end and on a
            stop); actors snapshot themselves at their share of each mark.
        name: the run's name, for messages.
        verbose: print what a user should know (dropped episode records, ...).
    """
    algo: Any
    params: Any
    envs: list
    obs_info: DataInfo
    action_info: DataInfo
    stop: Any
    progress: Any = None
    checkpoints: CheckpointSink | None = None
    restored: tuple[dict, dict] | None = None
    checkpoint_interval: int = 0
    name: str = "task"
    verbose: bool = True


class LearnerLink(Protocol):
    """The learner's end of the link to its actors."""

    buffer: Any
    num_workers: int
    shares_weights: bool
    """True when the actors act on the learner's own variables (one process): nothing is copied."""

    def start(self, episodes: Callable[[list], None]) -> None:
        """Finished episodes go to ``episodes`` from now on (a list of ``EpisodeStats``)."""

    def poll(self) -> None:
        """Take what arrived: transitions from other nodes, finished episodes, snapshots."""

    def snapshots(self) -> dict[int, tuple[int, Any]]:
        """Each worker's newest ``(mark, state)``."""

    def finished(self) -> np.ndarray:
        """Per worker: True once it sent its last message (it reached its quota or stopped)."""

    def set_updates(self, updates: int) -> None:
        """The count every actor paces itself by."""

    def publish(self, flat: np.ndarray, version: int | None = None) -> int:
        """Hand out the actor's weights (flat float32) as ``version`` (default: the next one);
        returns the version."""

    def restore_workers(self, states: list) -> None:
        """Give each worker the state to continue from (None: start afresh)."""

    def wait_until(self, ready: Callable[[], bool], finished: Callable[[], np.ndarray]) -> None:
        """Poll until ``ready()``; ``finished()`` tells which workers are not waited on."""

    def stop_workers(self) -> None:
        """Make every actor leave its loop and send its last message."""


class ActorLink(Protocol):
    """An actor's end of the link to its learner."""

    index: int
    """This worker's slice (0-based)."""
    rank: int
    """This process's rank in the task (0 in one process): what seeds its streams apart."""
    num_workers: int
    sink: Any
    """Where transitions go: ``write_batch(slice, columns)``."""

    def restore_state(self) -> Any:
        """The state to continue from (None: start afresh)."""

    def poll(self) -> None:
        """Relay what the learner sent, where this rank relays for its node."""

    def updates(self) -> int:
        """The learner's update count."""

    def stopping(self) -> bool:
        """True once the learner asked every actor to stop."""

    def newer_weights(self, version: int) -> tuple[int, list | None] | None:
        """``(version, weights)`` when weights newer than ``version`` were published (weights is
        None where the actor acts on the learner's own variables), else None."""

    def record_episodes(self, episodes: list) -> None:
        """Report finished episodes to the learner."""

    def send_snapshot(self, mark: int, state: Any) -> None:
        """Send a snapshot (transitions written so far travel before it)."""

    def waiting(self, flag: bool) -> None:
        """Say whether this actor is waiting for the learner (for the learner's stall report)."""

    def flush(self) -> None:
        """Send staged transitions now (before a wait)."""

    def finish(self) -> None:
        """After the last snapshot: send what is left and say this actor is done."""
