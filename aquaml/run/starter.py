"""RLTaskStarter: builds environments, models, algorithm and buffer, then runs, logs and evaluates.

Everything a user can get wrong (parameters, environment spec, model contracts) is checked in the
constructor, before any environment step and before anything is written to disk.
"""
from __future__ import annotations

import copy
import functools
import json
import os
import platform
import sys
from typing import Any, Callable, Mapping

import gymnasium
import keras
import numpy as np
import tensorflow as tf

from aquaml.algos.base import Algorithm
from aquaml.algos.registry import algorithm
from aquaml.run.signing import user_key
from aquaml.data import DataInfo
from aquaml.envs import GymnasiumEnv, RLBaseEnv
from aquaml.envs.atari import make_env
from aquaml.envs.urls import is_env_url, url_factory
from aquaml.models.base import build_models
from aquaml.models.recurrent import with_recurrent
from aquaml.parallel.devices import default_optimizer_threads, limit_tf_threads
from aquaml.parallel.failure import (DEFERRED, StopRequest, agree_to_start, install_abort_hook, install_startup_hook,
                                     mark_startup_error, report_and_abort)
from aquaml.parallel.mpi import launched_rank, launched_ranks, mpi
from aquaml.parallel.topology import make_topology
from aquaml.run.checkpoint import Checkpointer, TaskCheckpoints, check_resumable, check_variables_state
from aquaml.run.export import export_policy
from aquaml.run.logger import RunLogger
from aquaml.run.progress import Evaluator, Progress
from aquaml.schedules.context import TaskContext
from aquaml.schedules.drivers import make_actor, make_learner, run_mpi_task, run_serial
from aquaml.schedules.local import LocalLink
from aquaml.storage import check_run_name, previous_attempt, set_aside_previous, unique_run_dir, write_text_atomic


#: Evaluation environments stepped together (one batched policy call per step for all of them).
MAX_EVAL_ENVS = 10


def _env_factory(env: Any) -> Callable[[], RLBaseEnv]:
    """A zero-argument factory of fresh environment copies from what the user passed."""
    if is_env_url(env):  # a remote environment: connected once for its spec, copies join lazily
        return url_factory(env)
    if isinstance(env, str):  # Atari ids come preprocessed (aquaml.envs.atari)
        return lambda: make_env(env)
    if isinstance(env, RLBaseEnv):
        return lambda: copy.deepcopy(env)
    if hasattr(env, "step") and hasattr(env, "action_space"):  # a gymnasium.Env instance
        return lambda: GymnasiumEnv(copy.deepcopy(env))
    if callable(env):
        return env
    raise TypeError("env must be an RLBaseEnv, a gymnasium id such as 'Pendulum-v1', a gymnasium.Env, "
                    f"or a zero-argument function returning an RLBaseEnv; got {type(env).__name__}")


def _check_copies(env: RLBaseEnv, eval_env: Any, params: Any, topology: Any) -> None:
    """Check the task's copies of ``env`` against ``env.max_copies`` (an environment that stands
    for one system allows one copy, so evaluation must have its own).

    Raises:
        ValueError: the task needs more copies of ``env`` than it allows.
    """
    limit = env.max_copies
    if limit is None:
        return
    training = params.envs_per_worker * (1 if topology is None else topology.num_workers)
    plural = "copy" if limit == 1 else "copies"
    if training > limit:
        raise ValueError(f"{env!r} allows {limit} {plural} per task, this task steps {training} "
                         "(envs_per_worker x worker ranks); lower envs_per_worker or the ranks")
    if eval_env is None:
        raise ValueError(f"{env!r} allows {limit} {plural} per task, all used for training; evaluation needs "
                         "its own: pass eval_env=... (aquaml train --eval-env URL)")


def _eval_envs(factory: Callable[[], Any], episodes: int) -> list[RLBaseEnv]:
    """Up to MAX_EVAL_ENVS evaluation copies (no more than the environment's ``max_copies``)."""
    first = _make_env(factory)
    count = min(episodes, MAX_EVAL_ENVS, first.max_copies or MAX_EVAL_ENVS)
    return [first] + [_make_env(factory) for _ in range(count - 1)]


def _make_env(factory: Callable[[], Any]) -> RLBaseEnv:
    env = factory()
    if not isinstance(env, RLBaseEnv):
        if hasattr(env, "step") and hasattr(env, "action_space"):
            return GymnasiumEnv(env)
        raise TypeError(f"the env factory returned a {type(env).__name__}, not an RLBaseEnv")
    return env


