"""Epoch bookkeeping shared by every schedule: evaluation when due and one logged row per epoch."""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np

from aquaml.run.logger import RunLogger
from aquaml.acting.worker import EpisodeStats, evaluate


#: Console lines come at most this often (short on-policy rounds would otherwise flood it);
#: every epoch still gets its progress.csv row, and evaluations are always shown.
MIN_DISPLAY_SECONDS = 2.0


class Progress:
    """Epoch bookkeeping shared by every schedule: evaluation when due, one logged row per epoch.

    Callers report finished episodes and update metrics as they come, and call ``advance`` with
    the environment-step and update counts after each unit of work.
    """

    def __init__(self, starter: Any, logger: RunLogger) -> None:
        self.s, self.logger, self.p = starter, logger, starter.params
        self.next_epoch, self.next_eval = self.p.epoch_length, self.p.eval_interval or math.inf
        self.final: dict[str, float] = {}
        self._episodes: list = []
        self._metric_sum = np.zeros(len(starter.algo.metric_names))
        self._metric_count = 0
        self._epoch_start = (time.perf_counter(), 0, 0)
        self._last_display = -math.inf

    def state_dict(self) -> dict[str, Any]:
        """The bookkeeping a checkpoint keeps: due steps, the epoch so far, the last evaluation."""
        return {"next_epoch": self.next_epoch, "next_eval": self.next_eval, "final": dict(self.final),
                "episodes": [dataclasses.asdict(e) for e in self._episodes], "metric_sum": self._metric_sum.copy(),
                "metric_count": self._metric_count, "epoch_start": self._epoch_start[1:],
                "elapsed": self.logger.elapsed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.next_epoch, self.next_eval, self.final = state["next_epoch"], state["next_eval"], dict(state["final"])
        self._episodes = [EpisodeStats(**e) for e in state["episodes"]]
        self._metric_sum[:] = state["metric_sum"]
        self._metric_count = state["metric_count"]
        self._epoch_start = (time.perf_counter(), *state["epoch_start"])

    def add_episodes(self, episodes: list) -> None:
        self._episodes += episodes

    def add_metrics(self, metrics: np.ndarray) -> None:
        """Add one update's metrics, or a ``(k, n)`` array of ``k`` updates' metrics."""
        metrics = np.atleast_2d(metrics)
        self._metric_sum += metrics.sum(axis=0)
        self._metric_count += metrics.shape[0]

    def advance(self, steps: int, updates: int, finished: bool = False) -> None:
        """Evaluate and log what is due at ``steps``; ``finished`` forces the final evaluation and row."""
        evaluation = {}
        if steps >= self.next_eval or finished:
            evaluation = self.final = evaluate_policy(self.s, self.p.calculate_episodes)
            while self.next_eval <= steps:
                self.next_eval += self.p.eval_interval or math.inf
        if steps >= self.next_epoch or finished or evaluation:
            self._end_epoch(steps, updates, evaluation, display=steps >= self.next_epoch or finished)
            while self.next_epoch <= steps:
                self.next_epoch += self.p.epoch_length

    def _end_epoch(self, steps: int, updates: int, evaluation: dict[str, float], display: bool) -> None:
        now = time.perf_counter()
        t0, steps0, updates0 = self._epoch_start
        row: dict[str, float] = {"charts/updates": updates,
                                 "charts/SPS": (steps - steps0) / max(now - t0, 1e-9),
                                 "charts/UPS": (updates - updates0) / max(now - t0, 1e-9)}
        row.update(episode_row(self._episodes))
        means = self._metric_sum / self._metric_count if self._metric_count else np.full_like(self._metric_sum, np.nan)
        row.update({k: float(v) for k, v in zip(self.s.algo.metric_names, means)})
        row.update(evaluation or {k: float("nan") for k in EVAL_KEYS})
        self.logger.write(steps, row)
        epoch = steps // self.p.epoch_length
        due = epoch % self.p.display_interval == 0 and now - self._last_display >= MIN_DISPLAY_SECONDS
        if self.s.verbose and display and (due or evaluation or steps >= self.p.total_steps):
            self.logger.display(steps, row)
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


def evaluate_policy(starter: Any, episodes: int) -> dict[str, float]:
    """Deterministic evaluation of the starter's current policy on its evaluation environment."""
    policy = starter.eval_policy
    policy.sync()  # the weights as they are now, fixed for the whole evaluation
    return evaluate(starter.eval_envs, starter.obs_info, policy, episodes, seed=starter.params.seed + 1_000_003)
