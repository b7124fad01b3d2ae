"""One trial as an ordinary task: its plan, its evaluation reports to Optuna, and how it ended.

Every rank of a trial's group builds the same task from the same plan (the leader's command-line
values, sent to the group), through ``aquaml.cli.make_train_starter``: a trial's run directory is a
normal ``aquaml train`` run, so ``aquaml eval``, ``plot`` and ``export`` work on it.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Mapping

from aquaml.tuning.config import TuneConfig

COMPLETE, PRUNED, FAIL = "COMPLETE", "PRUNED", "FAIL"
#: Characters of a trial's error kept in the study (the rest is on the console).
ERROR_CHARS = 2000


@dataclasses.dataclass(frozen=True)
class TrialPlan:
    """What every rank of a group needs to run one trial: its number, seed and task settings."""
    number: int
    seed: int
    run_name: str
    cli: Mapping[str, Any]
    tuning: Mapping[str, Any]


def plan_trial(config: TuneConfig, number: int, values: Mapping[str, Any], seed: int, run_name: str,
               resume: bool, threads: int | None) -> TrialPlan:
    """The ``aquaml train`` values of a trial that drew ``values``: the study's env, algorithm and
    budget, the space's fixed entries, the trial's seed and run directory ``study_dir/run_name``."""
    fields, hidden, rate = config.space.settings(values)
    cli = {"env": config.env, "algo": config.algo, "steps": config.steps, "seed": seed, "name": run_name,
           "run_root": config.study_dir, "resume": resume, "hidden": None if hidden is None else list(hidden),
           "learning_rate": rate, "eval_interval": None, "eval_episodes": None,
           "set": [[k, v] for k, v in sorted(fields.items())], "threads": config.threads or threads,
           "checkpoint_interval": config.checkpoint_interval, "keep_checkpoints": 2,
           "no_checkpoint_buffer": not config.checkpoint_buffer, "no_tensorboard": not config.tensorboard,
           "quiet": not config.trial_verbose}
    tuning = {"study": config.study_name, "storage": config.storage, "trial": number, "seed": seed,
              "params": dict(values)}
    return TrialPlan(number, seed, run_name, cli, tuning)


class EvaluationReporter:
    """The task's ``on_evaluation`` on the leader: reports each evaluation's mean return to the
    Optuna trial at its step and asks the pruner; True (prune) stops the task on every rank."""

    def __init__(self, trial: Any, reported: set[int], prune: bool) -> None:
        self.trial, self.reported, self.prune = trial, set(reported), prune
        self.pruned_at: int | None = None

    def __call__(self, step: int, stats: Mapping[str, float]) -> bool:
        if step not in self.reported:  # a resumed trial re-evaluates steps it reported before its stop
            self.trial.report(float(stats["eval/return_mean"]), int(step))
            self.reported.add(step)
        if self.prune and self.trial.should_prune():
            self.pruned_at = int(step)
            return True
        return False


@dataclasses.dataclass
class TrialRun:
    """What one rank saw of a trial: the task's final statistics, its error, and timings."""
    final: dict[str, float]
    error: str | None = None
    build_failed: bool = False
    interrupted: bool = False
    run_dir: str | None = None
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    started_at: float = 0.0
    ended_at: float = 0.0


def build_task(plan: TrialPlan, comm: Any, on_evaluation: Any) -> tuple[Any, str | None]:
    """The trial's RLTaskStarter on ``comm`` (None: one process), or None and the error text."""
    from aquaml.cli import make_train_starter
    try:
        return make_train_starter(dict(plan.cli), mpi_comm=comm, on_evaluation=on_evaluation, abort_on_error=False,
                                  config_extra={"tuning": dict(plan.tuning)}), None
    except Exception as exc:  # noqa: BLE001  (any failure to build is the trial's failure)
        return None, describe(exc)


def run_task(starter: Any) -> TrialRun:
    """Run a built trial task; an exception (on this rank) becomes the trial's error."""
    start = time.perf_counter()
    try:
        final = starter.run()
        outcome = TrialRun(final=final, interrupted=starter.interrupted, run_dir=starter.run_dir)
    except Exception as exc:  # noqa: BLE001  (contained: every rank has left the task)
        outcome = TrialRun(final={}, error=describe(exc), run_dir=starter.run_dir)
    outcome.seconds["run"] = time.perf_counter() - start
    if starter.topology is not None:
        starter.topology.free()
    return outcome


def release_task() -> None:
    """Reset Keras's global state (layer names, graph) after a trial. Without Python's full
    garbage collection: with TensorFlow loaded it takes 0.5-1 s, and the trial's objects are freed
    by reference counting and the collector's own runs anyway."""
    import keras
    keras.backend.clear_session(free_memory=False)


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception, cut to what the study keeps."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS] + "..."


def trial_value(final: Mapping[str, float]) -> float | None:
    """A completed trial's objective: the final evaluation's mean return (None when missing or NaN)."""
    value = final.get("eval/return_mean")
    return None if value is None or math.isnan(value) else float(value)
