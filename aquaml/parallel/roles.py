"""The schedules over MPI: one optimizer rank, worker ranks around it.

Workers step environments and write transitions into their slice of the node's shared buffer (or
ship them to the optimizer from other nodes); the optimizer trains and publishes actor weights.

- ``async`` (off-policy, SAC): the optimizer samples everything written so far. ``replay_ratio``
  holds both ways: the optimizer waits while fewer than ``replay_ratio`` updates per environment
  step are due, and a worker pauses when it runs more than ``max_worker_lead`` steps ahead of what
  the updates so far allow.
- ``sync`` (on-policy, PPO): round ``k`` of a worker fills its segment with weights version
  ``k + 1``; the optimizer waits for every segment, trains once, and publishes version ``k + 2``.
  Weight versions and segment counters are the whole protocol.

Every wait sleeps. Nothing here knows which algorithm it runs: it calls ``update`` or ``train``,
``act``, ``actor_weights`` and ``set_actor_weights`` on it, and reads its ``schedule``.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from aquaml.buffers.replay import ReplayBuffer
from aquaml.run.checkpoint import next_due
from aquaml.parallel.failure import StopRequest
from aquaml.parallel.mpi import POLL_SECONDS, Backoff, sleepy_barrier
from aquaml.parallel.shared import SharedArrayStore
from aquaml.parallel.topology import Topology
from aquaml.parallel.transport import (EPISODE_INFO, SnapshotSender, TransitionReceiver, TransitionSender,
                                       WeightSender, receive_restore, receive_snapshots, receive_weights,
                                       send_restore)
from aquaml.parallel.weights import WeightStore
from aquaml.acting.worker import EpisodeStats, Worker

# control block: [updates, stop, done(worker 0), done(worker 1), ...]
UPDATES, STOP, DONE = 0, 1, 2
EPISODE_RING = 1024
#: The mark of a snapshot sent by a worker that stopped on a signal before its quota.
STOP_MARK = 1 << 40
#: How often the optimizer looks for worker snapshots while it trains or waits for data.
SNAPSHOT_POLL_SECONDS = 0.02


def async_marks(total_steps: int, interval: int) -> list[int]:
    """Total step counts at which an asynchronous run checkpoints (the last one is the end)."""
    if not interval:
        return [total_steps]
    return [min(c * interval, total_steps) for c in range(1, -(-total_steps // interval) + 1)]


def share(total: int, workers: int, index: int) -> int:
    """Worker ``index``'s part of ``total`` when split as evenly as possible."""
    return total // workers + (1 if index < total % workers else 0)


class NodeState:
    """What the ranks of one node share: control block and weight store; on the optimizer's node
    also the replay buffer (a slice per worker) and per-worker rings of finished episodes."""

    def __init__(self, topo: Topology, algo: Any, weight_shapes) -> None:
        self.store = SharedArrayStore(topo.node_comm)
        self.control = self.store.allocate({"control": ((DONE + topo.num_workers,), np.dtype(np.int64))})["control"]
        self.weights = WeightStore(weight_shapes, self.store)
        self.buffer = self.episodes = None
        if topo.on_optimizer_node:
            self.buffer = algo.make_buffer(topo.num_workers, self.store)
            self.episodes = ReplayBuffer(EPISODE_INFO, EPISODE_RING * topo.num_workers, topo.num_workers, self.store)

    def close(self) -> None:
        self.store.close()


