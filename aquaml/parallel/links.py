"""The learner-actor link over MPI: node-shared windows on a node, messages between nodes.

On every node the ranks share a control block (the learner's update count, the stop flag, each
worker's done and waiting flags) and a weight store (seqlock); on the optimizer's node also the
buffer (a slice per worker) and per-worker rings of finished episodes. Workers on other nodes ship
their transitions and episodes to the optimizer as byte messages, and their node's lowest rank
(its leader) relays the optimizer's weights, update count and stop flag into that node's block.

``MpiLearnerLink`` and ``MpiActorLink`` are the two ends (see ``aquaml.schedules.context``); every
wait polls and sleeps, so waiting ranks cost next to no CPU even with more ranks than cores.
Nothing here knows which algorithm or schedule runs over it.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np

from aquaml.acting.worker import EpisodeStats
from aquaml.buffers.replay import ReplayBuffer
from aquaml.parallel.episodes import EpisodeRingReader
from aquaml.parallel.mpi import POLL_SECONDS, Backoff
from aquaml.parallel.shared import SharedArrayStore
from aquaml.parallel.topology import Topology
from aquaml.parallel.transport import (EPISODE_INFO, LeaderChannel, SnapshotSender, TransitionReceiver,
                                       TransitionSender, receive_from_optimizer, receive_restore, receive_snapshots,
                                       send_restore)
from aquaml.parallel.weights import WeightStore

# control block: [updates, stop, done(worker 0..W-1), waiting(worker 0..W-1)]
UPDATES, STOP, DONE = 0, 1, 2
#: How often the optimizer looks for worker snapshots while it trains or waits for data.
SNAPSHOT_POLL_SECONDS = 0.02


class WorkerStall(RuntimeError):
    """No worker wrote anything for ``stall_timeout`` seconds while the optimizer waited for them."""


class StallWatch:
    """Notices workers that have gone silent: a stuck environment step, a hung or lost rank.

    ``check(activity)`` is called while the optimizer waits on the workers, with a per-worker
    count that grows whenever a worker does anything (rows written, snapshots sent). When none
    has grown for ``timeout`` seconds (0: never), it raises ``WorkerStall`` naming the ranks that
    stayed silent longest.
    """

    def __init__(self, timeout: float, workers: int) -> None:
        self.timeout = float(timeout)
        self._seen = np.full(workers, -1, np.int64)
        self._since = np.full(workers, time.monotonic())

    def check(self, activity: np.ndarray, finished: np.ndarray, waiting: np.ndarray | None = None) -> None:
        """``activity`` per worker; ``finished`` marks workers that are done (never stalled);
        ``waiting`` (1 while a worker waits for the optimizer, -1 where unknown) goes into the report."""
        now = time.monotonic()
        changed = activity != self._seen
        self._since[changed] = now
        self._seen[changed] = activity[changed]
        if not self.timeout:
            return
        waiting_on = np.flatnonzero(~finished)
        silence = now - self._since[waiting_on]
        if len(waiting_on) and silence.min() > self.timeout:
            longest = waiting_on[np.argsort(-silence, kind="stable")]
            state = {1: "waiting for the optimizer", 0: "inside an environment step, or dead",
                     -1: "on another node"}
            raise WorkerStall(f"no worker wrote anything for {self.timeout:.0f} s (stall_timeout): "
                              + "; ".join(f"rank {w + 1} (worker {w}) silent {now - self._since[w]:.0f} s, "
                                          + state[-1 if waiting is None else int(waiting[w])] for w in longest)
                              + ". Aborting so that the job does not wait forever")

    def reset(self) -> None:
        """The optimizer was busy (training, evaluating): waiting starts afresh."""
        self._since[:] = time.monotonic()


class NodeState:
    """What the ranks of one node share: control block and weight store; on the optimizer's node
    also the buffer (``make_buffer(num_slices, store)``) and per-worker rings of finished episodes
    (``ring`` records each)."""

    def __init__(self, topo: Topology, make_buffer: Callable[[int, Any], Any], weight_shapes, ring: int) -> None:
        self.store = SharedArrayStore(topo.node_comm)
        workers = topo.num_workers
        self.control = self.store.allocate({"control": ((DONE + 2 * workers,), np.dtype(np.int64))})["control"]
        #: per worker: 1 while it waits for the optimizer (held back, or waiting for weights)
        self.waiting = self.control[DONE + workers:]
        self.weights = WeightStore(weight_shapes, self.store)
        self.buffer = self.episodes = None
        if topo.on_optimizer_node:
            self.buffer = make_buffer(topo.num_workers, self.store)
            self.episodes = ReplayBuffer(EPISODE_INFO, ring * topo.num_workers, topo.num_workers, self.store)

    def close(self) -> None:
        self.store.close()


def _episode_stats(columns: dict) -> list[EpisodeStats]:
    return [EpisodeStats({"total_reward": float(r)}, int(n), False)
            for r, n in zip(columns["return"], columns["length"])]


class MpiLearnerLink:
    """The optimizer rank's end: reads every worker's slice, takes messages from other nodes,
    hands out weights and the update count on every node."""

    shares_weights = False

    def __init__(self, topo: Topology, state: NodeState, stall_timeout: float) -> None:
        self.topo, self.state, self.buffer = topo, state, state.buffer
        self.num_workers = topo.num_workers
        remote = topo.remote_workers()
        self._num_remote = len(remote)
        self.local_workers = [r - 1 for r in range(1, topo.size) if r not in remote]
        self._episode_sink: Callable[[list], None] = lambda episodes: None
        self.receiver = TransitionReceiver(topo.comm, state.buffer.info, state.buffer,
                                           lambda w, columns: self._episode_sink(_episode_stats(columns))) \
            if remote else None
        self.leaders = LeaderChannel(topo.comm, topo.remote_leaders) if topo.remote_leaders else None
        self.episode_reader = EpisodeRingReader(state.episodes, self.local_workers)
        self.stall = StallWatch(stall_timeout, topo.num_workers)
        self._snapshots: dict[int, tuple[int, Any]] = {}
        self._last_snapshot_poll = -math.inf
        self._updates = 0

    def start(self, episodes: Callable[[list], None]) -> None:
        self._episode_sink = episodes

    def poll(self) -> None:
        if self.receiver is not None:
            self.receiver.poll()
        if self.leaders is not None:
            self.leaders.progress()  # what a busy leader could not take yet
        for _, columns in self.episode_reader.read():
            self._episode_sink(_episode_stats(columns))
        now = time.monotonic()
        if now - self._last_snapshot_poll >= SNAPSHOT_POLL_SECONDS:  # rare messages: no need to probe often
            self._last_snapshot_poll = now
            receive_snapshots(self.topo.comm, self._snapshots)

    def snapshots(self) -> dict[int, tuple[int, Any]]:
        return self._snapshots

    def finished(self) -> np.ndarray:
        done = np.zeros(self.num_workers, bool)
        for w in self.local_workers:
            done[w] = bool(self.state.control[DONE + w])
        for rank in (self.receiver.done if self.receiver is not None else ()):
            done[rank - 1] = True
        return done

    def set_updates(self, updates: int) -> None:
        self._updates = updates
        self.state.control[UPDATES] = updates
        if self.leaders is not None:
            self.leaders.offer(updates)

    def publish(self, flat: np.ndarray, version: int | None = None) -> int:
        self.state.weights.publish_flat(flat, version)
        if self.leaders is not None:
            self.leaders.offer(self._updates, self.state.weights.version, flat)
        return self.state.weights.version

    def restore_workers(self, states: list) -> None:
        send_restore(self.topo.comm, states)

    def _activity(self) -> np.ndarray:
        """Per worker, a count that grows with everything it sends (rows, snapshots)."""
        marks = [self._snapshots[w][0] if w in self._snapshots else 0 for w in range(self.num_workers)]
        return self.buffer.counters + np.array(marks, np.int64)

    def _waiting(self) -> np.ndarray:
        """Per worker: 1 while it waits for the optimizer, 0 while it steps, -1 on other nodes."""
        waiting = np.full(self.num_workers, -1, np.int64)
        waiting[self.local_workers] = self.state.waiting[self.local_workers]
        return waiting

    def busy(self) -> None:
        """The optimizer did work: a wait on the workers starts afresh."""
        self.stall.reset()

    def idle(self) -> None:
        """The optimizer waits on the workers: abort if they have all gone silent."""
        self.stall.check(self._activity(), self.finished(), self._waiting())

    def wait_until(self, ready: Callable[[], bool], finished: Callable[[], np.ndarray]) -> None:
        backoff = Backoff()
        self.stall.reset()
        while not ready():
            self.poll()
            receive_snapshots(self.topo.comm, self._snapshots)
            self.stall.check(self._activity(), finished(), self._waiting())
            backoff.sleep()

    def stop_workers(self) -> None:
        """Raise the stop flag on every node (workers leave their loops and report); once only."""
        self.state.store.fence()
        self.state.control[STOP] = 1
        self.state.store.fence()
        if self.leaders is not None:
            self.leaders.stop()

    def close(self, verbose: bool, name: str) -> None:
        """Tell every worker to stop and take each one's last messages, so that no message is left
        unreceived at MPI_Finalize (which made MPICH's launcher kill a worker after a stopped run)."""
        if self.episode_reader.dropped and verbose:
            print(f"[{name}] {self.episode_reader.dropped} finished-episode records were dropped from the "
                  "statistics (workers finished episodes faster than they were read)", flush=True)
        self.stop_workers()
        self.wait_until(lambda: bool(self.finished().all()), self.finished)


class MpiActorLink:
    """A worker rank's end: its slice of the node's buffer, or messages to the optimizer from
    another node (whose leader also relays the optimizer's messages into the node's block)."""

    shares_weights = False

    def __init__(self, topo: Topology, state: NodeState, batch_info: Any) -> None:
        self.topo, self.state = topo, state
        self.index, self.num_workers, self.rank = topo.worker_index, topo.num_workers, topo.rank
        self.sender = None if topo.on_optimizer_node else TransitionSender(topo.comm, batch_info)
        self.sink = state.buffer if self.sender is None else self.sender
        self.snapshot_sender = SnapshotSender(topo.comm)
        self._waiting = state.waiting[self.index:self.index + 1]

    def restore_state(self) -> Any:
        return receive_restore(self.topo.comm)

    def poll(self) -> None:
        """On another node's leader: move the newest weights and counters into the node's store."""
        self.snapshot_sender.progress()
        if self.sender is None or not self.topo.is_node_leader:
            return
        got = receive_from_optimizer(self.topo.comm)
        if got is not None:
            version, flat, updates, stop = got
            if flat is not None and version > self.state.weights.version:
                self.state.weights.publish_flat(flat, version)
            self.state.control[UPDATES] = max(int(self.state.control[UPDATES]), updates)
            if stop:
                self.state.control[STOP] = 1

    def updates(self) -> int:
        return int(self.state.control[UPDATES])

    def stopping(self) -> bool:
        return bool(self.state.control[STOP])

    def newer_weights(self, version: int) -> tuple[int, list] | None:
        return self.state.weights.read(version)

    def record_episodes(self, episodes: list) -> None:
        if self.sender is not None:
            self.sender.add_episodes(episodes)
            return
        self.state.episodes.write_batch(self.index, {
            "return": np.array([e.ret for e in episodes], np.float64),
            "length": np.array([e.length for e in episodes], np.int64)})

    def send_snapshot(self, mark: int, state: Any) -> None:
        self.flush()  # the transitions before the snapshot travel first
        self.snapshot_sender.send(mark, state)

    def waiting(self, flag: bool) -> None:
        self._waiting[0] = int(flag)

    def flush(self) -> None:
        if self.sender is not None:
            self.sender.flush()

    def busy(self) -> None:
        pass

    def idle(self) -> None:
        pass

    def finish(self) -> None:
        """Send what is left, say this worker is done, and wait (relaying, on a leader) until the
        optimizer tells every worker to stop."""
        self.snapshot_sender.wait()
        if self.sender is not None:
            self.sender.flush(done=True)
            self.sender.wait()
        else:
            self.state.control[DONE + self.index] = 1
        while not bool(self.state.control[STOP]):
            self.poll()
            time.sleep(POLL_SECONDS * 4)
