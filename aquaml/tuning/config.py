"""TuneConfig: every setting of a tuning job, checked when it is made (before any rank starts)."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

from aquaml.tuning.space import SearchSpace, SpaceError, load_space
from aquaml.tuning.study import is_url

PRUNERS = ("median", "halving", "none")
SAMPLERS = ("tpe", "random")


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """A tuning job: what to tune (``env``, ``algo``, ``space``), how many trials, where the study
    lives (``storage``, ``study_name``), how ranks form groups, and the trials' run settings.
    See ``aquaml.tune`` for each field's meaning.

    Raises:
        ValueError: a field is out of range (the message names it).
        SpaceError: the search space is invalid.
    """
    env: str
    algo: str
    space: SearchSpace
    trials: int
    storage: str
    study_name: str
    group_size: int = 1
    steps: int = 100_000
    seed: int = 0
    run_root: str = "runs"
    pruner: Any = "median"
    sampler: Any = "tpe"
    sampler_startup_trials: int = 10
    pruner_startup_trials: int = 5
    pruner_warmup_steps: int = 0
    enqueue: tuple[Mapping[str, Any], ...] = ()
    heartbeat_interval: int = 20
    grace_period: int = 60
    max_retries: int = 3
    max_failures: int | None = None
    threads: int | None = None
    tensorboard: bool = True
    checkpoint_interval: int | None = None
    checkpoint_buffer: bool = True
    verbose: bool = True
    trial_verbose: bool = False
    report: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.env, str) or not self.env:
            raise ValueError(f"env must be a gymnasium id such as 'CartPole-v1', got {self.env!r}")
        for name in ("trials", "group_size", "steps", "heartbeat_interval", "grace_period"):
            _positive(name, getattr(self, name))
        for name in ("seed", "max_retries", "sampler_startup_trials", "pruner_startup_trials",
                     "pruner_warmup_steps"):
            _non_negative(name, getattr(self, name))
        if self.max_failures is not None:
            _positive("max_failures", self.max_failures)
        if self.threads is not None:
            _positive("threads", self.threads)
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError(f"grace_period ({self.grace_period} s) must exceed heartbeat_interval "
                             f"({self.heartbeat_interval} s), or live trials are taken for dead ones")
        if isinstance(self.pruner, str) and self.pruner not in PRUNERS:
            raise ValueError(f"pruner must be one of {', '.join(PRUNERS)} (or an optuna pruner), got {self.pruner!r}")
        if isinstance(self.sampler, str) and self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)} (or an optuna sampler), got {self.sampler!r}")
        if not isinstance(self.study_name, str) or not self.study_name or os.sep in self.study_name:
            raise ValueError(f"study_name must be a non-empty name without {os.sep!r}, got {self.study_name!r}")
        if self.pruner != "none" and self.space.fixed.get("eval_interval", 1) == 0:
            raise ValueError("pruning needs periodic evaluations, but eval_interval is fixed at 0; "
                             "give eval_interval > 0 or pruner='none'")
        for k, values in enumerate(self.enqueue):
            unknown = set(values) - set(self.space.names)
            if unknown:
                raise SpaceError(f"enqueue[{k}]: {sorted(unknown)} are not searched; searched: {', '.join(self.space.names)}")

    @property
    def study_dir(self) -> str:
        """``run_root/study_name``: the trials' run directories and the report."""
        return os.path.join(self.run_root, self.study_name)

    @property
    def failure_limit(self) -> int:
        """Trials that raised after which the study stops (a broken set-up fails every trial)."""
        return self.trials if self.max_failures is None else self.max_failures

    def signature(self) -> dict[str, Any]:
        """What must not change when the study is continued."""
        return {"env": self.env, "algo": self.algo, "steps": self.steps, "seed": self.seed,
                "space": self.space.to_dict()}


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _non_negative(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")


def default_study_name(storage: str) -> str:
    """A journal file's name without its extension (``runs/pendulum.log`` -> ``pendulum``).

    Raises:
        ValueError: a database URL, which has no file name to take it from.
    """
    if is_url(storage):
        raise ValueError(f"storage {storage!r} is a URL: give the study a name (--study NAME)")
    return os.path.splitext(os.path.basename(storage))[0] or "study"


def make_config(env: str, algo: str, space: Any, trials: int, storage: str, study_name: str | None = None,
                fixed: Mapping[str, Any] | None = None, **settings: Any) -> TuneConfig:
    """A TuneConfig with the space read and checked and the study named (see ``aquaml.tune``)."""
    if not isinstance(algo, str):
        raise ValueError(f"algo must be an algorithm name such as 'sac' or 'ppo', got {algo!r}")
    checked = load_space(space, algo, fixed)
    name = study_name if study_name is not None else default_study_name(storage)
    enqueue = tuple(dict(v) for v in settings.pop("enqueue", ()) or ())
    return TuneConfig(env=env, algo=algo.lower(), space=checked, trials=trials, storage=storage, study_name=name,
                      enqueue=enqueue, **settings)