class OptimizerRole:
    """Rank 0: trains on everything the workers wrote, publishes weights, logs and evaluates."""

    def __init__(self, starter: Any, topo: Topology, state: NodeState, progress: Any, stop: StopRequest) -> None:
        self.s, self.p, self.topo, self.state, self.progress, self.stop = starter, starter.params, topo, state, progress, stop
        self.rng = np.random.default_rng(self.p.seed + 1)
        self.updates = 0
        self._episodes_read = np.zeros(topo.num_workers, np.int64)
        remote = topo.remote_workers()
        self._num_remote = len(remote)
        self.local_workers = [r - 1 for r in range(1, topo.size) if r not in remote]
        self.receiver = TransitionReceiver(topo.comm, state.buffer.info, state.buffer, self._remote_episodes) \
            if remote else None
        self.weight_sender = WeightSender(topo.comm, topo.remote_leaders) if topo.remote_leaders else None
        self.snapshots: dict[int, tuple[int, dict]] = {}  # worker index -> its newest (mark, state)
        self.rounds_done = 0
        self.checkpointed_at = -1  # the step of the newest checkpoint written by this process
        self._last_snapshot_poll = -math.inf
        self._new_snapshots = False

    def restore(self, restored: tuple[dict, dict] | None) -> None:
        """Continue from a checkpoint (or start afresh): this rank's state, then each worker's."""
        states: list[dict | None] = [None] * self.topo.num_workers
        if restored is not None:
            arrays, state = restored
            self.s.restore_algo(arrays, state, self.state.buffer)
            self.progress.load_state_dict(state["progress"])
            loop = state["loop"]
            self.updates = loop["updates"]
            self.state.control[UPDATES] = self.updates
            self.rng.bit_generator.state = loop["rng"]
            self.rounds_done = loop.get("rounds_done", 0)
            if self.s.algo.schedule == "sync":
                self.state.buffer.restart_at(self.rounds_done)
            states = state["workers"]
            self.checkpointed_at = state["step"]
        send_restore(self.topo.comm, states)

    def checkpoint(self, step: int, workers: list[dict], counts: np.ndarray | None = None) -> None:
        loop = {"updates": self.updates, "rng": self.rng.bit_generator.state, "rounds_done": self.rounds_done}
        self.s.write_checkpoint(step, self.progress, loop, workers, self.state.buffer, counts)
        self.checkpointed_at = step

    def _remote_episodes(self, worker: int, columns: dict) -> None:
        self.progress.add_episodes(_episode_stats(columns))

    def _drain_local_episodes(self) -> None:
        for w in self.local_workers:
            if self.state.episodes.counters[w] > self._episodes_read[w]:
                columns, self._episodes_read[w] = self.state.episodes.rows_since(w, int(self._episodes_read[w]))
                self.progress.add_episodes(_episode_stats(columns))

    def publish(self, force: bool = False, version: int | None = None, flat: np.ndarray | None = None) -> None:
        """Publish the actor's weights as ``version`` (default: the next one) on every node;
        ``flat`` is them already flat (from ``update_many``), else they are read from the actor."""
        if flat is None:
            flat = self.state.weights.flatten(self.s.algo.actor_weights())
        self.state.weights.publish_flat(flat, version)
        if self.weight_sender is not None:
            self.weight_sender.send(flat, self.state.weights.version, self.updates, stop=False, force=force)

    def _all_done(self) -> bool:
        local = all(self.state.control[DONE + w] for w in self.local_workers)
        return local and (self.receiver is None or len(self.receiver.done) == self._num_remote)

    def _poll(self) -> None:
        if self.receiver is not None:
            self.receiver.poll()
        self._drain_local_episodes()
        now = time.monotonic()
        if now - self._last_snapshot_poll >= SNAPSHOT_POLL_SECONDS:  # rare messages: no need to probe often
            self._last_snapshot_poll = now
            self._new_snapshots |= receive_snapshots(self.topo.comm, self.snapshots) > 0

    def _marks(self) -> list[int]:
        return [self.snapshots[w][0] if w in self.snapshots else 0 for w in range(self.topo.num_workers)]

    def _wait_for_marks(self, least: int) -> None:
        """Sleep until every worker's newest snapshot has a mark of at least ``least``."""
        backoff = Backoff()
        while min(self._marks()) < least:
            self._poll()
            self._new_snapshots |= receive_snapshots(self.topo.comm, self.snapshots) > 0
            backoff.sleep()

    def run(self) -> dict[str, float]:
        return self._run_sync() if self.s.algo.schedule == "sync" else self._run_async()

    def _run_sync(self) -> dict[str, float]:
        """PPO's rounds. Every worker snapshots itself at the end of each round, so the state after
        any trained round can be checkpointed: when due, at the end, or on a stop request."""
        p, buffer = self.p, self.state.buffer
        rounds = p.rounds(self.topo.num_workers)
        per_round = p.rollout_steps * p.envs_per_worker * self.topo.num_workers
        first = self.rounds_done
        self.publish(force=True, version=first + 1)  # round k runs on version k + 1, also after a resume
        interval = self.s.checkpoint_interval
        steps, backoff = first * per_round, Backoff()
        next_checkpoint = next_due(steps, interval)
        round_states: list[dict] | None = None
        for k in range(first, rounds):
            backoff.reset()
            while not buffer.complete(k + 1) and not self.stop.requested:
                self._poll()
                backoff.sleep()
            if self.stop.requested:
                break
            self._wait_for_marks(k + 1)  # sent right after each worker's last step of the round
            round_states = [self.snapshots[w][1] for w in range(self.topo.num_workers)]
            self._poll()
            self.progress.add_metrics(self.s.algo.train(buffer.segments()))
            self.updates = self.rounds_done = k + 1
            self.state.control[UPDATES] = self.updates
            steps = (k + 1) * per_round
            finished = k + 1 == rounds
            if not finished:
                self.publish(force=True)  # every version must reach every node: workers wait for it
            self.progress.advance(steps, self.updates, finished=finished)
            if steps >= next_checkpoint or finished:
                self.checkpoint(steps, round_states)
                next_checkpoint = next_due(steps, interval)
        if self.stop.requested and round_states is not None and self.checkpointed_at < steps:
            self.checkpoint(steps, round_states)  # the state after the last trained round
        return self.progress.final

    def _run_async(self) -> dict[str, float]:
        """SAC's free-running schedule. Worker ``w`` snapshots itself when its steps reach its share
        of each checkpoint mark; once every worker has, the optimizer writes the checkpoint with
        the replay buffer cut at the snapshotted counts."""
        p, buffer, control = self.p, self.state.buffer, self.state.control
        self.publish(force=True)
        marks = async_marks(p.total_steps, self.s.checkpoint_interval)
        written = sum(1 for m in marks if m <= max(self.checkpointed_at, 0))
        total, backoff = 0, Backoff()
        while not self.stop.requested:
            self._poll()
            total = int(buffer.counters.sum())
            due = int((total - p.learning_starts) * p.replay_ratio) - self.updates if total >= p.learning_starts else 0
            if due > 0:
                backoff.reset()
                count = min(due, p.updates_per_call)
                metrics, flat = self.s.algo.update_many(self.s.algo.sample_many(buffer, self.rng, count))
                self.progress.add_metrics(metrics)
                before, self.updates = self.updates, self.updates + count
                control[UPDATES] = self.updates
                if self.updates // p.weight_sync_interval > before // p.weight_sync_interval:
                    self.publish(flat=flat)
            elif self._all_done():
                break
            else:  # waiting for transitions: short waits stay short, long ones wake less often
                backoff.sleep()
            if total < p.total_steps:  # the last epoch's row is written once, with the final evaluation
                self.progress.advance(total, self.updates)
                if self._new_snapshots and written < len(marks) - 1:
                    self._new_snapshots = False
                    reached = min(self._marks())
                    if reached > written:
                        written = min(reached, len(marks) - 1)
                        self._checkpoint_snapshots()
        self._drain_local_episodes()
        if self.stop.requested:
            self.stop_workers()
            self._wait_for_marks(len(marks))  # every worker's last snapshot (final or stopped)
            self._checkpoint_snapshots()
            return self.progress.final
        self.progress.advance(total, self.updates, finished=True)
        self._wait_for_marks(len(marks))
        self._checkpoint_snapshots()
        return self.progress.final

    def _checkpoint_snapshots(self) -> None:
        states = [self.snapshots[w][1] for w in range(self.topo.num_workers)]
        counts = np.array([st["worker"]["steps"] for st in states], np.int64)
        self.checkpoint(int(counts.sum()), states, counts)

    def stop_workers(self) -> None:
        """Raise the stop flag on every node (workers leave their loops and report)."""
        self.state.store.fence()
        self.state.control[STOP] = 1
        self.state.store.fence()
        if self.weight_sender is not None:
            flat = self.state.weights.read_flat(0)[1]
            self.weight_sender.send(flat, self.state.weights.version, self.updates, stop=True, force=True)

    def abandon(self) -> None:
        """After an exception on this rank: stop every worker as a stop request would and take
        each one's last messages (its terminal snapshot included), so that every rank leaves the task."""
        if self.s.algo.schedule == "async":
            self.stop_workers()
            self._wait_for_marks(len(async_marks(self.p.total_steps, self.s.checkpoint_interval)))
        self.finish()

    def finish(self) -> None:
        """Tell every worker to stop (shared flag here, a message to other nodes' leaders) and take
        each one's last snapshot message, so that no message is left unreceived at MPI_Finalize
        (which made MPICH's launcher kill a worker after a stopped PPO run)."""
        self.stop_workers()
        if self.s.algo.schedule == "sync":
            self._wait_for_marks(STOP_MARK)
        if self.weight_sender is not None:
            self.weight_sender.wait()
        while not self._all_done():
            self._poll()  # stopped early: take the workers' last messages so their sends complete
            time.sleep(POLL_SECONDS)


