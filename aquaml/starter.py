"""RLTaskStarter: builds environments, models, algorithm and buffer, then runs, logs and evaluates.

Everything a user can get wrong (parameters, environment spec, model contracts) is checked in the
constructor, before any environment step and before anything is written to disk.
"""
from __future__ import annotations

import copy
import json
import math
import os
import platform
import sys
import time
from typing import Any, Callable, Mapping

import gymnasium
import keras
import numpy as np
import tensorflow as tf

from aquaml.algos.sac import SAC
from aquaml.buffers import ReplayBuffer
from aquaml.data import DataInfo
from aquaml.env import GymnasiumEnv, RLBaseEnv
from aquaml.logger import RunLogger
from aquaml.model import build_models
from aquaml.parallel.devices import limit_tf_threads
from aquaml.storage import unique_run_dir, write_text_atomic
from aquaml.worker import Worker, evaluate


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


def launched_ranks() -> int:
    """How many ranks the MPI launcher started, read from its environment (1 for a plain process)."""
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 1


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
        algo: the algorithm class (``SAC``, or the reference's alias ``SAC2``).
        algo_hyperparameter: the algorithm's parameters (``SACParameters``); None uses defaults.
        mpi_comm: reserved for the MPI runtime; must be None in this version, which also refuses
            to start under an MPI launcher with more than one rank.
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
            raise TypeError(f"algo must be an aquaml algorithm class such as SAC, got {algo!r}")
        params = algo.parameters_class() if algo_hyperparameter is None else algo_hyperparameter
        if not isinstance(params, algo.parameters_class):
            raise TypeError(f"algo_hyperparameter must be a {algo.parameters_class.__name__} for {algo.name}, "
                            f"got {type(params).__name__}")
        ranks = launched_ranks()
        if mpi_comm is not None or ranks > 1:
            raise NotImplementedError(
                f"this version of aquaml trains in one process, but it was given an MPI communicator or started "
                f"as {ranks} ranks; run it as a plain process (the MPI runtime is planned, and running N "
                "independent copies silently, as the reference AquaML did, is not what mpirun users want)")
        if name is not None and (not isinstance(name, str) or not name or os.sep in name):
            raise ValueError(f"name must be a non-empty string without {os.sep!r}, got {name!r}")
        limit_tf_threads(optimizer_threads)

        self.params, self.verbose, self.tensorboard = params, verbose, tensorboard
        factory = _env_factory(env)
        self.envs = [_make_env(factory) for _ in range(params.envs_per_worker)]
        eval_factory = factory if eval_env is None else _env_factory(eval_env)
        self.eval_envs = [_make_env(eval_factory) for _ in range(min(params.calculate_episodes, MAX_EVAL_ENVS))]
        self.obs_info: DataInfo = self.envs[0].obs_info
        if self.envs[0].action_info is not None:
            algo.check_action_info(self.envs[0].action_info)
        keras.utils.set_random_seed(params.seed)
        models, self.action_info = build_models(model_class_dict, algo.required_models, self.obs_info,
                                                self.envs[0].action_info)
        self.algo = algo(models, self.obs_info, self.action_info, params)
        self.buffer = ReplayBuffer(self.algo.batch_info, params.buffer_size)
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
                "ranks": 1, "versions": _versions(), "command": sys.argv}

    def run(self) -> dict[str, float]:
        """Train for ``total_steps`` environment steps; return the final evaluation statistics."""
        self.run_dir = unique_run_dir(self.run_root, self.name)
        write_text_atomic(os.path.join(self.run_dir, "config.json"), json.dumps(self._config(), indent=2))
        logger = RunLogger(self.run_dir, self.name, self.params.total_steps, self.tensorboard)
        models_dir = os.path.join(self.run_dir, "models")
        try:
            final = _TrainingLoop(self, logger).run()
        except KeyboardInterrupt:
            # Ctrl-C keeps what was learned: the weights as they are now, then the usual exit.
            self.algo.save(models_dir)
            print(f"[{self.name}] interrupted; weights so far saved in {models_dir}", file=sys.stderr, flush=True)
            raise
        finally:
            logger.close()
        self.algo.save(models_dir)
        if self.verbose and final:
            print(f"[{self.name}] final evaluation return {final['eval/return_mean']:.1f} "
                  f"± {final['eval/return_std']:.1f} over {self.params.calculate_episodes} episodes; "
                  f"run saved in {self.run_dir}", flush=True)
        return final