def _agreed_start(init: Callable) -> Callable:
    """Make every rank of a task leave the constructor the same way: all ready to start, all
    stopping before training (a signal arrived while starting), or all refusing the task with
    one rank's error (see ``aquaml.parallel.failure.agree_to_start``)."""
    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.topology = None
        try:
            init(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001  (re-raised on this rank, reported to the others)
            self._agree(exc)
            raise
        self._agree(None)
    return __init__


def _versions() -> dict[str, str]:
    from aquaml import __version__
    return {"aquaml": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "tensorflow": tf.__version__, "keras": keras.__version__, "gymnasium": gymnasium.__version__}


class RLTaskStarter:
    """Build and run one training task.

    Args:
        env: an RLBaseEnv (copied for evaluation and extra environment copies), a gymnasium id
            such as ``'Pendulum-v1'``, a gymnasium.Env, or a zero-argument factory.
        model_class_dict: model classes by role, e.g. ``{'actor': Actor, 'qf1': Q, 'qf2': Q}``.
        algo: the algorithm: a class such as ``SAC`` (or the reference's alias ``SAC2``) or ``PPO``,
            or a registered name (``'sac'``, ``'ppo'``, or one of ``aquaml.register_algorithm``).
        algo_hyperparameter: the algorithm's parameters (``SACParameters`` or ``PPOParameters``);
            None uses defaults.
        mpi_comm: the task's communicator; None means COMM_WORLD when the process was started as
            more than one rank, else one process. Rank 0 optimizes, every other rank is a worker.
        name: the run's name, one plain directory name (not ``.`` or ``..``, no ``/``); its files go
            to ``<run_root>/<name>`` (a new ``-2``, ``-3``... suffix if that already holds a run:
            nothing is overwritten).
        run_root: the directory that holds runs.
        eval_env: the evaluation environment (same forms as ``env``); None uses copies of ``env``.
            Up to ten copies run the ``calculate_episodes`` episodes side by side.
        optimizer_threads: TensorFlow threads for training, in each of its two pools (inter-op: the
            independent parts of an update, such as SAC's two critics, run side by side; intra-op:
            one large op is split). None is TensorFlow's default (one per core) in one process, and
            under MPI ``default_optimizer_threads`` (at least 2, more when cores are left over).
        verbose: print progress lines.
        tensorboard: write TensorBoard events beside progress.csv.
        checkpoint_interval: environment steps between checkpoints (one is always written at the
            end, and when SIGTERM/SIGINT stops the run); None means a tenth of ``total_steps``,
            0 only the final one.
        keep_checkpoints: how many of the newest checkpoints to keep.
        checkpoint_buffer: include the replay buffer in checkpoints (needed for an exact resume
            of SAC; off-policy runs resumed without it refill the buffer from scratch).
        resume: continue the run ``<run_root>/<name>`` from its newest valid checkpoint (damaged
            ones are skipped with a warning); without a checkpoint there, start it afresh, after
            moving an earlier attempt's files (only from a directory that holds an aquaml run's
            config.json) into ``previous-<k>/`` and saying so on stderr.
        config_extra: more entries for the run's config.json (the ``aquaml`` command records its
            flags there, so ``aquaml export`` can rebuild the models).
        on_evaluation: called as ``on_evaluation(step, stats)`` after each evaluation, in the one
            process or on the optimizer rank (``stats`` as ``run`` returns them). Returning True
            before the final evaluation stops the task at its next clean point on every rank, as
            SIGTERM would (a checkpoint is written; ``stop_reason`` then says so). ``aquaml tune``
            reports evaluations to Optuna and stops pruned trials through it.
        abort_on_error: under MPI, an exception on the optimizer rank while it trains (a training
            step, an evaluation, ``on_evaluation``, the final save) aborts every rank of the job
            (True), or (False) stops the workers as a stop request would, lets every rank leave the
            task, and raises the exception from ``run`` on the optimizer only (workers return as
            from a stopped run). Exceptions on worker ranks always abort the job.
        trust_checkpoint: resume from a checkpoint even when it is not signed with your key
            (``aquaml.run.signing``): one copied from someone else, from another machine, or written
            by an older aquaml. Its environments are pickles, which can run any code: only for
            checkpoints whose source you trust.

    Raises:
        TypeError: an argument has the wrong type (e.g. parameters of another algorithm).
        ValueError: an argument is out of range, such as a name that is not one plain directory
            name, or a resume into a directory that holds files but no aquaml run.
        aquaml.SpecError, aquaml.ModelContractError: the environment or a model is inconsistent.
        aquaml.CheckpointError: ``resume`` found a checkpoint that does not fit this task, or one
            not signed with your key without ``trust_checkpoint``.
    """

    @_agreed_start
    def __init__(self, env: Any, model_class_dict: Mapping[str, Callable], algo: type | None = None,
                 algo_hyperparameter: Any = None, mpi_comm: Any = None, name: str | None = None,
                 run_root: str = "runs", eval_env: Any = None, optimizer_threads: int | None = None,
                 verbose: bool = True, tensorboard: bool = True, checkpoint_interval: int | None = None,
                 keep_checkpoints: int = 3, checkpoint_buffer: bool = True, resume: bool = False,
                 config_extra: Mapping[str, Any] | None = None,
                 on_evaluation: Callable[[int, dict[str, float]], bool | None] | None = None,
                 abort_on_error: bool = True, trust_checkpoint: bool = False) -> None:
        algo = algorithm("sac" if algo is None else algo)
        if not (isinstance(algo, type) and issubclass(algo, Algorithm)):
            raise TypeError(f"algo must be an aquaml algorithm (a subclass of aquaml.algos.base.Algorithm, such as "
                            f"SAC or PPO) or its registered name, got {algo!r}")
        params = algo.parameters_class() if algo_hyperparameter is None else algo_hyperparameter
        if not isinstance(params, algo.parameters_class):
            raise TypeError(f"algo_hyperparameter must be a {algo.parameters_class.__name__} for {algo.name}, "
                            f"got {type(params).__name__}")
        if name is not None:
            check_run_name(name)
        if checkpoint_interval is None:
            checkpoint_interval = max(params.total_steps // 10, 1)
        if isinstance(checkpoint_interval, bool) or not isinstance(checkpoint_interval, int) or checkpoint_interval < 0:
            raise ValueError(f"checkpoint_interval must be an int >= 0 (environment steps; 0 = only at the end), "
                             f"got {checkpoint_interval!r}")
        if isinstance(keep_checkpoints, bool) or not isinstance(keep_checkpoints, int) or keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be an int >= 1, got {keep_checkpoints!r}")
        if resume and name is None:
            raise ValueError("resume=True needs the name of the run to continue (name='...')")
        self.checkpoint_interval, self.keep_checkpoints = checkpoint_interval, keep_checkpoints
        self.checkpoint_buffer, self.resume = bool(checkpoint_buffer), bool(resume)
        self.trust_checkpoint = bool(trust_checkpoint)
        if mpi_comm is None and launched_ranks() > 1:
            mpi_comm = mpi().COMM_WORLD
        self.topology = make_topology(mpi_comm) if mpi_comm is not None and mpi_comm.Get_size() > 1 else None
        threads = optimizer_threads
        if self.topology is not None:
            install_abort_hook(mpi_comm, self.topology.role)
            if not self.topology.is_optimizer:
                threads = 1  # workers act in numpy or through small TensorFlow calls
            elif threads is None:
                threads = default_optimizer_threads(self.topology.node_comm.Get_size() - 1)
        limit_tf_threads(threads, threads)

        self.params, self.verbose, self.tensorboard = params, verbose, tensorboard
        factory = _env_factory(env)
        self.envs = [_make_env(factory) for _ in range(params.envs_per_worker)]
        _check_copies(self.envs[0], eval_env, params, self.topology)
        eval_factory = factory if eval_env is None else _env_factory(eval_env)
        evaluates = self.topology is None or self.topology.is_optimizer
        self.eval_envs = _eval_envs(eval_factory, params.calculate_episodes) if evaluates else []
        self.obs_info: DataInfo = self.envs[0].obs_info
        if self.envs[0].action_info is not None:
            algo.check_action_info(self.envs[0].action_info)
        keras.utils.set_random_seed(params.seed)
        models, self.action_info = build_models(model_class_dict, algo.required_models, self.obs_info,
                                                self.envs[0].action_info, algo.optional_models,
                                                algo.critics_take_action, algo.model_view)
        state_info = models["actor"].state_info
        if len(state_info):  # a recurrent actor: its state travels as observation entries
            self.obs_info = with_recurrent(self.obs_info, state_info)
            for e in self.envs + self.eval_envs:
                e.set_recurrent_info(state_info)
        self.algo = algo(models, self.obs_info, self.action_info, params)
        self.algo.check_workers(1 if self.topology is None else self.topology.num_workers)
        self.name = name or f"{algo.name.lower()}_{type(self.envs[0]).__name__}"
        self.ctx = TaskContext(algo=self.algo, params=params, envs=self.envs, obs_info=self.obs_info,
                               action_info=self.action_info, stop=None, checkpoint_interval=checkpoint_interval,
                               name=self.name, verbose=verbose)
        if self.topology is None:  # under MPI the buffer lives in shared memory, made in run()
            self.buffer = self.algo.make_buffer()
            self._link = LocalLink(self.buffer)
            self._actor = make_actor(self.ctx, self._link)
            self.worker = self._actor.worker
        self.run_root = run_root
        self.run_dir: str | None = None
        self.model_classes = {k: getattr(v, "__name__", repr(v)) for k, v in model_class_dict.items()}
        self.env_id = env if isinstance(env, str) else None
        self.config_extra = dict(config_extra or {})
        self.on_evaluation, self.abort_on_error = on_evaluation, bool(abort_on_error)
        self.interrupted = False
        self.stop_reason: str | None = None
        self.checkpointer: Checkpointer | None = None
        self.restored: tuple[dict, dict] | None = None
        if self.topology is None or self.topology.is_optimizer:
            user_key()  # a key file others can read is refused now, not at the first checkpoint
            if self.resume:
                self.restored = self._find_checkpoint()

    def _agree(self, error: BaseException | None) -> None:
        """After construction: under MPI every rank learns whether all can start (see
        ``_agreed_start``); in one process only the held signal is taken."""
        if self.topology is None:
            if error is not None and launched_ranks() > 1:
                # found before the task's communicator exists, so on every rank alike: say it once
                install_startup_hook()
                mark_startup_error(error, prints=launched_rank() == 0)
            self.stopped_before_start = None if error is not None else DEFERRED.take()
            return
        self.stopped_before_start = agree_to_start(self.topology.comm, error, DEFERRED.take())

    def _find_checkpoint(self) -> tuple[dict, dict] | None:
        """The newest valid checkpoint of ``run_root/name``, checked against this task; None if none."""
        run_dir = os.path.join(self.run_root, self.name)
        path = Checkpointer(run_dir).latest()
        if path is None:
            previous_attempt(run_dir)  # raises now, before any work, if run_dir holds a user's files
            return None
        with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
            saved = json.load(f)
        check_resumable(saved, self._config(), run_dir)
        arrays, state = Checkpointer.load(path, trust=self.trust_checkpoint)
        check_variables_state(self.algo.state_groups(), arrays)
        return arrays, state

    def _config(self) -> dict[str, Any]:
        return {"name": self.name, "algo": self.algo.name, "parameters": self.params.to_dict(),
                "obs_info": self.obs_info.to_dict(), "action_info": self.action_info.to_dict(),
                "models": {k: {"class": self.model_classes[k], "learning_rate": s.learning_rate,
                               "optimizer": type(s.optimizer).__name__, "input_name": list(s.input_names)}
                           for k, s in self.algo.models.items()},
                "ranks": 1 if self.topology is None else self.topology.size, "versions": _versions(),
                "command": sys.argv, "env_id": self.env_id,
                "checkpoints": {"interval": self.checkpoint_interval, "keep": self.keep_checkpoints,
                                "buffer": self.checkpoint_buffer}, **self.config_extra}

    @property
    def models_dir(self) -> str:
        return os.path.join(self.run_dir, "models")

    @functools.cached_property
    def evaluator(self) -> Evaluator:
        """Deterministic evaluation on ``eval_envs`` with a policy built on first use (numpy where the
        actor allows, see ``aquaml.acting.inference``): worker ranks never evaluate."""
        return Evaluator(self.eval_envs, self.obs_info, lambda: self.algo.host_policy(self.params.seed),
                         self.params.calculate_episodes, self.params.seed + 1_000_003)

    def _learner_context(self, logger: RunLogger, stop: StopRequest) -> None:
        """Complete the task context with what only the learner has: progress, checkpoints, the
        checkpoint to continue from."""
        progress = Progress(self.params, self.algo.metric_names, logger, self.evaluator, self.verbose,
                            self.algo.console_metrics, self.on_evaluation, stop)
        ranks = 1 if self.topology is None else self.topology.size
        self.ctx.progress, self.ctx.restored = progress, self.restored
        self.ctx.checkpoints = TaskCheckpoints(self.checkpointer, self.algo, progress, ranks, self.checkpoint_buffer)

    def run(self) -> dict[str, float]:
        """Train for ``total_steps`` environment steps; return the final evaluation statistics.

        Under MPI every rank calls this; the optimizer returns the statistics, workers an empty dict.
        SIGTERM or SIGINT (or ``on_evaluation``) stops the run at the next clean point with a
        checkpoint (``interrupted`` is then True, ``stop_reason`` says why, and the last evaluation
        so far is returned); ``resume=True`` continues it.
        """
        if self.stopped_before_start is not None:
            self.interrupted = True
            if self.verbose and (self.topology is None or self.topology.is_optimizer):
                print(f"[{self.name}] stopped by {self.stopped_before_start} before training started; "
                      "nothing was written", flush=True)
            return {}
        if self.topology is not None:
            return self._run_mpi()
        self._open_run_dir()
        logger = self._open_logger()
        models_dir = self.models_dir
        stop = self.ctx.stop = StopRequest()
        try:
            self._learner_context(logger, stop)
            final = run_serial(make_learner(self.ctx, self._link), self._actor)
        except KeyboardInterrupt:
            # an exception from inside a step: no clean point to checkpoint at, but keep the weights
            self.algo.save(models_dir)
            print(f"[{self.name}] interrupted; weights so far saved in {models_dir}", file=sys.stderr, flush=True)
            raise
        finally:
            stop.restore()
            logger.close()
        self.save_final()
        self._finish(final, stop)
        return final

    def save_final(self) -> None:
        """The trained models (``models/``) and the deployable policy (``policy/``), each atomically."""
        self.algo.save(self.models_dir)
        export_policy(self.algo, os.path.join(self.run_dir, "policy"), self.env_id)

    def _open_logger(self) -> RunLogger:
        resume_step = elapsed = None
        if self.restored is not None:
            resume_step = self.restored[1]["step"]
            elapsed = self.restored[1]["progress"]["elapsed"]
        return RunLogger(self.run_dir, self.name, self.params.total_steps, self.tensorboard,
                         resume_step=resume_step, elapsed=elapsed or 0.0)

    def _open_run_dir(self) -> None:
        if self.resume:
            self.run_dir = os.path.join(self.run_root, self.name)
            moved = set_aside_previous(self.run_dir) if self.restored is None else None
            if moved is not None:  # said even when quiet: the user's files changed place
                print(f"[{self.name}] no checkpoint to resume in {self.run_dir}: moved {', '.join(moved[1])} "
                      f"to {moved[0]}", file=sys.stderr, flush=True)
            os.makedirs(self.run_dir, exist_ok=True)
        else:
            self.run_dir = unique_run_dir(self.run_root, self.name)
        write_text_atomic(os.path.join(self.run_dir, "config.json"), json.dumps(self._config(), indent=2))
        self.checkpointer = Checkpointer(self.run_dir, self.keep_checkpoints)
        if self.restored is not None and self.verbose:
            print(f"[{self.name}] resuming from step {self.restored[1]['step']} "
                  f"({self.checkpointer.path(self.restored[1]['step'])})", flush=True)

    def _finish(self, final: dict[str, float], stop: StopRequest) -> None:
        if stop.requested:
            self.interrupted, self.stop_reason = True, stop.reason
            if self.verbose:
                print(f"[{self.name}] stopped by {stop.reason}; checkpoint written, continue with "
                      f"resume=True (aquaml train --resume)", flush=True)
            return
        self._report(final)

    def _run_mpi(self) -> dict[str, float]:
        topo = self.topology
        logger = None
        stop = self.ctx.stop = StopRequest()
        try:
            if topo.is_optimizer:
                self._open_run_dir()
                logger = self._open_logger()
                self._learner_context(logger, stop)
            final, failure = run_mpi_task(self.ctx, topo, self.save_final, self.abort_on_error)
        except BaseException as exc:  # a dead rank must not leave the others waiting
            report_and_abort(topo.comm, topo.role, exc)
            raise
        finally:
            stop.restore()
            if logger is not None:
                logger.close()
        if failure is not None:  # abort_on_error=False: every rank has left the task
            raise failure
        if topo.is_optimizer:
            self._finish(final, stop)
        else:
            self.interrupted, self.stop_reason = stop.requested, stop.reason
        return final

    def _report(self, final: dict[str, float]) -> None:
        if self.verbose and final:
            print(f"[{self.name}] final evaluation return {final['eval/return_mean']:.1f} "
                  f"± {final['eval/return_std']:.1f} over {self.params.calculate_episodes} episodes; "
                  f"run saved in {self.run_dir}", flush=True)
