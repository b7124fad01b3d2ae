"""Synchronous rollouts (on-policy algorithms): rounds of segments, weight versions as the protocol.

Round ``k`` of every actor fills its segment of ``rollout_steps`` steps per environment with
weights version ``k + 1``; the learner waits for every segment (and every actor's end-of-round
snapshot), trains once, and publishes version ``k + 2``. The state after any trained round can
be checkpointed: when due, at the end, or on a stop request (a round in progress is discarded and
redone on resume, which keeps the run exact). The same classes run in one process and under MPI.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from aquaml.acting.worker import Worker
from aquaml.run.checkpoint import next_due
from aquaml.schedules.context import ActorLink, LearnerLink, TaskContext
from aquaml.schedules.marks import END_MARK, STOP_MARK, flat_weights, stopped_worker


class RolloutLearner:
    """The learner of synchronous rollouts: one training round per complete set of segments."""

    def __init__(self, ctx: TaskContext, link: LearnerLink) -> None:
        self.ctx, self.link, self.p, self.algo = ctx, link, ctx.params, ctx.algo
        self.rounds = self.p.rounds(link.num_workers)
        self.per_round = self.p.rollout_steps * self.p.envs_per_worker * link.num_workers
        self.rounds_done = 0
        self.rng = np.random.default_rng(self.p.seed + 1)
        self.checkpointed_at = -1
        self.next_checkpoint: float = math.inf
        self.round_states: list | None = None

    def start(self) -> None:
        self.link.start(self.ctx.progress.add_episodes)
        states: list = [None] * self.link.num_workers
        if self.ctx.restored is not None:
            loop, states = self.ctx.checkpoints.restore(self.ctx.restored, self.link.buffer)
            self.rounds_done = int(loop["rounds_done"])
            self.rng.bit_generator.state = loop["rng"]
            self.link.buffer.restart_at(self.rounds_done)
            self.checkpointed_at = self.ctx.restored[1]["step"]
        self.next_checkpoint = next_due(self.rounds_done * self.per_round, self.ctx.checkpoint_interval)
        self.link.set_updates(self.rounds_done)
        self.link.restore_workers(states)
        self._publish(self.rounds_done + 1)  # round k runs on version k + 1, also after a resume

    def state(self) -> dict[str, Any]:
        return {"rounds_done": self.rounds_done, "updates": self.rounds_done, "rng": self.rng.bit_generator.state}

    def _publish(self, version: int) -> None:
        self.link.publish(None if self.link.shares_weights else flat_weights(self.algo), version)

    def running(self) -> bool:
        return self.rounds_done < self.rounds and not self.ctx.stop.requested

    def _round_ready(self) -> bool:
        k = self.rounds_done
        snapshots = self.link.snapshots()
        marks = [snapshots[w][0] if w in snapshots else 0 for w in range(self.link.num_workers)]
        return self.link.buffer.complete(k + 1) and min(marks) >= k + 1

    def work(self) -> bool:
        """Train once every segment of the round (and its snapshot) is in; returns whether it did."""
        self.link.poll()
        stopped = stopped_worker(self.link.snapshots())
        if stopped is not None:
            self.ctx.stop.request(f"a signal to rank {stopped + 1} (worker {stopped})")
            return False
        if not self._round_ready():
            return False
        snapshots = self.link.snapshots()
        self.round_states = [snapshots[w][1] for w in range(self.link.num_workers)]
        self.link.poll()  # the round's last finished episodes
        self.ctx.progress.add_metrics(self.algo.train(self.link.buffer.segments()))
        self.rounds_done += 1
        self.link.set_updates(self.rounds_done)
        steps = self.rounds_done * self.per_round
        finished = self.rounds_done == self.rounds
        if not finished:
            self._publish(self.rounds_done + 1)  # actors wait for it
        self.ctx.progress.advance(steps, self.rounds_done, finished=finished)
        if steps >= self.next_checkpoint or finished:
            self._checkpoint(steps)
            self.next_checkpoint = next_due(steps, self.ctx.checkpoint_interval)
        return True

    def _checkpoint(self, steps: int) -> None:
        self.ctx.checkpoints.save(steps, self.state(), self.round_states, self.link.buffer)
        self.checkpointed_at = steps

    def finish(self) -> dict[str, float]:
        """On a stop, the checkpoint of the last trained round (if not written yet); then every
        actor's last message. Returns the final evaluation statistics."""
        steps = self.rounds_done * self.per_round
        if self.ctx.stop.requested and self.round_states is not None and self.checkpointed_at < steps:
            self._checkpoint(steps)
        self.link.stop_workers()
        self.link.wait_until(self._all_ended, self._ended)
        return self.ctx.progress.final

    def abandon(self) -> None:
        """After an exception on the learner: stop every actor and take each one's last message,
        so that every rank leaves the task (nothing is checkpointed)."""
        self.link.stop_workers()
        self.link.wait_until(self._all_ended, self._ended)

    def _ended(self) -> np.ndarray:
        snapshots = self.link.snapshots()
        return np.array([snapshots.get(w, (0,))[0] >= STOP_MARK for w in range(self.link.num_workers)])

    def _all_ended(self) -> bool:
        return bool(self._ended().all())


class RolloutActor:
    """An actor of synchronous rollouts: fills one segment per round with that round's weights."""

    def __init__(self, ctx: TaskContext, link: ActorLink, policy: Any) -> None:
        self.ctx, self.link, self.p = ctx, link, ctx.params
        self.round_steps = self.p.rollout_steps * self.p.envs_per_worker
        self.quota = self.p.rounds(link.num_workers) * self.round_steps
        self.policy = policy
        self.worker = Worker(ctx.envs, ctx.obs_info, ctx.action_info, policy, link.sink, slice_index=link.index,
                             seed=self.p.seed + 1000 * link.rank)
        self.version = 0

    def start(self) -> None:
        state = self.link.restore_state()
        if state is not None:
            self.worker.load_state_dict(state["worker"])
            if state.get("act_rng") is not None:
                self.policy.rng.bit_generator.state = state["act_rng"]

    def snapshot(self) -> dict:
        return {"worker": self.worker.state_dict(), "act_rng": self.policy.rng.bit_generator.state}

    def running(self) -> bool:
        return self.worker.steps < self.quota and not (self.link.stopping() or self.ctx.stop.requested)

    def work(self) -> bool:
        """One step of every environment when this round's weights are in; returns whether it stepped."""
        link, worker = self.link, self.worker
        link.poll()
        got = link.newer_weights(self.version)  # a new version comes once per round: it is what unblocks
        if got is not None:
            self.version, weights = got
            self.policy.sync() if weights is None else self.policy.load(weights)
        if worker.steps >= self.version * self.round_steps:
            link.flush()
            link.waiting(True)
            return False
        link.waiting(False)
        episodes = worker.step()
        if episodes:
            link.record_episodes(episodes)
        if worker.steps % self.round_steps == 0:
            link.send_snapshot(worker.steps // self.round_steps, self.snapshot())
        return True

    def finish(self) -> None:
        """The last message: every snapshot up to this one is the learner's to take."""
        self.link.send_snapshot(END_MARK if self.worker.steps >= self.quota else STOP_MARK, None)
        self.link.finish()
