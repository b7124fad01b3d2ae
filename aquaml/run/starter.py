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

from aquaml.algos.sac import SAC
from aquaml.buffers.replay import ReplayBuffer
from aquaml.run.checkpoint import (Checkpointer, check_resumable, check_variables_state, load_replay,
                                   load_variables_state, next_due, variables_state)
from aquaml.run.signing import user_key
from aquaml.data import DataInfo
from aquaml.envs import GymnasiumEnv, RLBaseEnv
from aquaml.run.export import export_policy
from aquaml.run.logger import RunLogger
from aquaml.models.base import build_models
from aquaml.parallel.devices import default_optimizer_threads, limit_tf_threads
from aquaml.parallel.failure import StopRequest, install_abort_hook, report_and_abort
from aquaml.parallel.mpi import launched_ranks, mpi
from aquaml.parallel.roles import run_task
from aquaml.parallel.topology import make_topology
from aquaml.run.progress import Progress
from aquaml.models.recurrent import with_recurrent
from aquaml.storage import check_run_name, previous_attempt, set_aside_previous, unique_run_dir, write_text_atomic
from aquaml.acting.worker import Worker


#: Evaluation environments stepped together (one batched policy call per step for all of them).
MAX_EVAL_ENVS = 10


def _env_factory(env: Any) -> Callable[[], RLBaseEnv]:
    """A zero-argument factory of fresh environment copies from what the user passed."""
    if isinstance(env, str):
        return lambda: GymnasiumEnv(env)
    if isinstance(env, RLBaseEnv):
        return lambda: copy.deepcopy(env)
    if hasattr(env, "step") and hasattr(env, "action_space"):  # a gymnasium.Env instance
        return lambda: GymnasiumEnv(copy.deepcopy(env))
    if callable(env):
        return env
    raise TypeError("env must be an RLBaseEnv, a gymnasium id such as 'Pendulum-v1', a gymnasium.Env, "
                    f"or a zero-argument function returning an RLBaseEnv; got {type(env).__name__}")


