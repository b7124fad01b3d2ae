"""A task that needs memory: a cue shown at the first step, the action that matches it due at the last.

The actor sees ``cue`` (the cue at step 0, zeros afterwards); the critics see ``state`` (the cue and
the time, the full state). The only reward comes at the last step: ``-(action - cue)^2``. A policy
that remembers the cue scores 0; one that cannot (a feed-forward actor sees zeros at the last
step) scores at best -1 on average over balanced cues.
"""
import numpy as np
import tensorflow as tf

from aquaml import DataInfo, RLBaseEnv, RLBaseModel

LENGTH = 6


class CueEnv(RLBaseEnv):
    """Episodes of LENGTH steps; ``reset(seed)`` with an even seed shows +1, an odd seed -1."""

    def __init__(self, length: int = LENGTH, seed: int = 0):
        super().__init__()
        self.length = length
        self.rng = np.random.default_rng(seed)
        self._obs_info = DataInfo(("cue", "state"), ((1,), (2,)), np.float32)
        self._action_info = DataInfo("action", (1,), np.float32)
        self.t, self.value = 0, 1.0

    def _obs(self):
        shown = self.value if self.t == 0 else 0.0
        return {"cue": np.array([shown], np.float32),
                "state": np.array([self.value, self.t / self.length], np.float32)}

    def reset(self, seed=None):
        self.t = 0
        self.value = (1.0 if seed % 2 == 0 else -1.0) if seed is not None else float(self.rng.choice((-1.0, 1.0)))
        return self._obs()

    def step(self, action_dict):
        self.t += 1
        last = self.t == self.length
        a = float(np.asarray(action_dict["action"]).reshape(-1)[0])
        reward = -(a - self.value) ** 2 if last else 0.0
        return self._obs(), {"total_reward": reward}, last, False, {}


class LSTMActor(RLBaseModel):
    def __init__(self, units: int = 16):
        super().__init__()
        self.cell = tf.keras.layers.LSTMCell(units)
        self.dense = tf.keras.layers.Dense(32, activation="relu")
        self.mean = tf.keras.layers.Dense(1)
        self.learning_rate = 3e-3
        self.input_name = ("cue", "hidden1", "hidden2")
        self.output_info = {"action": (1,), "hidden1": (units,), "hidden2": (units,)}

    def call(self, cue, hidden1, hidden2):
        out, (h, c) = self.cell(cue, [hidden1, hidden2])
        return (self.mean(self.dense(out)), h, c)


class MLPActor(RLBaseModel):
    def __init__(self):
        super().__init__()
        self.dense = tf.keras.layers.Dense(32, activation="relu")
        self.mean = tf.keras.layers.Dense(1)
        self.learning_rate = 3e-3
        self.input_name = ("cue",)
        self.output_info = {"action": (1,)}

    def call(self, cue):
        return (self.mean(self.dense(cue)),)


class StateQ(RLBaseModel):
    def __init__(self):
        super().__init__()
        self.d1 = tf.keras.layers.Dense(64, activation="relu")
        self.d2 = tf.keras.layers.Dense(64, activation="relu")
        self.q = tf.keras.layers.Dense(1)
        self.learning_rate = 3e-3
        self.input_name = ("state", "action")

    def call(self, state, action):
        return self.q(self.d2(self.d1(tf.concat([state, action], axis=-1))))
