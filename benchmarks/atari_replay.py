"""Atari figures: replay memory per transition (frame buffer against a plain buffer) and the frames
per second a worker steps against the raw ALE loop.

    python benchmarks/atari_replay.py [--env ALE/Pong-v5] [--steps 2000] [--rounds 3]

Memory: the bytes one stored transition takes in every array of the buffer DQN makes for
``(4, 84, 84)`` uint8 observations, with ``optimize_memory_usage`` (``FrameReplayBuffer``: two
frames and two small counters per row) and without (``ReplayBuffer``: ``obs`` and ``next_obs``,
eight frames). Target: at most 1/3.5 of the plain buffer's.

Speed, one thread: the raw loop steps the same preprocessed environment (AtariPreprocessing,
FrameStackObservation) with random actions and nothing else; the worker is ``aquaml.Worker``
acting with DQN's host policy (the default Nature-DQN Q-network, epsilon-greedy) and writing
every transition into the frame buffer, as a worker rank does. Frames are emulator frames (4 per
agent step). Rounds alternate; medians are printed.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aquaml.parallel.devices import limit_tf_threads  # noqa: E402


def build(env_id: str, optimize: bool):
    from aquaml import DQN, DQNParameters
    from aquaml.envs.atari import atari_env
    from aquaml.models.base import build_models
    from aquaml.algos.registry import default_models
    env = atari_env(env_id)
    models = default_models("dqn", env.obs_info, env.action_info)
    specs, action_info = build_models(models, ("actor",), env.obs_info, env.action_info, critics_take_action=False)
    algo = DQN(specs, env.obs_info, action_info, DQNParameters(buffer_size=10_000, optimize_memory_usage=optimize,
                                                              learning_starts=0, total_steps=10_000_000))
    return env, algo, algo.make_buffer()


def row_bytes(buffer) -> int:
    return int(sum(a[0, 0].nbytes if a.ndim > 2 else a.itemsize for a in buffer.arrays.values()))


def raw_loop(env, steps: int) -> float:
    import numpy as np
    rng = np.random.default_rng(0)
    space = env.env.action_space
    env.env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.env.step(int(rng.integers(space.n)))
        if terminated or truncated:
            env.env.reset()
    return 4 * steps / (time.perf_counter() - start)


def worker_loop(env, algo, buffer, steps: int) -> float:
    from aquaml.acting.worker import Worker
    policy = algo.host_policy(seed=1)
    worker = Worker([env], env.obs_info, algo.action_info, policy, buffer, seed=0)
    worker.step()
    start = time.perf_counter()
    for _ in range(steps):
        worker.step()
    return 4 * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="ALE/Pong-v5")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    limit_tf_threads(1, 1)
    env, algo, frames = build(args.env, True)
    _, _, plain = build(args.env, False)
    ours, theirs = row_bytes(frames), row_bytes(plain)
    print(f"atari_replay memory bytes_per_transition frame_buffer={ours} plain_buffer={theirs} "
          f"ratio=1/{theirs / ours:.2f} target<=1/3.5 {'met' if theirs / ours >= 3.5 else 'NOT met'}", flush=True)
    raw, worker = [], []
    for k in range(args.rounds):
        raw.append(raw_loop(env, args.steps))
        worker.append(worker_loop(env, algo, frames, args.steps))
        print(f"round {k}: raw ALE loop {raw[-1]:.0f} frames/s, worker {worker[-1]:.0f} frames/s "
              f"(policy backend {algo.host_policy(seed=1).backend})", flush=True)
    print(f"atari_replay speed raw_frames_per_s={statistics.median(raw):.0f} "
          f"worker_frames_per_s={statistics.median(worker):.0f} "
          f"worker/raw={statistics.median(worker) / statistics.median(raw):.2f}")


if __name__ == "__main__":
    main()
