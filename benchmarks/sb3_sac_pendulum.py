"""Stable-Baselines3's SAC on Pendulum-v1, the peer of the SAC wall-clock and update-speed figures.

    $(bash benchmarks/sb3_peer.sh) benchmarks/sb3_sac_pendulum.py [--steps 10000] [--seeds 0 1 2]

Run it with the Python that ``benchmarks/sb3_peer.sh`` prints (it builds the peer's own virtual
environment, default /tmp/sb3-peer-venv: PyTorch 2.13 CPU and Stable-Baselines3 2.9.2). Settings:
SB3's default MlpPolicy (256x256), learning rate 1e-3, everything else SB3's defaults (100
warm-up steps, one update per step, batch 256), one PyTorch thread. Each seed prints the training
wall-clock, steps/s (which here are also updates/s) and the mean return of 10 deterministic
evaluation episodes afterwards (not timed); the last line gives the medians.
"""
import argparse
import statistics
import time
import warnings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000, help="training steps per seed (default 10000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import gymnasium as gym
    import torch
    from stable_baselines3 import SAC
    from stable_baselines3.common.evaluation import evaluate_policy

    torch.set_num_threads(1)
    walls, returns = [], []
    for seed in args.seeds:
        model = SAC("MlpPolicy", gym.make("Pendulum-v1"), seed=seed, learning_rate=1e-3, verbose=0)
        start = time.perf_counter()
        model.learn(total_timesteps=args.steps)
        wall = time.perf_counter() - start
        mean, _ = evaluate_policy(model, gym.make("Pendulum-v1"), n_eval_episodes=10, deterministic=True)
        walls.append(wall)
        returns.append(float(mean))
        print(f"sb3 sac Pendulum-v1 steps={args.steps} seed={seed} wall_s={wall:.1f} "
              f"steps_per_s={args.steps / wall:.1f} eval_return={mean:.1f}", flush=True)
    print(f"sb3 sac median wall_s={statistics.median(walls):.1f} "
          f"steps_per_s={args.steps / statistics.median(walls):.1f} eval_return={statistics.median(returns):.1f}")


if __name__ == "__main__":
    main()
