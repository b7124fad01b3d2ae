"""A group's leader: the one rank of its group that talks to Optuna.

It opens (or continues) the study, claims the next trial under the claim lock, keeps the trial's
heartbeat while it runs, reports its evaluations (``EvaluationReporter``) and tells how it ended:
COMPLETE with the final evaluation's mean return, PRUNED, or FAIL (with the error; a trial stopped
by a signal is also queued again, to continue from its checkpoint).
"""
from __future__ import annotations

import dataclasses
import math
import os
import socket
import time
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from aquaml.tuning.config import TuneConfig
from aquaml.tuning.study import (ClaimLock, Heartbeat, check_signature, claim_lock_path, fail_stale, finished_count,
                                 make_pruner, make_sampler, open_storage, retried_trial, retry_callback)
from aquaml.tuning.trial import COMPLETE, FAIL, PRUNED, EvaluationReporter, TrialPlan, TrialRun, plan_trial, trial_value

#: Longest wait between two looks at a study whose remaining trials are all running elsewhere.
MAX_CLAIM_POLL_SECONDS = 5.0
#: Sleep between polls while a rank waits for its next trial or for the other groups to end.
IDLE_POLL_SECONDS = 0.05


def launch_id() -> str:
    """This launch, as a study's trials record it: host and process, and the SLURM job if any."""
    job = os.environ.get("SLURM_JOB_ID")
    array = os.environ.get("SLURM_ARRAY_TASK_ID")
    where = f"{socket.gethostname()}:{os.getpid()}"
    if job:
        where += f" slurm {os.environ.get('SLURM_ARRAY_JOB_ID', job)}" + (f"_{array}" if array else "")
    return where


@dataclasses.dataclass
class Claimed:
    """A trial this leader runs: Optuna's trial, the plan sent to the group, its reporter."""
    trial: Any
    plan: TrialPlan
    reporter: EvaluationReporter
    heartbeat: Heartbeat
    claimed_at: float
    claim_seconds: float


