"""Exploration over Q-values: epsilon schedules, epsilon-greedy and Boltzmann choices, and the
policy that workers act with.

Everything here is numpy, so that it runs beside the numpy act program of
``aquaml.acting.inference`` on worker ranks and beside TensorFlow in one process.

- ``EpsilonSchedule``: epsilon as a function of the global environment step, linear (over a
  fraction of the run, as Stable-Baselines3) or exponential (``epsilon *= 1 - decay`` per step,
  as KeRLym), never below ``epsilon_min``.
- ``epsilon_greedy``: replace each greedy action by a uniform one with probability epsilon.
- Boltzmann sampling (ReAllY's "thompson") is ``argmax(Q / temperature + Gumbel noise)``, a draw
  from ``softmax(Q / temperature)``; the act graph computes it from noise drawn here.
- ``ExplorationPolicy``: a host policy (greedy or Boltzmann, from the traced act graph) followed
  by the epsilon step, counting the steps it acted on so that epsilon follows the global step.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np


class EpsilonSchedule:
    """Epsilon at a global environment step.

    Args:
        start: epsilon at step 0 (``epsilon``).
        end: the floor (``epsilon_min``).
        kind: ``'linear'``: from ``start`` to ``end`` over ``decay_steps`` steps, then ``end``;
            ``'exponential'``: ``max(end, start * (1 - decay) ** step)``.
        decay_steps: the linear schedule's length in steps (0: ``end`` from the start).
        decay: the exponential schedule's per-step decay, in [0, 1).

    Raises:
        ValueError: an unknown ``kind``.
    """

    KINDS = ("linear", "exponential")

    def __init__(self, start: float, end: float, kind: str = "linear", decay_steps: int = 0,
                 decay: float = 0.0) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"epsilon_schedule must be one of {self.KINDS}, got {kind!r}")
        self.start, self.end, self.kind = float(start), float(end), kind
        self.decay_steps, self.decay = int(decay_steps), float(decay)

    def __call__(self, step: int) -> float:
        if self.kind == "linear":
            if self.decay_steps <= 0:
                return self.end
            fraction = min(1.0, max(0, step) / self.decay_steps)
            return self.start + fraction * (self.end - self.start)
        if self.decay <= 0.0:
            return max(self.end, self.start)
        # (1 - decay) ** step, as exp(step * log1p(-decay)): no underflow warnings for long runs
        return max(self.end, self.start * math.exp(max(0, step) * math.log1p(-self.decay)))


def epsilon_greedy(actions: np.ndarray, epsilon: float, num_actions: int, rng: np.random.Generator) -> np.ndarray:
    """``actions`` (batch,) with each entry replaced, with probability ``epsilon``, by a uniform
    choice among ``num_actions`` (which may be the greedy one again, as in the DQN paper).

    Two draws per entry come from ``rng`` whatever epsilon is, so the stream's position depends
    only on how many actions were taken (a resumed run draws the same numbers).
    """
    explore = rng.random(len(actions)) < epsilon
    uniform = rng.integers(0, num_actions, size=len(actions))
    return np.where(explore, uniform, actions).astype(actions.dtype, copy=False)


def boltzmann_probabilities(q_values: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(q_values / temperature)`` over the last axis: what Boltzmann sampling draws from."""
    z = np.asarray(q_values, np.float64) / temperature
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


class ExplorationPolicy:
    """``policy(obs, deterministic) -> {'action': (batch,) int64}`` for workers, with epsilon.

    Wraps a ``HostPolicy`` of the act graph (greedy, or a Boltzmann draw from its Gumbel noise).
    Exploring calls then apply ``epsilon_greedy`` with epsilon at the global step
    ``warmup_steps + workers * steps``, where ``steps`` counts the environment steps this policy
    acted on. In one process that is the run's step count; with ``workers`` worker ranks it is the
    count of an even split (each worker steps about as fast as the others, and the rate limiter
    keeps them near each other). Deterministic calls are greedy and count nothing.

    ``rng`` is the host policy's stream (its Gumbel noise and the epsilon draws); ``state_dict``
    holds it with the step count, so a resumed worker continues the same schedule and draws.
    """

    def __init__(self, host: Any, schedule: EpsilonSchedule | None, num_actions: int, warmup_steps: int,
                 workers: int = 1) -> None:
        self.host, self.schedule, self.num_actions = host, schedule, int(num_actions)
        self.warmup_steps, self.workers = int(warmup_steps), int(workers)
        self.steps = 0

    @property
    def rng(self) -> np.random.Generator:
        return self.host.rng

    @property
    def backend(self) -> str:
        return self.host.backend

    def global_step(self) -> int:
        """The step the schedule reads for this policy's next action."""
        return self.warmup_steps + self.workers * self.steps

    def epsilon(self) -> float:
        """Epsilon for the next exploring call (0 for Boltzmann exploration)."""
        return 0.0 if self.schedule is None else self.schedule(self.global_step())

    def explore(self, actions: np.ndarray) -> np.ndarray:
        """The epsilon step on greedy (or Boltzmann) ``actions``; counts them as taken."""
        if self.schedule is not None:
            actions = epsilon_greedy(actions, self.epsilon(), self.num_actions, self.rng)
        self.steps += len(actions)
        return actions

    def __call__(self, obs: Mapping[str, np.ndarray], deterministic: bool = False) -> dict[str, np.ndarray]:
        out = self.host(obs, deterministic)
        if not deterministic:
            out["action"] = self.explore(out["action"])
        return out

    def sync(self) -> None:
        self.host.sync()

    def load(self, weights: list[np.ndarray]) -> None:
        self.host.load(weights)

    def state_dict(self) -> dict[str, Any]:
        """What a worker snapshot keeps: the step count and the random stream (JSON-able)."""
        return {"steps": self.steps, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.rng.bit_generator.state = state["rng"]
