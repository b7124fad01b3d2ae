"""Videos of a policy: deterministic episodes rendered off-screen to an .mp4 or .gif file.

Frames come from gymnasium's ``render_mode="rgb_array"``, so no display is needed (a cluster
node has none): the first frame after each reset, then one per step. For Atari games that is the
full-colour screen after each agent step (four emulator frames), not the 84x84 grey input the
policy sees. MP4 is written through imageio's ffmpeg plugin (H.264; the ffmpeg binary ships
with the imageio-ffmpeg package) and keeps every frame; GIF through imageio's Pillow plugin, whose
encoder keeps a run of identical frames as one frame shown for their summed time. Either file
appears whole or not at all.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import numpy as np

from aquaml.acting.worker import reset_env, step_env
from aquaml.envs.atari import FRAME_SKIP, is_atari_id, make_env
from aquaml.storage import atomic_path

#: Video formats by file suffix.
VIDEO_FORMATS = (".mp4", ".gif")

Policy = Callable[[Mapping[str, np.ndarray], bool], Mapping[str, Any]]


def check_video_path(path: str) -> None:
    """Raise ValueError unless ``path`` ends in a suffix of ``VIDEO_FORMATS``."""
    if os.path.splitext(path)[1].lower() not in VIDEO_FORMATS:
        raise ValueError(f"video path {path!r} must end in {' or '.join(VIDEO_FORMATS)}")


def render_episodes(env_id: str, policy: Policy, episodes: int = 1, seed: int = 0, state_info: Any = None,
                    max_steps: int = 100_000) -> tuple[list[np.ndarray], list[float]]:
    """Run ``episodes`` deterministic episodes of ``policy`` on ``env_id`` (episode ``k`` reset
    with ``seed + k``) and return every rendered frame ``(H, W, 3)`` uint8 and each episode's return."""
    env = make_env(env_id, render_mode="rgb_array")
    if state_info is not None:
        env.set_recurrent_info(state_info)
    obs_info = env.obs_info
    frames, returns = [], []
    try:
        for k in range(episodes):
            obs = reset_env(env, obs_info, seed + k)
            frames.append(np.asarray(env.env.render()))
            total, steps, done = 0.0, 0, False
            while not done and steps < max_steps:
                out = policy({n: obs[n][None] for n in obs_info.names}, True)
                result = step_env(env, obs_info, {a: np.array(v[0]) for a, v in out.items()})
                frames.append(np.asarray(env.env.render()))
                total += result.reward["total_reward"]
                steps += 1
                obs, done = result.obs, result.terminated or result.truncated
            returns.append(total)
    finally:
        env.close()
    return frames, returns


def frames_per_second(env_id: str) -> float:
    """The playback rate: the environment's ``render_fps`` (Atari: per agent step, a quarter of it)."""
    env = make_env(env_id)
    try:
        fps = float(env.env.metadata.get("render_fps") or 30)
    finally:
        env.close()
    return fps / FRAME_SKIP if is_atari_id(env_id) else fps


def write_video(path: str, frames: list[np.ndarray], fps: float) -> None:
    """Write ``frames`` to ``path`` (.mp4 or .gif) atomically.

    Raises:
        ValueError: an unknown suffix or no frames.
    """
    import imageio.v2 as imageio
    check_video_path(path)
    if not frames:
        raise ValueError("no frames to write")
    mp4 = path.lower().endswith(".mp4")
    if mp4:  # H.264 in yuv420p needs even sides: pad by one row or column of black where odd
        h, w = frames[0].shape[:2]
        frames = [np.pad(f, ((0, h % 2), (0, w % 2), (0, 0))) for f in frames]
    with atomic_path(path) as tmp:
        if mp4:
            with imageio.get_writer(tmp, fps=fps, codec="libx264", macro_block_size=1, format="FFMPEG") as writer:
                for frame in frames:
                    writer.append_data(frame)
        else:
            imageio.mimsave(tmp, frames, format="GIF", duration=1000.0 / fps, loop=0)


def record_video(path: str, env_id: str, policy: Policy, episodes: int = 1, seed: int = 0,
                 state_info: Any = None) -> tuple[int, list[float]]:
    """Render ``episodes`` deterministic episodes to ``path``; returns the frame count and the returns."""
    check_video_path(path)
    frames, returns = render_episodes(env_id, policy, episodes, seed, state_info)
    write_video(path, frames, frames_per_second(env_id))
    return len(frames), returns
