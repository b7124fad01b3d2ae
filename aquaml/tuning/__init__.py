"""Hyperparameter tuning on Optuna, with trials as MPI rank groups (``aquaml.tune``, ``aquaml tune``).

Modules: ``space`` (search spaces: reading and checking), ``config`` (TuneConfig), ``study``
(storage, heartbeat, sampler, pruner, claim lock), ``trial`` (one trial as a task), ``leader``
(the rank that talks to Optuna), ``groups`` (rank groups and the study loop), ``report``
(console rows, best.json, trials.csv, figures). See docs/tuning.md.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from aquaml.tuning.space import SearchSpace, SpaceError, load_space


def tune(env: str, algo: str, space: str | Mapping[str, Any] | SearchSpace, trials: int, storage: str, *,
         group_size: int = 1, study_name: str | None = None, steps: int = 100_000, seed: int = 0,
         run_root: str = "runs", pruner: Any = "median", sampler: Any = "tpe",
         fixed: Mapping[str, Any] | None = None, enqueue: Sequence[Mapping[str, Any]] = (),
         sampler_startup_trials: int = 10, pruner_startup_trials: int = 5, pruner_warmup_steps: int = 0,
         heartbeat_interval: int = 20, grace_period: int = 60, max_retries: int = 3,
         max_failures: int | None = None, threads: int | None = None, tensorboard: bool = True,
         checkpoint_interval: int | None = None, checkpoint_buffer: bool = True, verbose: bool = True,
         trial_verbose: bool = False, report: bool = True, comm: Any = None) -> dict[str, Any] | None:
    """Tune ``algo`` on the gymnasium environment ``env`` over ``space`` with Optuna, until the
    study has ``trials`` trials completed or pruned (counted across restarts and jobs).

    Call it on every rank: under ``mpiexec -n K*G`` (or srun) the ranks form K groups of
    ``group_size`` ranks, each running one trial at a time (its rank 0 the optimizer); in a plain
    process it runs the trials one after the other. The same call again continues the study.

    Args:
        env: gymnasium id (``'module:Env-v0'`` imports ``module`` first, to register it).
        algo: ``'sac'`` or ``'ppo'``.
        space: a .json/.yaml/.yml file, a dict of the same structure, or a SearchSpace
            (``aquaml.tuning.space`` gives the format).
        trials: trials to complete or prune in all.
        storage: a journal file (e.g. ``runs/study.log``; no server, works on a shared
            filesystem) or an Optuna storage URL (``postgresql://...``).
        group_size: ranks per trial (1 optimizer + ``group_size - 1`` workers).
        study_name: the study's name (default: the journal file's name without extension);
            trials run in ``run_root/study_name/trial_<n>``.
        steps: environment steps of every trial.
        seed: the study's seed: trial ``n`` trains with seed ``seed + n`` and is sampled from
            seed ``seed + n``.
        pruner: ``'median'``, ``'halving'`` (successive halving), ``'none'``, or an Optuna pruner;
            trials report every evaluation's mean return (``eval_interval`` steps apart).
        sampler: ``'tpe'``, ``'random'``, or an Optuna sampler.
        fixed: more fixed entries (algorithm fields or model settings), beside the space's own.
        enqueue: parameter sets to try first (e.g. the defaults), each once per study.
        sampler_startup_trials: TPE's random trials before it models the results.
        pruner_startup_trials, pruner_warmup_steps: the median pruner prunes only after this many
            trials finished, and not before this many steps.
        heartbeat_interval, grace_period: seconds between a running trial's heartbeats, and
            without one before the trial counts as dead (its job killed) and is queued again.
        max_retries: how often a dead or signal-stopped trial is queued again.
        max_failures: trials that raised after which the study stops (default: ``trials``).
        threads: TensorFlow threads of each trial's optimizer (default: shared out per node).
        tensorboard, checkpoint_interval, checkpoint_buffer: as for ``RLTaskStarter``.
        verbose: a console row per finished trial; ``trial_verbose`` also the trials' progress lines.
        report: write best.json, trials.csv and figures into the study's directory at the end.
        comm: the communicator to split into groups (default: COMM_WORLD when launched as
            several ranks).

    Returns:
        On the first rank: the study's counts and best trial (``{'study', 'storage', 'trials',
        'best', 'report'}``); None on the other ranks.

    Raises:
        SpaceError: the search space is invalid (before any rank starts work).
        ValueError: another setting is invalid, or the study was started with other settings.
    """
    from aquaml.tuning.config import make_config
    from aquaml.tuning.groups import run_study
    config = make_config(env, algo, space, trials, storage, study_name, fixed, group_size=group_size, steps=steps,
                         seed=seed, run_root=run_root, pruner=pruner, sampler=sampler, enqueue=enqueue,
                         sampler_startup_trials=sampler_startup_trials, pruner_startup_trials=pruner_startup_trials,
                         pruner_warmup_steps=pruner_warmup_steps, heartbeat_interval=heartbeat_interval,
                         grace_period=grace_period, max_retries=max_retries, max_failures=max_failures,
                         threads=threads, tensorboard=tensorboard, checkpoint_interval=checkpoint_interval,
                         checkpoint_buffer=checkpoint_buffer, verbose=verbose, trial_verbose=trial_verbose,
                         report=report)
    return run_study(config, comm)


__all__ = ["tune", "load_space", "SearchSpace", "SpaceError"]
