"""Trials as rank groups: one launch of K x G ranks runs K trials at a time, each on G ranks.

``COMM_WORLD`` is split into K groups of G consecutive ranks (``comm.Split``). Each group runs one
trial at a time as an ordinary task on its own communicator (a duplicate per trial, so nothing a
trial leaves behind can reach the next): the group's rank 0 is the task's optimizer and the only
rank that talks to Optuna (claim, report, tell); it sends the trial's plan to its group. G = 1 runs
a one-process trial on every rank; a plain process (no MPI) is one group of one.

Failures: an exception while a trial's task is built (on any rank of the group) or on the leader
while it trains fails that trial and the group takes the next one; a worker rank that raises while
training aborts the job (as every MPI task does: no rank may hang on a dead peer), and the trials
that were running are retried when the same command runs again. A signal (SIGTERM, SIGINT) stops
every group's task at a clean point; the trials running then are failed and queued again.
Waiting ranks sleep.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any

import numpy as np

from aquaml.parallel.devices import usable_cores
from aquaml.parallel.failure import StopRequest, report_and_abort
from aquaml.parallel.mpi import Backoff, launched_ranks, mpi
from aquaml.tuning.config import TuneConfig
from aquaml.tuning.leader import IDLE_POLL_SECONDS, StudyLeader
from aquaml.tuning.report import print_header, print_row, summarize, write_report
from aquaml.tuning.trial import EvaluationReporter, TrialPlan, TrialRun, build_task, release_task, run_task

TAG_PLAN, TAG_ERROR = 91, 92


class Group:
    """This rank's group: its communicator (None in a plain process), its index among the groups,
    and the few messages a group exchanges between trials, each waited for without spinning."""

    def __init__(self, world: Any, size: int) -> None:
        if world is None:
            self.comm, self.index, self.count = None, 0, 1
            return
        self.index, self.count = world.Get_rank() // size, world.Get_size() // size
        self.comm = world.Split(color=self.index, key=world.Get_rank())

    @property
    def size(self) -> int:
        return 1 if self.comm is None else self.comm.Get_size()

    @property
    def rank(self) -> int:
        return 0 if self.comm is None else self.comm.Get_rank()

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    def share_plan(self, plan: TrialPlan | None) -> TrialPlan | None:
        """The leader's plan (None: no more trials) on every rank of the group."""
        if self.size == 1:
            return plan
        if self.is_leader:
            message = None if plan is None else dataclasses.asdict(plan)
            for request in [self.comm.isend(message, dest=r, tag=TAG_PLAN) for r in range(1, self.size)]:
                _sleep_until(request.Test)
            return plan
        _sleep_until(lambda: self.comm.iprobe(source=0, tag=TAG_PLAN), IDLE_POLL_SECONDS)
        message = self.comm.recv(source=0, tag=TAG_PLAN)
        return None if message is None else TrialPlan(**message)

    def flags(self, flag: bool) -> np.ndarray:
        """Every rank's ``flag``, on every rank (one sleepy allreduce)."""
        mine = np.zeros(self.size, np.int64)
        mine[self.rank] = int(flag)
        if self.size == 1:
            return mine.astype(bool)
        total = np.zeros_like(mine)
        request = self.comm.Iallreduce(mine, total, op=mpi().SUM)
        _sleep_until(request.Test)
        return total.astype(bool)

    def first_error(self, error: str | None, failed: np.ndarray) -> str | None:
        """On the leader, the error of the lowest failed rank (``rank r: ...`` for another rank)."""
        if not failed.any():
            return None
        if self.is_leader:
            if error is not None:
                return error
            first = int(np.flatnonzero(failed)[0])
            _sleep_until(lambda: self.comm.iprobe(source=first, tag=TAG_ERROR))
            return f"rank {first} of the group: {self.comm.recv(source=first, tag=TAG_ERROR)}"
        if error is not None and self.rank == int(np.flatnonzero(failed)[0]):
            _sleep_until(self.comm.isend(error, dest=0, tag=TAG_ERROR).Test)
        return None

    def trial_comm(self) -> Any:
        """The communicator of one trial's task: a duplicate of the group's (its own size-1
        communicator for G = 1: a task given none would take all of COMM_WORLD)."""
        return self.comm.Dup() if self.comm is not None and self.size > 1 else self.comm

    def release(self, comm: Any) -> None:
        if comm is not None and comm is not self.comm:
            comm.Free()


def _sleep_until(done: Any, seconds: float | None = None) -> None:
    """Call ``done()`` until it is true, sleeping in between (MPICH's blocking calls spin)."""
    backoff = Backoff()
    while not done():
        if seconds is None:
            backoff.sleep()
        else:
            time.sleep(seconds)


