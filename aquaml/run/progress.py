"""Epoch bookkeeping shared by every schedule: evaluation when due and one logged row per epoch."""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Sequence

import numpy as np

from aquaml.acting.worker import EpisodeStats, evaluate
from aquaml.data import NonFiniteError
from aquaml.parallel.failure import StopRequest
from aquaml.run.logger import RunLogger

#: The stop reason of a task that its ``on_evaluation`` callback asked to stop.
EVALUATION_STOP = "its on_evaluation callback"


#: Console lines come at most this often (short on-policy rounds would otherwise flood it);
#: every epoch still gets its progress.csv row, and evaluations are always shown.
MIN_DISPLAY_SECONDS = 2.0


class Evaluator:
    """Deterministic evaluation of the current policy: ``episodes`` episodes on ``envs`` (side by
    side, one batched policy call per step), episode ``k`` reset with ``seed + k`` so that every
    evaluation sees the same starts. The policy (``make_policy()``, a HostPolicy) is built on first
    use and synced before each evaluation, so its weights are fixed for the whole of it."""

    def __init__(self, envs: Sequence[Any], obs_info: Any, make_policy: Callable[[], Any], episodes: int,
                 seed: int) -> None:
        self.envs, self.obs_info, self.episodes, self.seed = list(envs), obs_info, episodes, seed
        self._make_policy, self._policy = make_policy, None

    @property
    def policy(self) -> Any:
        if self._policy is None:
            self._policy = self._make_policy()
        return self._policy

    def __call__(self) -> dict[str, float]:
        policy = self.policy
        policy.sync()
        return evaluate(self.envs, self.obs_info, policy, self.episodes, seed=self.seed)


