"""Running a schedule's roles: all in one process, or one per MPI rank.

A role (learner or actor) has ``start()``, ``running()``, ``work() -> bool`` (did it make progress)
and ``finish()``. ``run_serial`` alternates the actor and the learner of a one-process task;
``run_rank`` loops over one rank's role, sleeping (``Backoff``) while it has nothing to do. The
roles are the same classes either way (``async_replay``, ``sync_rollouts``); which pair a task gets
follows from its algorithm's class.
"""
from __future__ import annotations

from typing import Any

from aquaml.algos.base import OffPolicyAlgorithm, OnPolicyAlgorithm
from aquaml.parallel.episodes import ring_size
from aquaml.parallel.mpi import Backoff, sleepy_barrier
from aquaml.schedules.async_replay import ReplayActor, ReplayLearner
from aquaml.schedules.context import ActorLink, LearnerLink, TaskContext
from aquaml.schedules.sync_rollouts import RolloutActor, RolloutLearner


def _schedule(algo: Any) -> tuple[type, type]:
    if isinstance(algo, OffPolicyAlgorithm):
        return ReplayLearner, ReplayActor
    if isinstance(algo, OnPolicyAlgorithm):
        return RolloutLearner, RolloutActor
    raise TypeError(f"{type(algo).__name__} is neither an OffPolicyAlgorithm nor an OnPolicyAlgorithm "
                    "(aquaml.algos.base), so no schedule can run it")


def make_actor(ctx: TaskContext, link: ActorLink) -> Any:
    """The actor of ``ctx.algo``'s schedule on ``link``, with the policy it acts with: in one
    process an off-policy actor acts as the learner's ``act`` on its own variables (they change at
    every update, and the last update of a step computes the next action anyway; see
    ``OffPolicyAlgorithm.live_policy``); otherwise a ``HostPolicy`` with a noise stream of its own
    per worker."""
    actor_cls = _schedule(ctx.algo)[1]
    if link.shares_weights and actor_cls is ReplayActor:
        policy = ctx.algo.live_policy()
    else:
        policy = ctx.algo.host_policy(ctx.params.seed + 7919 + 104_729 * link.rank)
    return actor_cls(ctx, link, policy)


def make_learner(ctx: TaskContext, link: LearnerLink) -> Any:
    """The learner of ``ctx.algo``'s schedule on ``link``."""
    return _schedule(ctx.algo)[0](ctx, link)


def run_serial(learner: Any, actor: Any) -> dict[str, float]:
    """One process: the actor steps, then the learner does what is due, until the learner is done.

    An off-policy learner computes the actor's next action with its last update of each step.

    Raises:
        RuntimeError: neither role could make progress (a schedule that would wait forever).
    """
    if isinstance(learner, ReplayLearner):
        learner.fused = actor
    learner.start()
    actor.start()
    actor_done = False
    while learner.running():
        progressed = False
        if not actor_done:
            if actor.running():
                progressed = actor.work()
            else:
                actor.finish()
                actor_done = progressed = True
        progressed |= learner.work()
        if not progressed and learner.running():
            raise RuntimeError("neither the actor nor the learner could make progress: the schedule would wait "
                               "forever in one process")
    if not actor_done:
        actor.finish()
    return learner.finish()


def run_rank(role: Any, link: Any) -> Any:
    """One MPI rank's role, sleeping while it has nothing to do; returns what ``finish()`` returns."""
    role.start()
    backoff = Backoff()
    while role.running():
        if role.work():
            backoff.reset()
            link.busy()
        else:
            link.idle()
            backoff.sleep()
    return role.finish()


def run_mpi_task(ctx: TaskContext, topo: Any, on_learned: Any,
                 abort_on_error: bool = True) -> tuple[dict[str, float], Exception | None]:
    """Run this rank's role of the task under MPI: the learner on rank 0 (``on_learned()`` runs
    after its last checkpoint, before the workers are released), an actor on every other rank.

    Returns the learner's final evaluation (``{}`` on workers) and None, or, on the learner with
    ``abort_on_error=False``, ``({}, the exception)`` its training raised, once every worker has
    been stopped and has left the task (the caller raises it; a worker's exception always aborts).
    """
    from aquaml.parallel.links import MpiActorLink, MpiLearnerLink, NodeState
    learner_cls = _schedule(ctx.algo)[0]
    # synchronous workers run at most a round ahead of the optimizer's reads of their episode rings
    between_reads = 2 * ctx.params.rollout_steps if learner_cls is RolloutLearner else 0
    state = NodeState(topo, ctx.algo.make_buffer, [w.shape for w in ctx.algo.actor_weights()],
                      ring_size(between_reads, ctx.params.envs_per_worker))
    final, failure = {}, None
    if topo.is_optimizer:
        link = MpiLearnerLink(topo, state, ctx.params.stall_timeout)
        learner = make_learner(ctx, link)
        try:
            final = run_rank(learner, link)
            on_learned()
        except Exception as exc:  # noqa: BLE001  (any failure of the task: re-raised, or returned)
            if abort_on_error:
                raise
            failure = exc
            learner.abandon()
        link.close(ctx.verbose, ctx.name)
    else:
        link = MpiActorLink(topo, state, ctx.algo.batch_info)
        run_rank(make_actor(ctx, link), link)
    sleepy_barrier(topo.comm)
    state.close()
    return final, failure