def _episode_stats(columns: dict) -> list[EpisodeStats]:
    return [EpisodeStats({"total_reward": float(r)}, int(n), False)
            for r, n in zip(columns["return"], columns["length"])]


class WorkerRole:
    """A worker rank: steps its environments, writes its slice, keeps pace with the optimizer."""

    def __init__(self, starter: Any, topo: Topology, state: NodeState, stop: StopRequest) -> None:
        self.s, self.p, self.topo, self.state, self.stop = starter, starter.params, topo, state, stop
        w = topo.worker_index
        self.sync = starter.algo.schedule == "sync"
        if self.sync:
            self.round_steps = self.p.rollout_steps * self.p.envs_per_worker
            self.quota = self.p.rounds(topo.num_workers) * self.round_steps
            self.warmup = 0
        else:
            self.quota = share(self.p.total_steps, topo.num_workers, w)
            self.warmup = share(self.p.warmup_steps, topo.num_workers, w)
        self.sender = None if topo.on_optimizer_node else TransitionSender(topo.comm, starter.algo.batch_info)
        sink = state.buffer if self.sender is None else self.sender
        # acts in numpy where the actor allows (aquaml.acting.inference), with its own noise stream;
        # it takes new weights when _load_weights syncs it
        self.policy = starter.algo.host_policy(self.p.seed + 7919 + 104_729 * (w + 1))
        self.worker = Worker(starter.envs, starter.obs_info, starter.action_info, self.policy, sink,
                             slice_index=w, seed=self.p.seed + 1000 * (w + 1))
        self.version = 0
        self.snapshot_sender = SnapshotSender(topo.comm)
        # async: the steps at which this worker snapshots itself, its share of each checkpoint mark
        self.thresholds = [share(m, topo.num_workers, w)
                           for m in async_marks(self.p.total_steps, starter.checkpoint_interval)]
        self.marks_sent = 0

    def restore(self, state: dict | None) -> None:
        """Continue from this worker's snapshot in a checkpoint (None: start afresh)."""
        if state is None:
            return
        self.worker.load_state_dict(state["worker"])
        if "act_rng" in state:  # checkpoints from before numpy acting kept TensorFlow's noise state
            self.policy.rng.bit_generator.state = state["act_rng"]
        self.marks_sent = sum(1 for t in self.thresholds if t <= self.worker.steps)

    def snapshot(self) -> dict:
        return {"worker": self.worker.state_dict(), "act_rng": self.policy.rng.bit_generator.state}

    def _maybe_snapshot(self) -> None:
        """After a step: snapshot at the end of a round (sync) or on reaching a mark (async)."""
        steps = self.worker.steps
        if self.sync:
            if steps % self.round_steps == 0:
                self.snapshot_sender.send(steps // self.round_steps, self.snapshot())
            return
        crossed = sum(1 for t in self.thresholds if t <= steps)
        if crossed > self.marks_sent:
            if self.sender is not None:
                self.sender.flush()  # the transitions before the snapshot travel first
            self.marks_sent = crossed
            self.snapshot_sender.send(crossed, self.snapshot())

    def _allowed_steps(self) -> int:
        if self.sync:  # round k runs on weights version k + 1 (a version per finished round)
            return self.version * self.round_steps
        updates = int(self.state.control[UPDATES])
        allowed_total = self.p.learning_starts + updates / self.p.replay_ratio
        return math.ceil(allowed_total / self.topo.num_workers) + self.p.max_worker_lead

    def _poll_leader_messages(self) -> None:
        """On another node's leader: move the newest weights and counters into the node's store."""
        if self.sender is None or not self.topo.is_node_leader:
            return
        got = receive_weights(self.topo.comm)
        if got is not None:
            version, updates, stop, flat = got
            if version > self.state.weights.version:
                self.state.weights.publish_flat(flat, version)
            self.state.control[UPDATES] = updates
            if stop:
                self.state.control[STOP] = 1

    def _load_weights(self) -> None:
        got = self.state.weights.read(self.version)
        if got is not None:
            self.version, weights = got
            self.policy.load(weights)  # numpy: straight into the act program (~30 us, not ~1 ms)

    def _stopping(self) -> bool:
        return self.stop.requested or bool(self.state.control[STOP])

    def run(self) -> None:
        worker, backoff = self.worker, Backoff()
        while worker.steps < self.quota and not self._stopping():
            self._poll_leader_messages()
            random = worker.steps < self.warmup
            if self.sync:
                self._load_weights()  # a new version comes once per round: loading it is what unblocks
            if not random and worker.steps >= self._allowed_steps():
                if self.sender is not None:
                    self.sender.flush()
                # waiting for a training round (sync) or for updates (async): a worker held back
                # is max_worker_lead steps ahead, so waking every few ms costs the optimizer
                # nothing, where waking every 0.5 ms took 15% of a core per worker
                backoff.sleep()
                continue
            backoff.reset()
            self._load_weights()
            if not random and self.version == 0:
                time.sleep(POLL_SECONDS)  # the first weights are on their way
                continue
            episodes = worker.step(random=random)
            if episodes:
                self._record(episodes)
            self._maybe_snapshot()
            self.snapshot_sender.progress()
        if self.sync:  # the last message: the optimizer takes every snapshot up to this one
            self.snapshot_sender.send(STOP_MARK, None)
        else:  # always a terminal snapshot: final at the quota (even when resumed already there), else stopped
            if self.sender is not None:
                self.sender.flush()
            mark = len(self.thresholds) if worker.steps >= self.quota else STOP_MARK
            self.snapshot_sender.send(mark, self.snapshot())
        self.snapshot_sender.wait()
        if self.sender is not None:
            self.sender.flush(done=True)
            self.sender.wait()
        else:
            self.state.control[DONE + self.topo.worker_index] = 1
        while not bool(self.state.control[STOP]):
            self._poll_leader_messages()
            time.sleep(POLL_SECONDS * 4)

    def _record(self, episodes: list) -> None:
        if self.sender is not None:
            self.sender.add_episodes(episodes)
            return
        self.state.episodes.write_batch(self.topo.worker_index, {
            "return": np.array([e.ret for e in episodes], np.float64),
            "length": np.array([e.length for e in episodes], np.int64)})


def run_task(starter: Any, topo: Topology,
             progress_factory: Any) -> tuple[dict[str, float], StopRequest, Exception | None]:
    """Run one task on every rank of ``topo``; the optimizer returns its final evaluation (and
    every rank its StopRequest, which says whether a signal cut the run short).

    ``progress_factory(stop)`` makes the optimizer's Progress. The third value is None, or, on the
    optimizer of a starter with ``abort_on_error=False``, the exception its training raised after
    every rank has left the task cleanly (the caller raises it).
    """
    stop = StopRequest()
    state = NodeState(topo, starter.algo, [w.shape for w in starter.algo.actor_weights()])
    failure = None
    try:
        if topo.is_optimizer:
            role = OptimizerRole(starter, topo, state, progress_factory(stop), stop)
            role.restore(starter.restored)
            final, failure = _optimize(starter, role)
            if failure is None:
                role.finish()
            else:
                role.abandon()
        else:
            worker = WorkerRole(starter, topo, state, stop)
            worker.restore(receive_restore(topo.comm))
            worker.run()
            final = {}
        sleepy_barrier(topo.comm)
    finally:
        stop.restore()
    state.close()
    return final, stop, failure


def _optimize(starter: Any, role: OptimizerRole) -> tuple[dict[str, float], Exception | None]:
    """Train and save; an exception is returned instead of raised when the starter contains errors."""
    try:
        final = role.run()
        starter.save_final()
    except Exception as exc:  # noqa: BLE001  (any failure of the task; the caller raises it)
        if starter.abort_on_error:
            raise
        return {}, exc
    return final, None