def _make_env(factory: Callable[[], Any]) -> RLBaseEnv:
    env = factory()
    if not isinstance(env, RLBaseEnv):
        if hasattr(env, "step") and hasattr(env, "action_space"):
            return GymnasiumEnv(env)
        raise TypeError(f"the env factory returned a {type(env).__name__}, not an RLBaseEnv")
    return env


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
        algo: the algorithm class: ``SAC`` (or the reference's alias ``SAC2``) or ``PPO``.
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

    def __init__(self, env: Any, model_class_dict: Mapping[str, Callable], algo: type | None = None,
                 algo_hyperparameter: Any = None, mpi_comm: Any = None, name: str | None = None,
                 run_root: str = "runs", eval_env: Any = None, optimizer_threads: int | None = None,
                 verbose: bool = True, tensorboard: bool = True, checkpoint_interval: int | None = None,
                 keep_checkpoints: int = 3, checkpoint_buffer: bool = True, resume: bool = False,
                 config_extra: Mapping[str, Any] | None = None, trust_checkpoint: bool = False) -> None:
        algo = SAC if algo is None else algo
        if not (isinstance(algo, type) and hasattr(algo, "required_models")):
            raise TypeError(f"algo must be an aquaml algorithm class such as SAC or PPO, got {algo!r}")
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
        eval_factory = factory if eval_env is None else _env_factory(eval_env)
        self.eval_envs = [_make_env(eval_factory) for _ in range(min(params.calculate_episodes, MAX_EVAL_ENVS))
                          if self.topology is None or self.topology.is_optimizer]
        self.obs_info: DataInfo = self.envs[0].obs_info
        if self.envs[0].action_info is not None:
            algo.check_action_info(self.envs[0].action_info)
        keras.utils.set_random_seed(params.seed)
        models, self.action_info = build_models(model_class_dict, algo.required_models, self.obs_info,
                                                self.envs[0].action_info, algo.optional_models,
                                                algo.critics_take_action)
        state_info = models["actor"].state_info
        if len(state_info):  # a recurrent actor: its state travels as observation entries
            self.obs_info = with_recurrent(self.obs_info, state_info)
            for e in self.envs + self.eval_envs:
                e.set_recurrent_info(state_info)
        self.algo = algo(models, self.obs_info, self.action_info, params)
        if hasattr(self.algo, "check_workers"):
            self.algo.check_workers(1 if self.topology is None else self.topology.num_workers)
        if self.topology is None:  # under MPI the buffer lives in shared memory, made in run()
            self.buffer = self.algo.make_buffer()
            self.worker = Worker(self.envs, self.obs_info, self.action_info, self.algo.act, self.buffer,
                                 seed=params.seed)
        self.name = name or f"{algo.name.lower()}_{type(self.envs[0]).__name__}"
        self.run_root = run_root
        self.run_dir: str | None = None
        self.model_classes = {k: getattr(v, "__name__", repr(v)) for k, v in model_class_dict.items()}
        self.env_id = env if isinstance(env, str) else None
        self.config_extra = dict(config_extra or {})
        self.interrupted = False
        self.checkpointer: Checkpointer | None = None
        self.restored: tuple[dict, dict] | None = None
        if self.topology is None or self.topology.is_optimizer:
            user_key()  # a key file others can read is refused now, not at the first checkpoint
            if self.resume:
                self.restored = self._find_checkpoint()

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
    def eval_policy(self) -> Any:
        """The evaluation policy (numpy where the actor allows, see ``aquaml.acting.inference``), built on
        first use: worker ranks never evaluate. Callers ``sync()`` it before each evaluation."""
        return self.algo.host_policy(self.params.seed)

    def run(self) -> dict[str, float]:
        """Train for ``total_steps`` environment steps; return the final evaluation statistics.

        Under MPI every rank calls this; the optimizer returns the statistics, workers an empty dict.
        SIGTERM or SIGINT stops the run at the next clean point with a checkpoint (``interrupted``
        is then True and the last evaluation so far is returned); ``resume=True`` continues it.
        """
        if self.topology is not None:
            return self._run_mpi()
        self._open_run_dir()
        logger = self._open_logger()
        models_dir = self.models_dir
        stop = StopRequest()
        try:
            loop = (_TrainingLoop if self.algo.schedule == "async" else _RolloutLoop)(self, logger, stop)
            if self.restored is not None:
                loop.restore(*self.restored)
            final = loop.run()
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

    def write_checkpoint(self, step: int, progress: Progress, loop: dict, workers: list,
                         buffer: Any = None, counts: np.ndarray | None = None) -> str:
        """Write a checkpoint of everything at ``step`` (the optimizer's side plus worker snapshots)."""
        state = {"step": int(step), "ranks": 1 if self.topology is None else self.topology.size,
                 "loop": loop, "progress": progress.state_dict(), "algo": self.algo.extra_state(),
                 "workers": workers}
        replay = (buffer, counts) if self.checkpoint_buffer and isinstance(buffer, ReplayBuffer) else None
        return self.checkpointer.save(step, variables_state(self.algo.state_groups()), state, replay)

    def restore_algo(self, arrays: dict, state: dict, buffer: Any = None) -> None:
        """Load the algorithm's state (and the replay buffer when the checkpoint has it)."""
        load_variables_state(self.algo.state_groups(), arrays)
        self.algo.load_extra_state(state["algo"])
        path = self.checkpointer.path(state["step"])
        if isinstance(buffer, ReplayBuffer) and os.path.exists(os.path.join(path, "replay.h5")):
            load_replay(os.path.join(path, "replay.h5"), buffer)

    def _finish(self, final: dict[str, float], stop: StopRequest) -> None:
        if stop.requested:
            self.interrupted = True
            if self.verbose:
                print(f"[{self.name}] stopped by {stop.signal_name}; checkpoint written, continue with "
                      f"resume=True (aquaml train --resume)", flush=True)
            return
        self._report(final)

    def _run_mpi(self) -> dict[str, float]:
        topo = self.topology
        logger = None
        try:
            if topo.is_optimizer:
                self._open_run_dir()
                logger = self._open_logger()
            final, stop = run_task(self, topo, lambda: Progress(self, logger))
        except BaseException as exc:  # a dead rank must not leave the others waiting
            report_and_abort(topo.comm, topo.role, exc)
            raise
        finally:
            if logger is not None:
                logger.close()
        if topo.is_optimizer:
            self._finish(final, stop)
        else:
            self.interrupted = stop.requested
        return final

    def _report(self, final: dict[str, float]) -> None:
        if self.verbose and final:
            print(f"[{self.name}] final evaluation return {final['eval/return_mean']:.1f} "
                  f"± {final['eval/return_std']:.1f} over {self.params.calculate_episodes} episodes; "
                  f"run saved in {self.run_dir}", flush=True)


class _OneProcessLoop:
    """What both one-process schedules share: a Progress, a StopRequest, checkpoints when due."""

    def __init__(self, starter: RLTaskStarter, logger: RunLogger, stop: StopRequest) -> None:
        self.s, self.p, self.stop = starter, starter.params, stop
        self.progress = Progress(starter, logger)
        self.next_checkpoint = next_due(0, starter.checkpoint_interval)

    def after_step(self, steps: int, finished: bool) -> None:
        """Checkpoint when one is due, at the end, or when a signal asked the run to stop."""
        if steps >= self.next_checkpoint or finished or self.stop.requested:
            self.s.write_checkpoint(steps, self.progress, self.loop_state(), [self.s.worker.state_dict()],
                                    self.s.buffer)
            self.next_checkpoint = next_due(steps, self.s.checkpoint_interval)

    def restore(self, arrays: dict, state: dict) -> None:
        self.s.restore_algo(arrays, state, self.s.buffer)
        self.s.worker.load_state_dict(state["workers"][0])
        self.progress.load_state_dict(state["progress"])
        self.load_loop_state(state["loop"])
        self.next_checkpoint = next_due(state["step"], self.s.checkpoint_interval)

    def loop_state(self) -> dict:
        raise NotImplementedError

    def load_loop_state(self, state: dict) -> None:
        raise NotImplementedError


class _TrainingLoop(_OneProcessLoop):
    """One process: act, store and train interleaved, keeping ``replay_ratio`` updates per step."""

    def __init__(self, starter: RLTaskStarter, logger: RunLogger, stop: StopRequest) -> None:
        super().__init__(starter, logger, stop)
        self.rng = np.random.default_rng(self.p.seed + 1)
        self.steps = self.updates = 0
        self._last_burst = 0
        self.actions: dict | None = None  # the next step's actions, when the last update computed them

    def run(self) -> dict[str, float]:
        p, worker = self.p, self.s.worker
        while self.steps < p.total_steps and not self.stop.requested:
            self.progress.add_episodes(worker.step(random=self.steps < p.warmup_steps, actions=self.actions))
            self.steps = worker.steps
            self.actions = self._train()
            finished = self.steps >= p.total_steps
            self.progress.advance(self.steps, self.updates, finished=finished)
            self.after_step(self.steps, finished)
        return self.progress.final

    def loop_state(self) -> dict:
        return {"steps": self.steps, "updates": self.updates, "last_burst": self._last_burst,
                "rng": self.rng.bit_generator.state, "actions": self.actions}

    def load_loop_state(self, state: dict) -> None:
        self.steps, self.updates, self._last_burst = state["steps"], state["updates"], state["last_burst"]
        self.rng.bit_generator.state = state["rng"]
        self.actions = state["actions"]

    def _train(self) -> dict | None:
        """Run the updates due; return the next step's actions when the last update computed them."""
        p, algo = self.p, self.s.algo
        burst_due = self.steps - self._last_burst >= p.update_interval or self.steps >= p.total_steps
        if self.steps < p.learning_starts or not burst_due:
            return None
        self._last_burst = self.steps
        due = int((self.steps - p.learning_starts) * p.replay_ratio) - self.updates
        act_next = self.steps >= p.warmup_steps and self.steps < p.total_steps
        actions = None
        for k in range(due):
            batch = algo.sample(self.s.buffer, self.rng)
            if act_next and k == due - 1:
                metrics, actions = algo.update_and_act(batch, self.s.worker.obs)
            else:
                metrics = algo.update(batch)
            self.progress.add_metrics(metrics.numpy())
            self.updates += 1
        return actions


class _RolloutLoop(_OneProcessLoop):
    """One process, on-policy: fill the rollout segment, train on it, repeat.

    A stop request takes effect at the end of the round (a checkpoint mid-round would need the
    half-filled segment).
    """

    def __init__(self, starter: RLTaskStarter, logger: RunLogger, stop: StopRequest) -> None:
        super().__init__(starter, logger, stop)
        self.rounds_done = 0
        # the weights change once per round: the worker acts in numpy where the actor allows
        # (aquaml.acting.inference), synced before each round, as a worker rank does
        self.policy = starter.algo.host_policy(self.p.seed + 7919)
        starter.worker.policy = self.policy

    def run(self) -> dict[str, float]:
        p, worker, algo = self.p, self.s.worker, self.s.algo
        rounds = p.rounds(1)
        while self.rounds_done < rounds and not self.stop.requested:
            self.policy.sync()
            for _ in range(p.rollout_steps):
                self.progress.add_episodes(worker.step())
            self.progress.add_metrics(algo.train(self.s.buffer.segments()))
            self.rounds_done += 1
            finished = self.rounds_done == rounds
            self.progress.advance(worker.steps, self.rounds_done, finished=finished)
            self.after_step(worker.steps, finished)
        return self.progress.final

    def loop_state(self) -> dict:
        return {"rounds_done": self.rounds_done, "act_rng": self.policy.rng.bit_generator.state}

    def load_loop_state(self, state: dict) -> None:
        self.rounds_done = state["rounds_done"]
        if "act_rng" in state:  # checkpoints from before numpy acting kept TensorFlow's noise state
            self.policy.rng.bit_generator.state = state["act_rng"]
        self.s.buffer.restart_at(self.rounds_done)
