"""RLTaskStarter: builds environments, models, algorithm and buffer, then runs, logs and evaluates.

Everything a user can get wrong (parameters, environment spec, model contracts) is checked in the
constructor, before any environment step and before anything is written to disk.
"""
from __future__ import annotations

import copy
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
from aquaml.data import DataInfo
from aquaml.env import GymnasiumEnv, RLBaseEnv
from aquaml.logger import RunLogger
from aquaml.model import build_models
from aquaml.parallel.devices import limit_tf_threads
from aquaml.parallel.failure import install_abort_hook, report_and_abort
from aquaml.parallel.mpi import launched_ranks, mpi
from aquaml.parallel.roles import run_task
from aquaml.parallel.topology import make_topology
from aquaml.progress import Progress
from aquaml.storage import unique_run_dir, write_text_atomic
from aquaml.worker import Worker


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
        name: the run's name; its files go to ``<run_root>/<name>`` (a new ``-2``, ``-3``... suffix
            if that already holds a run: nothing is overwritten).
        run_root: the directory that holds runs.
        eval_env: the evaluation environment (same forms as ``env``); None uses copies of ``env``.
            Up to ten copies run the ``calculate_episodes`` episodes side by side.
        optimizer_threads: TensorFlow intra-op threads for training; None is TensorFlow's default.
        verbose: print progress lines.
        tensorboard: write TensorBoard events beside progress.csv.

    Raises:
        TypeError: an argument has the wrong type (e.g. parameters of another algorithm).
        aquaml.SpecError, aquaml.ModelContractError: the environment or a model is inconsistent.
    """

    def __init__(self, env: Any, model_class_dict: Mapping[str, Callable], algo: type | None = None,
                 algo_hyperparameter: Any = None, mpi_comm: Any = None, name: str | None = None,
                 run_root: str = "runs", eval_env: Any = None, optimizer_threads: int | None = None,
                 verbose: bool = True, tensorboard: bool = True) -> None:
        algo = SAC if algo is None else algo
        if not (isinstance(algo, type) and hasattr(algo, "required_models")):
            raise TypeError(f"algo must be an aquaml algorithm class such as SAC or PPO, got {algo!r}")
        params = algo.parameters_class() if algo_hyperparameter is None else algo_hyperparameter
        if not isinstance(params, algo.parameters_class):
            raise TypeError(f"algo_hyperparameter must be a {algo.parameters_class.__name__} for {algo.name}, "
                            f"got {type(params).__name__}")
        if name is not None and (not isinstance(name, str) or not name or os.sep in name):
            raise ValueError(f"name must be a non-empty string without {os.sep!r}, got {name!r}")
        if mpi_comm is None and launched_ranks() > 1:
            mpi_comm = mpi().COMM_WORLD
        self.topology = make_topology(mpi_comm) if mpi_comm is not None and mpi_comm.Get_size() > 1 else None
        if self.topology is not None:
            install_abort_hook(mpi_comm, self.topology.role)
            if self.topology.is_optimizer and optimizer_threads is None:
                optimizer_threads = max(1, (os.cpu_count() or 1) - (self.topology.node_comm.Get_size() - 1))
            limit_tf_threads(optimizer_threads if self.topology.is_optimizer else 1, 1)
        else:
            limit_tf_threads(optimizer_threads)

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
        self.algo = algo(models, self.obs_info, self.action_info, params)
        if self.topology is None:  # under MPI the buffer lives in shared memory, made in run()
            self.buffer = self.algo.make_buffer()
            self.worker = Worker(self.envs, self.obs_info, self.action_info, self.algo.act, self.buffer,
                                 seed=params.seed)
        self.name = name or f"{algo.name.lower()}_{type(self.envs[0]).__name__}"
        self.run_root = run_root
        self.run_dir: str | None = None
        self.model_classes = {k: getattr(v, "__name__", repr(v)) for k, v in model_class_dict.items()}

    def _config(self) -> dict[str, Any]:
        return {"name": self.name, "algo": self.algo.name, "parameters": self.params.to_dict(),
                "obs_info": self.obs_info.to_dict(), "action_info": self.action_info.to_dict(),
                "models": {k: {"class": self.model_classes[k], "learning_rate": s.learning_rate,
                               "optimizer": type(s.optimizer).__name__, "input_name": list(s.input_names)}
                           for k, s in self.algo.models.items()},
                "ranks": 1 if self.topology is None else self.topology.size, "versions": _versions(), "command": sys.argv}

    @property
    def models_dir(self) -> str:
        return os.path.join(self.run_dir, "models")

    def run(self) -> dict[str, float]:
        """Train for ``total_steps`` environment steps; return the final evaluation statistics.

        Under MPI every rank calls this; the optimizer returns the statistics, workers an empty dict.
        """
        if self.topology is not None:
            return self._run_mpi()
        self._open_run_dir()
        logger = RunLogger(self.run_dir, self.name, self.params.total_steps, self.tensorboard)
        models_dir = self.models_dir
        try:
            loop = _TrainingLoop if self.algo.schedule == "async" else _RolloutLoop
            final = loop(self, logger).run()
        except KeyboardInterrupt:
            # Ctrl-C keeps what was learned: the weights as they are now, then the usual exit.
            self.algo.save(models_dir)
            print(f"[{self.name}] interrupted; weights so far saved in {models_dir}", file=sys.stderr, flush=True)
            raise
        finally:
            logger.close()
        self.algo.save(models_dir)
        self._report(final)
        return final

    def _open_run_dir(self) -> None:
        self.run_dir = unique_run_dir(self.run_root, self.name)
        write_text_atomic(os.path.join(self.run_dir, "config.json"), json.dumps(self._config(), indent=2))

    def _run_mpi(self) -> dict[str, float]:
        topo = self.topology
        logger = None
        try:
            if topo.is_optimizer:
                self._open_run_dir()
                logger = RunLogger(self.run_dir, self.name, self.params.total_steps, self.tensorboard)
            final = run_task(self, topo, lambda: Progress(self, logger))
        except BaseException as exc:  # a dead rank must not leave the others waiting
            report_and_abort(topo.comm, topo.role, exc)
            raise
        finally:
            if logger is not None:
                logger.close()
        self._report(final)
        return final

    def _report(self, final: dict[str, float]) -> None:
        if self.verbose and final:
            print(f"[{self.name}] final evaluation return {final['eval/return_mean']:.1f} "
                  f"± {final['eval/return_std']:.1f} over {self.params.calculate_episodes} episodes; "
                  f"run saved in {self.run_dir}", flush=True)


class _TrainingLoop:
    """One process: act, store and train interleaved, keeping ``replay_ratio`` updates per step."""

    def __init__(self, starter: RLTaskStarter, logger: RunLogger) -> None:
        self.s, self.p = starter, starter.params
        self.progress = Progress(starter, logger)
        self.rng = np.random.default_rng(self.p.seed + 1)
        self.steps = self.updates = 0
        self._last_burst = 0

    def run(self) -> dict[str, float]:
        p, worker = self.p, self.s.worker
        actions = None
        while self.steps < p.total_steps:
            self.progress.add_episodes(worker.step(random=self.steps < p.warmup_steps, actions=actions))
            self.steps = worker.steps
            actions = self._train()
            self.progress.advance(self.steps, self.updates, finished=self.steps >= p.total_steps)
        return self.progress.final

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
            batch = self.s.buffer.sample(p.batch_size, self.rng)
            if act_next and k == due - 1:
                metrics, actions = algo.update_and_act(batch, self.s.worker.obs)
            else:
                metrics = algo.update(batch)
            self.progress.add_metrics(metrics.numpy())
            self.updates += 1
        return actions



class _RolloutLoop:
    """One process, on-policy: fill the rollout segment, train on it, repeat."""

    def __init__(self, starter: RLTaskStarter, logger: RunLogger) -> None:
        self.s, self.p = starter, starter.params
        self.progress = Progress(starter, logger)

    def run(self) -> dict[str, float]:
        p, worker, algo = self.p, self.s.worker, self.s.algo
        rounds = p.rounds(1)
        for k in range(rounds):
            for _ in range(p.rollout_steps):
                self.progress.add_episodes(worker.step())
            self.progress.add_metrics(algo.train(self.s.buffer.segments()))
            self.progress.advance(worker.steps, k + 1, finished=k + 1 == rounds)
        return self.progress.final
