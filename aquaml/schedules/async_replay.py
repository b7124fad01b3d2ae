"""Asynchronous replay (off-policy algorithms): actors keep writing transitions, the learner samples and trains.

``ReplayRatio`` holds ``replay_ratio`` updates per environment step both ways: the learner runs the
updates the stored steps allow, each actor pauses once it is ``max_worker_lead`` steps ahead of
what the updates so far allow. Checkpoints: actor ``w`` snapshots itself when its steps reach its
share of each checkpoint mark; once every actor has, the learner writes the checkpoint with the
buffer cut at the snapshotted counts. A stop (a signal, a stopped worker) ends with every actor's
last snapshot and a checkpoint of them.

The same two classes run in one process (``drivers.run_serial``: the actor steps, then the learner
trains what is due, and the last update of a step also computes the next action) and under MPI
(``drivers.run_rank``: each rank loops over its own role).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from aquaml.acting.worker import Worker
from aquaml.schedules.context import ActorLink, LearnerLink, TaskContext
from aquaml.schedules.marks import STOP_MARK, async_marks, flat_weights, share, stopped_worker
from aquaml.schedules.rate import ReplayRatio


class ReplayLearner:
    """The learner of asynchronous replay: trains on everything the actors wrote, publishes weights."""

    def __init__(self, ctx: TaskContext, link: LearnerLink) -> None:
        self.ctx, self.link, self.p, self.algo = ctx, link, ctx.params, ctx.algo
        self.rate = ReplayRatio.of(self.p)
        self.rng = np.random.default_rng(self.p.seed + 1)
        self.updates = 0
        self.marks = async_marks(self.p.total_steps, ctx.checkpoint_interval)
        self.written = 0  # checkpoint marks written so far
        self.checkpointed_at = -1
        self.total = 0
        self._done = False
        self.fused: Any = None  # in one process: the actor whose next action the last update computes

    # --- start ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Continue from the checkpoint in the context (or start afresh), then publish the weights."""
        self.link.start(self.ctx.progress.add_episodes)
        states: list = [None] * self.link.num_workers
        if self.ctx.restored is not None:
            loop, states = self.ctx.checkpoints.restore(self.ctx.restored, self.link.buffer)
            self.updates, self.rate.last_burst = int(loop["updates"]), int(loop.get("last_burst", 0))
            self.rng.bit_generator.state = loop["rng"]
            self.checkpointed_at = self.ctx.restored[1]["step"]
            if self.fused is not None and loop.get("actions") is not None:
                self.fused.next_actions = loop["actions"]
        self.written = sum(1 for m in self.marks if m <= max(self.checkpointed_at, 0))
        self.link.set_updates(self.updates)
        self.link.restore_workers(states)
        self._publish(None)

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the learner."""
        actions = None if self.fused is None else self.fused.next_actions
        return {"updates": self.updates, "last_burst": self.rate.last_burst, "rng": self.rng.bit_generator.state,
                "actions": actions}

    # --- the loop ------------------------------------------------------------------------------
    def running(self) -> bool:
        return not (self._done or self.ctx.stop.requested)

    def work(self) -> bool:
        """Take what arrived, run the updates due, log, checkpoint what every actor has reached.
        Returns whether any update ran."""
        link = self.link
        link.poll()
        self._check_stopped_workers()
        self.total = int(link.buffer.counters.sum())
        finished = bool(link.finished().all())
        due = self.rate.updates_due(self.total, self.updates, final=finished)
        if due:
            self._train(due)
        elif finished:
            self._done = True
        if self.total < self.p.total_steps:  # the last epoch's row is written once, with the final evaluation
            self.ctx.progress.advance(self.total, self.updates)
            self._checkpoint_reached_marks()
        return bool(due)

    def _train(self, due: int) -> None:
        algo, link = self.algo, self.link
        act_next = self.fused is not None and self.p.warmup_steps <= self.total < self.p.total_steps
        per_call = self.p.updates_per_call
        while due > 0:
            count = min(due, per_call)
            fuse = act_next and count == due  # the last update of this step also acts
            flat = None
            if count - fuse:
                metrics, flat = algo.update_many(algo.sample_many(link.buffer, self.rng, count - fuse))
                self.ctx.progress.add_metrics(metrics)
            if fuse:
                metrics, self.fused.next_actions = algo.update_and_act(algo.sample(link.buffer, self.rng),
                                                                       self.fused.worker.obs)
                self.ctx.progress.add_metrics(metrics)
            before, self.updates = self.updates, self.updates + count
            link.set_updates(self.updates)
            if self.updates // self.p.weight_sync_interval > before // self.p.weight_sync_interval:
                self._publish(None if fuse else flat)
            due -= count

    def _publish(self, flat: np.ndarray | None) -> None:
        """Hand out the actor's weights (``flat`` when the last call returned them)."""
        if self.link.shares_weights:
            self.link.publish(None)
        else:
            self.link.publish(flat_weights(self.algo) if flat is None else flat)

    def _check_stopped_workers(self) -> None:
        stopped = stopped_worker(self.link.snapshots())
        if stopped is not None:
            self.ctx.stop.request(f"a signal to rank {stopped + 1} (worker {stopped})")

    def _marks_reached(self) -> int:
        snapshots = self.link.snapshots()
        return min(snapshots[w][0] if w in snapshots else 0 for w in range(self.link.num_workers))

    def _checkpoint_reached_marks(self) -> None:
        if self.written < len(self.marks) - 1:
            reached = self._marks_reached()
            if reached > self.written:
                self.written = min(reached, len(self.marks) - 1)
                self._checkpoint_snapshots()

    def _checkpoint_snapshots(self) -> None:
        snapshots = self.link.snapshots()
        states = [snapshots[w][1] for w in range(self.link.num_workers)]
        counts = np.array([st["worker"]["steps"] for st in states], np.int64)
        # a worker on another node sends its transitions before its snapshot, but as another
        # message: a checkpoint cut short of them would resume that slice with rows missing
        self.link.wait_until(lambda: bool((self.link.buffer.counters >= counts).all()),
                             lambda: self.link.buffer.counters >= counts)
        self.ctx.checkpoints.save(int(counts.sum()), self.state(), states, self.link.buffer, counts)
        self.checkpointed_at = int(counts.sum())

    # --- the end -------------------------------------------------------------------------------
    def finish(self) -> dict[str, float]:
        """The final evaluation (unless stopped) and the last checkpoint, from every actor's last
        snapshot; returns the final evaluation statistics."""
        link = self.link
        link.poll()
        self.total = int(link.buffer.counters.sum())  # an actor may have finished after it was read
        stopped = self.ctx.stop.requested
        if stopped:
            link.stop_workers()
        else:
            self.ctx.progress.advance(self.total, self.updates, finished=True)
        link.wait_until(lambda: self._marks_reached() >= len(self.marks),
                        lambda: np.array([self.link.snapshots().get(w, (0,))[0] >= len(self.marks)
                                          for w in range(self.link.num_workers)]))
        self._checkpoint_snapshots()
        return self.ctx.progress.final


    def abandon(self) -> None:
        """After an exception on the learner: stop every actor and take each one's last snapshot,
        so that every rank leaves the task (nothing is checkpointed)."""
        self.link.stop_workers()
        self.link.wait_until(lambda: self._marks_reached() >= len(self.marks), self.link.finished)


