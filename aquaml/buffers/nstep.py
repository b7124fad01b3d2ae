"""n-step transitions read out of a replay buffer's slices.

A worker writes one row per environment step; a worker stepping ``stride`` environments writes
their rows interleaved, so one environment's consecutive steps are ``stride`` rows apart. The
``n``-step transition that starts at row ``t`` reads rows ``t, t + stride, ..., t + (n-1) stride``
and stops early at the first row that ended its episode (terminated or truncated)::

    m         = 1 + (index of the first ended row among the n, or n - 1)
    return    = sum_{k < m} gamma^k r_{t + k stride}
    bootstrap = gamma^m * (1 - terminated at the cut row)
    next_obs  = the next observation stored with the cut row (the true final one on truncation)

so that ``y = return + bootstrap * V(next_obs)`` bootstraps through truncation and not through
termination, and never crosses an episode end. With ``n = 1`` this is the one-step transition.

Rows are named by their write count ("global row": the counter value when written), which
is what the priorities of ``aquaml.buffers.prioritized`` are kept against; the array row is
``global_row % slice_capacity``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from aquaml.buffers.frames import FrameReplayBuffer
from aquaml.buffers.replay import ReplayBuffer


def window_starts(buffer: ReplayBuffer, n: int, counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per slice, the first and one-past-last global row at which an ``n``-step window starts
    whose rows are all written and still held, at ``counts`` (default: the counters now)."""
    return buffer.sequence_starts(n, counts)


def gather(buffer: ReplayBuffer, names: Sequence[str], slices: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Columns ``names`` of the given global rows (a frame buffer rebuilds its stacked
    observations; see ``aquaml.buffers.frames``)."""
    if isinstance(buffer, FrameReplayBuffer):
        return buffer.gather(names, slices, rows)
    local = rows % buffer.slice_capacity
    return {n: buffer.arrays[n][slices, local] for n in names}


def uniform_rows(buffer: ReplayBuffer, n: int, size: int, rng: np.random.Generator,
                 counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``size`` (slice, global row) pairs drawn uniformly, with replacement, over every row that
    starts a whole ``n``-step window (and, in a frame buffer, whose stacked frames are all held),
    at ``counts`` (default: the counters now).

    Raises:
        ValueError: no slice holds such a row yet.
    """
    first, end = window_starts(buffer, n, counts)
    held = end - first
    total = int(held.sum())
    if total == 0:
        raise ValueError(f"no slice of the replay buffer holds an {n}-step window yet "
                         f"(rows per slice: {buffer.filled().tolist()})")
    slices = np.empty(size, np.int64)
    rows = np.empty(size, np.int64)
    missing = np.arange(size)
    offsets = np.cumsum(held) - held
    frames = isinstance(buffer, FrameReplayBuffer)
    for _ in range(64):  # rejection sampling keeps the draw uniform over the valid rows
        flat = rng.integers(0, total, size=len(missing))
        s = np.searchsorted(offsets, flat, side="right") - 1  # empty slices share the next one's offset
        g = first[s] + flat - offsets[s]
        ok = buffer.valid(s, g) if frames else np.ones(len(missing), bool)
        slices[missing[ok]], rows[missing[ok]] = s[ok], g[ok]
        missing = missing[~ok]
        if not len(missing):
            return slices, rows
    raise ValueError("the replay buffer holds almost no rows whose stacked frames are complete")


def n_step_batch(buffer: ReplayBuffer, obs_names: Sequence[str], slices: np.ndarray, rows: np.ndarray,
                 n: int, gamma: float) -> dict[str, np.ndarray]:
    """The ``n``-step transitions starting at global ``rows`` of ``slices`` (see the module doc).

    Returns ``{obs names, 'next_' + obs names, 'action', 'reward' (the n-step return),
    'discount' (the bootstrap factor)}``, each ``(batch, *shape)``; float32 for the two sums.
    """
    stride = buffer.stride
    steps = [gather(buffer, ("reward", "terminated", "truncated"), slices, rows + k * stride) for k in range(n)]
    ret = np.zeros(len(rows), np.float64)
    alive = np.ones(len(rows), bool)
    cut = np.zeros(len(rows), np.int64)
    for k, step in enumerate(steps):
        ret += np.where(alive, gamma ** k * step["reward"], 0.0)
        cut = np.where(alive, k, cut)
        alive &= ~((step["terminated"] > 0.5) | (step["truncated"] > 0.5))
    terminated = np.choose(cut, [s["terminated"] for s in steps]) if n > 1 else steps[0]["terminated"]
    discount = np.power(gamma, cut + 1) * (1.0 - (terminated > 0.5))
    first = gather(buffer, tuple(obs_names) + ("action",), slices, rows)
    last = gather(buffer, tuple("next_" + o for o in obs_names), slices, rows + cut * stride)
    return {**first, **last, "reward": ret.astype(np.float32), "discount": discount.astype(np.float32)}