class StudyLeader:
    """Opens the study (creating it on the first start) and claims, reports and tells its trials."""

    def __init__(self, config: TuneConfig, group_index: int, group_size: int, threads: int | None) -> None:
        self.config, self.group_index, self.group_size, self.threads = config, group_index, group_size, threads
        self.storage = open_storage(config.storage, config.heartbeat_interval, config.grace_period,
                                    config.max_retries)
        os.makedirs(config.study_dir, exist_ok=True)
        self.lock = ClaimLock(claim_lock_path(config.storage, config.study_dir))
        self.launch = launch_id()
        self.end_reason: str | None = None
        self._last_end: float | None = None  # when this rank's previous trial task ended
        pruner = make_pruner(config.pruner, config.pruner_startup_trials, config.pruner_warmup_steps)
        sampler = make_sampler(config.sampler, config.seed, config.sampler_startup_trials)
        with self.lock.held():
            self.study = optuna.create_study(storage=self.storage, study_name=config.study_name, direction="maximize",
                                             load_if_exists=True, pruner=pruner, sampler=sampler)
            check_signature(self.study, config.signature(), config.storage)
            for values in config.enqueue:
                self.study.enqueue_trial(dict(values), skip_if_exists=True)

    def claim(self, stop: Any) -> Claimed | None:
        """The next trial for this group; None once the study has its trials, too many trials
        failed, or ``stop`` was requested. Waits (sleeping) while the remaining trials run elsewhere."""
        start = time.perf_counter()
        poll = min(MAX_CLAIM_POLL_SECONDS, self.config.heartbeat_interval / 2)
        while not stop.requested:
            with self.lock.held():
                claimed = self._claim_now(start)
            if claimed is not None or self.end_reason is not None:
                break
            deadline = time.monotonic() + poll
            while time.monotonic() < deadline and not stop.requested:
                time.sleep(IDLE_POLL_SECONDS)
        else:
            return None
        if claimed is not None and stop.requested:  # a signal came while it was being claimed
            self._fail(claimed, "stopped_by", stop.signal_name or "a stop request", retry=True)
            claimed.heartbeat.stop()
            return None
        return claimed

    def _claim_now(self, start: float) -> Claimed | None:
        """Under the claim lock: fail dead jobs' trials, count, and ask for a trial if one is still needed."""
        fail_stale(self.study)
        trials = self.study.get_trials(deepcopy=False)
        done = finished_count(trials)
        errors = sum(1 for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("error"))
        running = sum(1 for t in trials if t.state == TrialState.RUNNING)
        if done >= self.config.trials:
            self.end_reason = f"{done} trials finished"
            return None
        if errors >= self.config.failure_limit:
            self.end_reason = f"{errors} trials failed with an error (the limit is {self.config.failure_limit})"
            print(f"[{self.config.study_name}] group {self.group_index} stops: {self.end_reason}; see the "
                  f"errors in {self.config.study_dir}/trials.csv", flush=True)
            return None
        if done + running >= self.config.trials:
            return None
        if isinstance(self.config.sampler, str):  # a fresh seed per trial number: parallel groups never repeat draws
            self.study.sampler = make_sampler(self.config.sampler, self.config.seed + len(trials),
                                              self.config.sampler_startup_trials)
        with warnings.catch_warnings():  # Optuna's note that heartbeats are meant for Study.optimize
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = self.study.ask()
        self.storage.record_heartbeat(trial._trial_id)  # at once: a retried trial carries its old heartbeat
        heartbeat = Heartbeat(self.storage, trial._trial_id, self.config.heartbeat_interval).start()
        values = self.config.space.sample(trial)
        return self._plan(trial, values, heartbeat, start)

    def _plan(self, trial: Any, values: dict, heartbeat: Heartbeat, start: float) -> Claimed:
        frozen = self.storage.get_trial(trial._trial_id)
        original = retried_trial(frozen)
        seed = self.config.seed + (trial.number if original is None else original)
        previous = frozen.user_attrs.get("run_dir")
        resume = original is not None and previous is not None and frozen.user_attrs.get("group_size") == self.group_size
        run_name = os.path.basename(previous) if resume else _free_name(self.config.study_dir, f"trial_{trial.number}")
        plan = plan_trial(self.config, trial.number, values, seed, run_name, resume, self.threads)
        attrs = {"seed": seed, "run_dir": os.path.join(self.config.study_dir, run_name),
                 "group_size": self.group_size, "group": self.group_index, "launch": self.launch}
        if original is not None:
            attrs["stopped_by"] = None  # inherited from the trial it retries
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        reporter = EvaluationReporter(trial, set(frozen.intermediate_values),
                                      not isinstance(self.config.pruner, str) or self.config.pruner != "none")
        return Claimed(trial, plan, reporter, heartbeat, time.perf_counter(), time.perf_counter() - start)

    def tell(self, claimed: Claimed, run: TrialRun, signalled: bool, signal_name: str) -> dict[str, Any]:
        """Record how the trial ended; the console row that shows it."""
        ran = time.perf_counter() - claimed.claimed_at
        trial, reporter = claimed.trial, claimed.reporter
        seconds = {"claim": claimed.claim_seconds, **run.seconds}
        if self._last_end is not None:  # the tuning layer's share: tell, claim, plan, agreement
            seconds["between_tasks"] = run.started_at - self._last_end
        self._last_end = run.ended_at
        value = trial_value(run.final)
        try:
            trial.set_user_attr("seconds", {k: round(v, 3) for k, v in seconds.items()})
            if run.error is not None:
                state = self._fail(claimed, "error", run.error)
            elif reporter.pruned_at is not None:
                trial.set_user_attr("pruned_at", reporter.pruned_at)
                self.study.tell(trial, state=TrialState.PRUNED)
                state, value = PRUNED, self._last_report(trial)
            elif signalled or run.interrupted:
                state = self._fail(claimed, "stopped_by", signal_name, retry=True)
            elif value is None:
                state = self._fail(claimed, "error", f"no final evaluation return (got {run.final!r})")
            else:
                self.study.tell(trial, value)
                state = COMPLETE
        except optuna.exceptions.UpdateFinishedTrialError:
            state = "LOST"  # another process failed it as stale; its retry runs it again
        finally:
            claimed.heartbeat.stop()
        return {"trial": trial.number, "state": state, "value": value, "best": self._best(),
                "group": self.group_index, "seconds": ran, "params": claimed.plan.tuning["params"],
                "error": run.error}

    def _fail(self, claimed: Claimed, key: str, text: str, retry: bool = False) -> str:
        claimed.trial.set_user_attr(key, text)
        self.study.tell(claimed.trial, state=TrialState.FAIL)
        if retry:
            retry_callback(self.config.max_retries)(self.study, self.storage.get_trial(claimed.trial._trial_id))
        return FAIL

    def _last_report(self, trial: Any) -> float | None:
        values = self.storage.get_trial(trial._trial_id).intermediate_values
        if not values:
            return None
        value = values[max(values)]
        return None if math.isnan(value) else value

    def _best(self) -> float | None:
        try:
            return self.study.best_value
        except ValueError:  # no completed trial yet
            return None


def _free_name(folder: str, name: str) -> str:
    """``name``, or ``name-2``, ``-3``... when ``folder/name`` already holds files (of an earlier study)."""
    candidate, k = name, 1
    while os.path.isdir(os.path.join(folder, candidate)) and os.listdir(os.path.join(folder, candidate)):
        k += 1
        candidate = f"{name}-{k}"
    return candidate
