"""DQN gradient updates per second against Stable-Baselines3's, same network and batch, one thread.

    python benchmarks/dqn_update_speed.py [--updates 2000] [--batch 64] [--rounds 3] [--peer PYTHON]

CartPole-v1 observations and actions, the Q-network rl-baselines3-zoo uses for it (two hidden
layers of 256 ReLU units), batch 64, Double DQN, Huber loss, gradient norm clipped at 10, Adam.
Each aquaml update includes drawing its batch from a filled replay buffer, as Stable-Baselines3's
``DQN.train`` does. aquaml's two paths are timed, both as one process and the MPI optimizer run
them: ``burst`` (``sample_many`` then ``update_many``, 8 updates per compiled call,
``updates_per_call``'s default) runs whenever more than one update is due at once, e.g. the zoo's
CartPole settings (128 updates every 256 steps, the peer's ``train(gradient_steps=128)``);
``single`` (``sample`` then ``update``, one compiled call per update) is a burst of one, e.g.
one update every 4 steps. Each is also timed compiled by XLA (``jit_compile=True``). The peer
(``--peer``, default: the Python that benchmarks/sb3_peer.sh builds) runs benchmarks/sb3_dqn.py
in its own process, alternating with aquaml's rounds; the median of the per-round ratios is
printed. Target: >= 1.5.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))

from aquaml.parallel.devices import limit_tf_threads  # noqa: E402


def build(batch: int, jit: bool = False):
    import numpy as np
    from aquaml import DQN, DQNParameters, GymnasiumEnv
    from aquaml.models.base import build_models
    from aquaml.algos.registry import default_models
    env = GymnasiumEnv("CartPole-v1")
    models = default_models("dqn", env.obs_info, env.action_info, (256, 256), 1e-4)
    specs, action_info = build_models(models, ("actor",), env.obs_info, env.action_info, critics_take_action=False)
    algo = DQN(specs, env.obs_info, action_info, DQNParameters(batch_size=batch, buffer_size=10_000, jit_compile=jit))
    buffer = algo.make_buffer()
    rng = np.random.default_rng(0)
    obs = env.reset(seed=0)["obs"]
    for _ in range(10_000):
        action = int(rng.integers(2))
        result = env.step({"action": np.array(action)})
        done = result.terminated or result.truncated
        buffer.write(0, {"obs": obs, "next_obs": result.obs["obs"], "action": action,
                         "reward": result.reward["total_reward"], "terminated": float(result.terminated),
                         "truncated": float(result.truncated)})
        obs = env.reset()["obs"] if done else result.obs["obs"]
    return algo, buffer, rng


def single(algo, buffer, rng, updates: int) -> float:
    start = time.perf_counter()
    for _ in range(updates):
        algo.update(algo.sample(buffer, rng))
    return updates / (time.perf_counter() - start)


def burst(algo, buffer, rng, updates: int, per_call: int = 8) -> float:
    start = time.perf_counter()
    for _ in range(updates // per_call):
        algo.update_many(algo.sample_many(buffer, rng, per_call))
    return (updates // per_call * per_call) / (time.perf_counter() - start)


def peer(python: str, updates: int, batch: int) -> float:
    out = subprocess.run([python, os.path.join(HERE, "sb3_dqn.py"), "speed", "--updates", str(updates),
                          "--batch", str(batch)], capture_output=True, text=True, check=True).stdout
    line = [item for item in out.split() if item.startswith("updates_per_s=")][0]
    return float(line.split("=")[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peer", default=os.environ.get("SB3_PYTHON", "/tmp/sb3-peer-venv/bin/python"))
    args = parser.parse_args()
    limit_tf_threads(1, 1)
    variants = {"burst": (build(args.batch), burst), "single": (build(args.batch), single),
                "burst_xla": (build(args.batch, True), burst), "single_xla": (build(args.batch, True), single)}
    for (algo, buffer, rng), run in variants.values():
        run(algo, buffer, rng, 64)  # traces the compiled functions
    ratios: dict[str, list[float]] = {name: [] for name in variants}
    for k in range(args.rounds):
        speeds = {name: run(*built, args.updates) for name, (built, run) in variants.items()}
        theirs = peer(args.peer, args.updates, args.batch)
        for name, speed in speeds.items():
            ratios[name].append(speed / theirs)
        print(f"round {k}: " + ", ".join(f"aquaml {name} {speed:.1f}" for name, speed in speeds.items())
              + f", sb3 {theirs:.1f} updates/s", flush=True)
    medians = {name: statistics.median(values) for name, values in ratios.items()}
    print(f"dqn_update_speed batch={args.batch} " + " ".join(f"ratio_{k}={v:.2f}" for k, v in medians.items())
          + " target>=1.5: " + ", ".join(f"{k} {'met' if v >= 1.5 else 'NOT met'}" for k, v in medians.items()))


if __name__ == "__main__":
    main()
