"""Atari games through ale-py (its ROMs ship with the package), preprocessed by gymnasium's own wrappers.

``atari_env('ALE/Pong-v5')`` is the usual DQN pipeline with no hand-written preprocessing:
``gymnasium.make(id, frameskip=1)`` (ALE skips no frames itself), then ``AtariPreprocessing``
(up to 30 no-op starts, the action repeated over 4 frames with the last two max-pooled, grey
84x84 uint8) and ``FrameStackObservation`` (the last 4 frames on axis 0, padded at reset with
the first frame). The observation is ``obs``: ``(4, 84, 84)`` uint8, which the default models
send through the Nature-DQN trunk and DQN's ``optimize_memory_usage`` stores one frame per step.

``make_env(id)`` is what the command line and the starter use for a gymnasium id: Atari ids
(``ALE/...`` or ``...NoFrameskip-v4``) get this pipeline, any other id plain ``GymnasiumEnv``.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym

from aquaml.envs.gymnasium_env import GymnasiumEnv

#: AtariPreprocessing's and FrameStackObservation's settings used here (the DQN paper's).
FRAME_SKIP, SCREEN_SIZE, STACK = 4, 84, 4


def is_atari_id(env_id: str) -> bool:
    """Whether a gymnasium id names an ALE game."""
    return env_id.startswith("ALE/") or env_id.endswith("NoFrameskip-v4")


def atari_env(env_id: str, stack: int = STACK, terminal_on_life_loss: bool = False,
              render_mode: str | None = None, **make_kwargs: Any) -> GymnasiumEnv:
    """``env_id`` through AtariPreprocessing and FrameStackObservation, as a GymnasiumEnv.

    Raises:
        gymnasium.error.Error: the id is unknown (ale-py not installed, or no such game).
    """
    import ale_py
    gym.register_envs(ale_py)
    kwargs = dict(make_kwargs)
    if env_id.startswith("ALE/"):
        kwargs.setdefault("frameskip", 1)  # AtariPreprocessing skips frames; ALE must not as well
    base = gym.make(env_id, render_mode=render_mode, **kwargs)
    env = gym.wrappers.AtariPreprocessing(base, frame_skip=FRAME_SKIP, screen_size=SCREEN_SIZE,
                                          terminal_on_life_loss=terminal_on_life_loss)
    wrapped = GymnasiumEnv(gym.wrappers.FrameStackObservation(env, stack))
    wrapped.env_id = env_id
    return wrapped


def make_env(env_id: str, render_mode: str | None = None) -> GymnasiumEnv:
    """The environment for a gymnasium id: Atari games preprocessed (``atari_env``), any other id
    as it is registered."""
    if is_atari_id(env_id):
        return atari_env(env_id, render_mode=render_mode)
    if render_mode is None:
        return GymnasiumEnv(env_id)
    return GymnasiumEnv(env_id, render_mode=render_mode)
