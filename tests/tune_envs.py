"""Gymnasium environments for the tuning tests, registered on import: ``--env tune_envs:AquamlTarget-v0``.

AquamlTarget-v0: a one-dimensional action, reward ``-|action - 0.5|`` per step, five steps per
episode; SAC learns it in a few hundred steps, so a configuration that cannot learn (a learning
rate of 1e-8) stays measurably worse. AquamlFailingEval-v0 is the same task whose reset raises
for the seed of the first evaluation episode of the trial with seed 1 (evaluations reset with
``seed + 1_000_003 + k``): that trial fails on its optimizer while it trains, every other trial runs.
"""
import gymnasium as gym
import numpy as np

#: The reset seed that AquamlFailingEval-v0 refuses: trial seed 1, evaluation episode 0.
FAILING_SEED = 1 + 1_000_003


class TargetEnv(gym.Env):
    observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, horizon=5, target=0.5, failing_seed=None):
        self.horizon, self.target, self.failing_seed = horizon, target, failing_seed
        self.t = 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        if self.failing_seed is not None and seed == self.failing_seed:
            raise RuntimeError(f"deliberate failure: evaluation reset with seed {seed}")
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        reward = -abs(float(np.asarray(action).reshape(-1)[0]) - self.target)
        return np.array([self.t / self.horizon], np.float32), reward, False, self.t >= self.horizon, {}


gym.register("AquamlTarget-v0", entry_point=TargetEnv)
gym.register("AquamlFailingEval-v0", entry_point=TargetEnv, kwargs={"failing_seed": FAILING_SEED})