def default_threads(world: Any, group: Group) -> int | None:
    """Optimizer threads when the user gives none and several groups share a node: the cores left
    by the node's workers, split between its optimizers (at least 1). None (the task's own default)
    when the group is alone on its node."""
    if world is None:
        return None
    MPI = mpi()
    node = world.Split_type(MPI.COMM_TYPE_SHARED, key=world.Get_rank())
    leaders = node.allreduce(int(group.is_leader), op=MPI.SUM)
    size = node.Get_size()
    node.Free()
    if leaders <= 1:
        return None
    return max(1, (usable_cores() - (size - leaders)) // leaders)


def run_trial(plan: TrialPlan, group: Group, reporter: EvaluationReporter | None) -> TrialRun:
    """Build and run one trial on every rank of the group (collective over the group)."""
    start = time.perf_counter()
    comm = group.trial_comm()
    starter, error = build_task(plan, comm, reporter)
    failed = group.flags(error is not None)
    built = time.perf_counter()
    if failed.any():  # some rank could not build the task: no rank starts it
        run = TrialRun(final={}, error=group.first_error(error, failed), build_failed=True)
    else:
        run = run_task(starter)
    run.ended_at = time.perf_counter()
    group.release(comm)
    del starter
    release_task()
    run.started_at, run.seconds["build"] = start, built - start
    return run


class StudyOpenError(ValueError):
    """The study could not be opened (another study's settings, an unwritable journal...); raised
    on every rank of the launch, which all agree on it before any trial starts."""


def open_leader(config: TuneConfig, world: Any, group: Group, threads: int | None) -> StudyLeader | None:
    """The group leader's StudyLeader (None on other ranks), once every leader has opened the study.

    Raises:
        StudyOpenError: on every rank, when a leader could not open it (its message on that rank).
    """
    leader, error = None, None
    if group.is_leader:
        try:
            leader = StudyLeader(config, group.index, group.size, threads)
        except (ValueError, OSError) as exc:
            error = str(exc)
    if world is not None:
        mine, anyone = np.array([int(error is not None)]), np.zeros(1, np.int64)
        request = world.Iallreduce(mine, anyone, op=mpi().MAX)
        _sleep_until(request.Test)
        if anyone[0] and error is None:
            error = "another group's leader could not open the study (its rank printed why)"
    if error is not None:
        raise StudyOpenError(error)
    return leader


def run_group(config: TuneConfig, group: Group, leader: StudyLeader | None, stop: StopRequest) -> None:
    """This rank's part of the study: trials until the study has its trials or a signal stops it."""
    while True:
        claimed = leader.claim(stop) if leader is not None else None
        plan = group.share_plan(None if claimed is None else claimed.plan)
        if plan is None:
            break
        run = run_trial(plan, group, None if claimed is None else claimed.reporter)
        signalled = bool(group.flags(stop.signal_name is not None).any())
        if leader is not None:
            row = leader.tell(claimed, run, signalled, stop.signal_name or "a signal to the group")
            if config.verbose:
                print_row(row)
        if signalled:
            break


def run_study(config: TuneConfig, comm: Any = None) -> dict[str, Any] | None:
    """Run the study on every rank of ``comm`` (None: COMM_WORLD when launched as several ranks,
    else this process alone); world rank 0 then writes the report and returns its summary.

    Raises:
        ValueError: the ranks do not form whole groups of ``config.group_size``.
        StudyOpenError: the study could not be opened (e.g. it was started with other settings).
    """
    world = comm if comm is not None else (mpi().COMM_WORLD if launched_ranks() > 1 else None)
    ranks = 1 if world is None else world.Get_size()
    if ranks % config.group_size:
        raise ValueError(f"group_size {config.group_size} does not divide the {ranks} ranks of this launch "
                         f"(launch K x {config.group_size} ranks for K groups)")
    stop = StopRequest()
    try:
        return _run_study(config, world, stop)
    except StudyOpenError:  # every rank raises it: nobody waits
        raise
    except BaseException as exc:  # as in a task: a rank that fails must not leave the others waiting
        if world is not None:
            report_and_abort(world, "tuning", exc)
        raise
    finally:
        stop.restore()
        sys.stdout.flush()


def _run_study(config: TuneConfig, world: Any, stop: StopRequest) -> dict[str, Any] | None:
    group = Group(world, config.group_size)
    threads = default_threads(world, group)
    leader = open_leader(config, world, group, threads)
    first = world is None or world.Get_rank() == 0
    if first and config.verbose:
        print(f"[{config.study_name}] {group.count} group(s) of {config.group_size} rank(s); "
              f"storage {config.storage}; trials in {config.study_dir}", flush=True)
        print_header()
    run_group(config, group, leader, stop)
    if world is not None:
        _sleep_until(world.Ibarrier().Test, IDLE_POLL_SECONDS)  # groups end at different times
    if not first:
        return None
    summary = summarize(config.storage, config.study_name)
    if config.report:
        summary["report"] = write_report(config.storage, config.study_name, config.study_dir)
    if stop.signal_name is not None and config.verbose:
        print(f"[{config.study_name}] stopped by {stop.signal_name}: the trials that were running are "
              f"failed and queued again; run the same command to continue", flush=True)
    return summary