class ReplayActor:
    """An actor of asynchronous replay: steps its environments, writes its slice, keeps pace.

    ``next_actions`` (one process) is the action the learner's last update computed for the
    current observations; the next step takes it instead of calling the policy.
    """

    def __init__(self, ctx: TaskContext, link: ActorLink, policy: Any) -> None:
        self.ctx, self.link, self.p = ctx, link, ctx.params
        w, workers = link.index, link.num_workers
        self.quota = share(self.p.total_steps, workers, w)
        self.warmup = share(self.p.warmup_steps, workers, w)
        self.rate = ReplayRatio.of(self.p)
        self.policy = policy
        self.worker = Worker(ctx.envs, ctx.obs_info, ctx.action_info, policy, link.sink, slice_index=w,
                             seed=self.p.seed + 1000 * link.rank)
        self.thresholds = [share(m, workers, w) for m in async_marks(self.p.total_steps, ctx.checkpoint_interval)]
        self.marks_sent = 0
        self.version = 0
        self.next_actions: dict | None = None

    def start(self) -> None:
        state = self.link.restore_state()
        if state is not None:
            self.worker.load_state_dict(state["worker"])
            if state.get("act_rng") is not None and self.policy.rng is not None:
                self.policy.rng.bit_generator.state = state["act_rng"]
        self.marks_sent = sum(1 for t in self.thresholds if t <= self.worker.steps)

    def snapshot(self) -> dict:
        rng = self.policy.rng
        return {"worker": self.worker.state_dict(), "act_rng": None if rng is None else rng.bit_generator.state}

    def running(self) -> bool:
        return self.worker.steps < self.quota and not (self.link.stopping() or self.ctx.stop.requested)

    def work(self) -> bool:
        """One step of every environment if the pacing allows; returns whether it stepped."""
        link, worker = self.link, self.worker
        link.poll()
        random = worker.steps < self.warmup
        if not random and worker.steps >= self.rate.steps_allowed(link.updates(), link.num_workers):
            link.flush()
            link.waiting(True)
            return False
        self._load_weights()
        if not random and self.version == 0:
            link.waiting(True)
            return False  # the first weights are on their way
        link.waiting(False)
        episodes = worker.step(random=random, actions=self.next_actions)
        self.next_actions = None
        if episodes:
            link.record_episodes(episodes)
        crossed = sum(1 for t in self.thresholds if t <= worker.steps)
        if crossed > self.marks_sent:
            self.marks_sent = crossed
            link.send_snapshot(crossed, self.snapshot())
        return True

    def _load_weights(self) -> None:
        got = self.link.newer_weights(self.version)
        if got is not None:
            self.version, weights = got
            if weights is None:
                self.policy.sync()
            else:
                self.policy.load(weights)

    def finish(self) -> None:
        """The last snapshot: final at the quota (even when resumed already there), else stopped."""
        mark = len(self.thresholds) if self.worker.steps >= self.quota else STOP_MARK
        self.link.send_snapshot(mark, self.snapshot())
        self.link.finish()