class Progress:
    """Epoch bookkeeping shared by every schedule: evaluation when due, one logged row per epoch.

    Callers report finished episodes and update metrics as they come, and call ``advance`` with
    the environment-step and update counts after each unit of work. After each evaluation
    ``on_evaluation(step, stats)`` is called, if given, with the evaluation's scheduled step (the
    multiple of ``eval_interval`` that came due, which an MPI run may have passed by a few steps,
    so that runs compare at the same steps; the step count for the final one); when it returns
    True before the final evaluation, ``stop`` is asked to stop the run (as a SIGTERM would: the
    schedule stops every rank at its next clean point and checkpoints).

    Args:
        params: the run's parameters (``epoch_length``, ``eval_interval``, ``total_steps``,
            ``display_interval``).
        metric_names: what each update reports, in order.
        logger: where rows go.
        evaluate: runs an evaluation and returns its statistics (``Evaluator``).
        verbose: print progress lines.
        console_metrics: ``(metric, label, format)`` shown on each line besides returns and speed.
        on_evaluation: the callback above (``aquaml tune`` reports to Optuna and prunes through it).
        stop: what a True from ``on_evaluation`` asks to stop.
    """

    def __init__(self, params: Any, metric_names: Sequence[str], logger: RunLogger,
                 evaluate: Callable[[], dict[str, float]], verbose: bool = True,
                 console_metrics: Sequence[tuple[str, str, str]] = (),
                 on_evaluation: Callable[[int, dict[str, float]], bool | None] | None = None,
                 stop: StopRequest | None = None) -> None:
        self.p, self.logger, self.evaluate, self.verbose = params, logger, evaluate, verbose
        self.metric_names, self.console_metrics = tuple(metric_names), tuple(console_metrics)
        self.on_evaluation, self.stop = on_evaluation, stop
        self.next_epoch, self.next_eval = self.p.epoch_length, self.p.eval_interval or math.inf
        self.final: dict[str, float] = {}
        self._episodes: list = []
        self._metric_sum = np.zeros(len(self.metric_names))
        self._metric_count = 0
        self._epoch_start = (time.perf_counter(), 0, 0)
        self._last_display = -math.inf
        self.eval_seconds = 0.0  # spent in evaluations, over every resumed part of the run

    def state_dict(self) -> dict[str, Any]:
        """The bookkeeping a checkpoint keeps: due steps, the epoch so far, the last evaluation."""
        return {"next_epoch": self.next_epoch, "next_eval": self.next_eval, "final": dict(self.final),
                "episodes": [dataclasses.asdict(e) for e in self._episodes], "metric_sum": self._metric_sum.copy(),
                "metric_count": self._metric_count, "epoch_start": self._epoch_start[1:],
                "elapsed": self.logger.elapsed, "eval_seconds": self.eval_seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.next_epoch, self.next_eval, self.final = state["next_epoch"], state["next_eval"], dict(state["final"])
        self._episodes = [EpisodeStats(**e) for e in state["episodes"]]
        self._metric_sum[:] = state["metric_sum"]
        self._metric_count = state["metric_count"]
        self._epoch_start = (time.perf_counter(), *state["epoch_start"])
        self.eval_seconds = float(state.get("eval_seconds", 0.0))  # checkpoints from before the column: 0

    def add_episodes(self, episodes: list) -> None:
        self._episodes += episodes

    def add_metrics(self, metrics: np.ndarray) -> None:
        """Add one update's metrics, or a ``(k, n)`` array of ``k`` updates' metrics.

        Raises:
            NonFiniteError: a loss or statistic is NaN or infinite (the training diverged): the run
                stops before these weights are published or checkpointed.
        """
        metrics = np.atleast_2d(metrics)
        if not np.isfinite(metrics).all():
            bad = [name for name, ok in zip(self.metric_names, np.isfinite(metrics).all(axis=0)) if not ok]
            raise NonFiniteError(f"training diverged: {', '.join(bad)} became non-finite (the last updates' "
                                 f"metrics: {metrics[-1].tolist()}); stopped before these weights were published "
                                 "or checkpointed, so the newest checkpoint is from before")
        self._metric_sum += metrics.sum(axis=0)
        self._metric_count += metrics.shape[0]

    def advance(self, steps: int, updates: int, finished: bool = False) -> None:
        """Evaluate and log what is due at ``steps``; ``finished`` forces the final evaluation and row."""
        evaluation, scheduled = {}, steps
        if steps >= self.next_eval or finished:
            started = time.perf_counter()
            evaluation = self.final = self.evaluate()
            self.eval_seconds += time.perf_counter() - started
            while self.next_eval <= steps:
                scheduled = self.next_eval
                self.next_eval += self.p.eval_interval or math.inf
            if finished:
                scheduled = steps
        if steps >= self.next_epoch or finished or evaluation:
            self._end_epoch(steps, updates, evaluation, display=steps >= self.next_epoch or finished)
            while self.next_epoch <= steps:
                self.next_epoch += self.p.epoch_length
        callback = self.on_evaluation
        if evaluation and callback is not None and callback(scheduled, evaluation) and not finished \
                and self.stop is not None:
            self.stop.request(EVALUATION_STOP)

    def _end_epoch(self, steps: int, updates: int, evaluation: dict[str, float], display: bool) -> None:
        now = time.perf_counter()
        t0, steps0, updates0 = self._epoch_start
        row: dict[str, float] = {"time/eval_s": round(self.eval_seconds, 3), "charts/updates": updates,
                                 "charts/SPS": (steps - steps0) / max(now - t0, 1e-9),
                                 "charts/UPS": (updates - updates0) / max(now - t0, 1e-9)}
        row.update(episode_row(self._episodes))
        means = self._metric_sum / self._metric_count if self._metric_count else np.full_like(self._metric_sum, np.nan)
        row.update({k: float(v) for k, v in zip(self.metric_names, means)})
        row.update(evaluation or {k: float("nan") for k in EVAL_KEYS})
        self.logger.write(steps, row)
        epoch = steps // self.p.epoch_length
        due = epoch % self.p.display_interval == 0 and now - self._last_display >= MIN_DISPLAY_SECONDS
        if self.verbose and display and (due or evaluation or steps >= self.p.total_steps):
            self.logger.display(steps, row, self.console_metrics)
            self._last_display = now
        self._episodes, self._metric_count = [], 0
        self._metric_sum[:] = 0
        self._epoch_start = (time.perf_counter(), steps, updates)


EVAL_KEYS = ("eval/return_mean", "eval/return_std", "eval/return_min", "eval/return_max",
             "eval/length_mean", "eval/length_std", "eval/length_min", "eval/length_max")


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
