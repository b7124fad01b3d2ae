"""Small environments and models for tests."""
import csv
import importlib
import os
import sys

import numpy as np
import tensorflow as tf

from aquaml import DataInfo, RLBaseEnv, RLBaseModel


class MLPActor(RLBaseModel):
    def __init__(self, width=64, action_dim=1, obs_name="obs"):
        super().__init__()
        self.d1 = tf.keras.layers.Dense(width, activation="relu")
        self.d2 = tf.keras.layers.Dense(width, activation="relu")
        self.mu = tf.keras.layers.Dense(action_dim)
        self.ls = tf.keras.layers.Dense(action_dim)
        self.learning_rate = 1e-3
        self.input_name = (obs_name,)
        self.output_info = {"action": (action_dim,), "log_std": (action_dim,)}

    def call(self, obs):
        x = self.d2(self.d1(obs))
        return (self.mu(x), self.ls(x))


class MLPQ(RLBaseModel):
    def __init__(self, width=64, obs_name="obs"):
        super().__init__()
        self.d1 = tf.keras.layers.Dense(width, activation="relu")
        self.d2 = tf.keras.layers.Dense(width, activation="relu")
        self.q = tf.keras.layers.Dense(1)
        self.learning_rate = 1e-3
        self.input_name = (obs_name, "action")

    def call(self, obs, action):
        return self.q(self.d2(self.d1(tf.concat([obs, action], -1))))


class CountingEnv(RLBaseEnv):
    """obs = [t / horizon]; reward = -|action - target|; truncates at ``horizon``; counts steps taken."""

    def __init__(self, horizon=5, target=0.5, terminate_at=None):
        super().__init__()
        self.horizon, self.target, self.terminate_at = horizon, target, terminate_at
        self._obs_info = DataInfo("obs", (1,), np.float32)
        self.steps_taken = 0
        self.t = 0

    def _obs(self):
        return {"obs": np.array([self.t / self.horizon], np.float32)}

    def reset(self, seed=None):
        self.t = 0
        return self.initial_obs(self._obs())

    def step(self, action_dict):
        self.steps_taken += 1
        self.t += 1
        reward = -abs(float(action_dict["action"][0]) - self.target)
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        truncated = not terminated and self.t >= self.horizon
        return (self.check_obs(self._obs(), action_dict), {"total_reward": reward, "miss": -reward},
                terminated, truncated, {})


class MLPV(RLBaseModel):
    """A state-value critic V(obs) for PPO."""

    def __init__(self, width=64, obs_name="obs"):
        super().__init__()
        self.d1 = tf.keras.layers.Dense(width, activation="relu")
        self.d2 = tf.keras.layers.Dense(width, activation="relu")
        self.v = tf.keras.layers.Dense(1)
        self.learning_rate = 1e-3
        self.input_name = (obs_name,)

    def call(self, obs):
        return self.v(self.d2(self.d1(obs)))


def load_tutorial(name):
    """Import ``tutorials/<name>.py`` as a module (the tutorials are scripts, not a package)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tutorials"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def rank_pids(proc, count: int, timeout: float = 300.0) -> dict[int, int]:
    """The pid of each rank of ``proc`` (an mpiexec of tests/mpi_scripts/run_task.py, stdout a
    pipe), read from its ``rank R role pid P started`` lines until ``count`` ranks have said it.

    Searched in everything read so far, not line by line: with unbuffered output (PYTHONUNBUFFERED)
    a rank's text and its newline can reach the launcher as two writes, so another rank's line can
    land between them. Raises AssertionError (with what was read) at ``timeout`` or when the output
    ends first, so a missed line fails the test instead of blocking it until the job ends.
    """
    import re
    import select
    import time
    deadline, text, fd = time.monotonic() + timeout, b"", proc.stdout.fileno()
    while True:
        pids = {int(r): int(p) for r, p in re.findall(rb"rank (\d+) \w+ pid (\d+) started", text)}
        if len(pids) >= count:
            return pids
        left = deadline - time.monotonic()
        assert left > 0, f"{len(pids)} of {count} ranks started within {timeout} s; read: {text[-2000:]!r}"
        if select.select([fd], [], [], min(left, 1.0))[0]:
            chunk = os.read(fd, 65536)
            assert chunk, f"the output ended after {len(pids)} of {count} ranks started (exit code {proc.wait()}): " \
                          f"{text[-2000:]!r}"
            text += chunk


#: progress.csv's wall-clock columns, which differ between any two runs
TIMING = ("time/elapsed_s", "time/eval_s", "charts/SPS", "charts/UPS")


def curve(run_dir) -> list[dict[str, str]]:
    """progress.csv's rows without the wall-clock columns (``TIMING``)."""
    with open(os.path.join(run_dir, "progress.csv")) as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]
