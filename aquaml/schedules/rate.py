"""ReplayRatio: the one rate limiter between environment steps and gradient updates.

Off-policy training keeps ``ratio`` gradient updates per environment step once ``learning_starts``
steps are stored, run in bursts every ``interval`` steps. Both sides ask the same object: the
learner how many updates the steps so far allow (``updates_due``), each actor how far it may step
before it waits for the learner (``steps_allowed``), in the spirit of Reverb's
``SampleToInsertRatio``.

The two answers are tied together so that no setting can stall: ``steps_allowed`` always lets the
actors, together, reach the step count at which the next burst is due. (A fixed allowance of
``learning_starts + updates / ratio`` steps does not: with ``ratio * workers * lead < 1`` every
actor stops one step short of the next update, and learner and actors wait on each other forever.)
"""
from __future__ import annotations

import math
from typing import Any


class ReplayRatio:
    """``ratio`` updates per environment step after ``learning_starts`` steps, held both ways.

    Args:
        ratio: gradient updates per environment step (> 0).
        learning_starts: environment steps stored before the first update is due.
        lead: steps each actor may run ahead of the step count the updates so far allow.
        interval: updates come in bursts, once at least ``interval`` steps were added since the
            last burst (1: after every step).

    Raises:
        ValueError: ``ratio`` is not a finite number > 0, or a count is out of range.
    """

    def __init__(self, ratio: float, learning_starts: int, lead: int = 0, interval: int = 1) -> None:
        if not (ratio > 0 and math.isfinite(ratio)):
            raise ValueError(f"replay_ratio must be a finite number > 0, got {ratio!r}")
        if learning_starts < 0 or lead < 0 or interval < 1:
            raise ValueError(f"learning_starts and lead must be >= 0 and interval >= 1, got {learning_starts!r}, "
                             f"{lead!r}, {interval!r}")
        self.ratio, self.learning_starts, self.lead = float(ratio), int(learning_starts), int(lead)
        self.interval = int(interval)
        self.last_burst = 0

    @classmethod
    def of(cls, params: Any) -> "ReplayRatio":
        """The limiter ``ReplayParameters`` describe."""
        return cls(params.replay_ratio, params.learning_starts, params.max_worker_lead, params.update_interval)

    def updates_allowed(self, steps: int) -> int:
        """Updates the first ``steps`` environment steps allow in all."""
        if steps < self.learning_starts:
            return 0
        return int((steps - self.learning_starts) * self.ratio)

    def updates_due(self, steps: int, updates: int, final: bool = False) -> int:
        """Updates to run now, after ``updates`` of them, with ``steps`` environment steps stored:
        none between bursts, except at the end (``final``), when every allowed update is due.
        Deciding on a burst moves the burst mark to ``steps``."""
        if steps < self.learning_starts or not (final or steps - self.last_burst >= self.interval):
            return 0
        self.last_burst = steps
        return max(0, self.updates_allowed(steps) - updates)

    def next_due_steps(self, updates: int) -> int:
        """The smallest step count at which update ``updates + 1`` is allowed."""
        steps = self.learning_starts + math.ceil((updates + 1) / self.ratio)
        while self.updates_allowed(steps) <= updates:  # floating-point rounding in the product above
            steps += 1
        while steps > self.learning_starts and self.updates_allowed(steps - 1) > updates:
            steps -= 1
        return steps

    def steps_allowed(self, updates: int, workers: int) -> int:
        """How many steps each of ``workers`` actors may have taken while ``updates`` are done.

        Together the actors reach the step count at which the next burst is due (the next update
        is allowed at ``next_due_steps(updates)``, and a burst comes at most ``interval - 1``
        steps later), each its even share rounded up, and ``lead`` steps beyond.
        """
        return math.ceil((self.next_due_steps(updates) + self.interval - 1) / workers) + self.lead