class _TrainingLoop:
    """One process: act, store and train interleaved, keeping ``replay_ratio`` updates per step."""

    def __init__(self, starter: RLTaskStarter, logger) -> None:
        self.s, self.logger, self.p = starter, logger, starter.params
        self.rng = np.random.default_rng(self.p.seed + 1)
        self.steps = self.updates = 0
        self._epoch_episodes: list = []
        self._metric_sum = np.zeros(len(starter.algo.metric_names))
        self._metric_count = 0
        self._epoch_start = (time.perf_counter(), 0, 0)
        self._last_burst = 0

    def run(self) -> dict[str, float]:
        p, worker = self.p, self.s.worker
        final: dict[str, float] = {}
        next_epoch, next_eval = p.epoch_length, p.eval_interval or math.inf
        actions = None
        while self.steps < p.total_steps:
            self._epoch_episodes += worker.step(random=self.steps < p.warmup_steps, actions=actions)
            self.steps = worker.steps
            actions = self._train()
            evaluation = {}
            if self.steps >= next_eval or (self.steps >= p.total_steps and p.calculate_episodes):
                evaluation = final = evaluate_policy(self.s, p.calculate_episodes)
                next_eval += p.eval_interval or math.inf
            if self.steps >= next_epoch or self.steps >= p.total_steps or evaluation:
                self._end_epoch(evaluation, display=self.steps >= next_epoch or self.steps >= p.total_steps)
                while next_epoch <= self.steps:
                    next_epoch += p.epoch_length
        return final

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
            self._metric_sum += metrics.numpy()
            self._metric_count += 1
            self.updates += 1
        return actions

    def _end_epoch(self, evaluation: dict[str, float], display: bool) -> None:
        now = time.perf_counter()
        t0, steps0, updates0 = self._epoch_start
        row: dict[str, float] = {"charts/updates": self.updates,
                                 "charts/SPS": (self.steps - steps0) / max(now - t0, 1e-9),
                                 "charts/UPS": (self.updates - updates0) / max(now - t0, 1e-9)}
        row.update(episode_row(self._epoch_episodes))
        means = self._metric_sum / self._metric_count if self._metric_count else np.full_like(self._metric_sum, np.nan)
        row.update({k: float(v) for k, v in zip(self.s.algo.metric_names, means)})
        row.update(evaluation or {k: float("nan") for k in EVAL_KEYS})
        self.logger.write(self.steps, row)
        epoch = self.steps // self.p.epoch_length
        if self.s.verbose and display and (epoch % self.p.display_interval == 0 or self.steps >= self.p.total_steps):
            self.logger.display(self.steps, row)
        self._epoch_episodes, self._metric_count = [], 0
        self._metric_sum[:] = 0
        self._epoch_start = (time.perf_counter(), self.steps, self.updates)


EVAL_KEYS = ("eval/return_mean", "eval/return_std", "eval/return_min", "eval/return_max", "eval/length_mean")


def episode_row(episodes: list) -> dict[str, float]:
    """Mean return, length and reward components of the episodes that ended in an epoch."""
    row = {"charts/episodes": float(len(episodes))}
    if not episodes:
        return {**row, "charts/episode_return": float("nan"), "charts/episode_length": float("nan")}
    row["charts/episode_return"] = float(np.mean([e.ret for e in episodes]))
    row["charts/episode_length"] = float(np.mean([e.length for e in episodes]))
    for key in episodes[0].rewards:
        if key != "total_reward":
            row[f"charts/reward/{key}"] = float(np.mean([e.rewards.get(key, 0.0) for e in episodes]))
    return row


def evaluate_policy(starter: RLTaskStarter, episodes: int) -> dict[str, float]:
    """Deterministic evaluation of the starter's current policy on its evaluation environment."""
    return evaluate(starter.eval_envs, starter.obs_info, starter.algo.act, episodes,
                    seed=starter.params.seed + 1_000_003)
