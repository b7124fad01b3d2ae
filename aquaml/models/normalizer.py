"""Running mean and variance of observations, mergeable across workers (Chan et al.'s parallel update)."""
from __future__ import annotations

from typing import Mapping

import numpy as np


class RunningMeanStd:
    """Mean and variance over every sample seen, kept in float64.

    ``update(batch)`` folds in a batch; ``merge(other)`` folds in statistics gathered elsewhere, and
    the result is the same as one pass over all the samples together.
    """

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = 0.0

    def update(self, batch: np.ndarray) -> None:
        batch = np.asarray(batch, np.float64).reshape((-1,) + self.mean.shape)
        if len(batch):
            self.merge_moments(batch.mean(axis=0), batch.var(axis=0), float(len(batch)))

    def merge_moments(self, mean: np.ndarray, var: np.ndarray, count: float) -> None:
        if count <= 0:
            return
        if self.count == 0:
            self.mean, self.var, self.count = np.array(mean, np.float64), np.array(var, np.float64), float(count)
            return
        total = self.count + count
        delta = mean - self.mean
        m2 = self.var * self.count + var * count + np.square(delta) * self.count * count / total
        self.mean = self.mean + delta * count / total
        self.var = m2 / total
        self.count = total

    def merge(self, other: "RunningMeanStd") -> None:
        self.merge_moments(other.mean, other.var, other.count)

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": np.array(self.count)}

    def load(self, state: Mapping[str, np.ndarray]) -> None:
        self.mean, self.var = np.array(state["mean"], np.float64), np.array(state["var"], np.float64)
        self.count = float(state["count"])
