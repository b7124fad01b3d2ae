"""Stable-Baselines3's SAC on Pendulum-v1: training wall-clock until its evaluation reaches a return.

    $(bash benchmarks/sb3_peer.sh) benchmarks/sb3_time_to_return.py [--seeds 0 1 2] [--threshold -200]

Run it with the Python of the peer's virtual environment (``benchmarks/sb3_peer.sh`` builds it and
prints it): the settings of ``benchmarks/sb3_sac_pendulum.py`` (default MlpPolicy, learning rate
1e-3, one thread). Every 1,000
steps it pauses the clock and runs 10 deterministic evaluation episodes; it prints the training
seconds (evaluation excluded) at the first evaluation at or above the threshold.
"""
import argparse
import statistics
import time
import warnings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threshold", type=float, default=-200.0)
    parser.add_argument("--steps", type=int, default=10_000)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import gymnasium as gym
    import torch
    from stable_baselines3 import SAC
    from stable_baselines3.common.evaluation import evaluate_policy
    torch.set_num_threads(1)
    times = []
    for seed in args.seeds:
        model = SAC("MlpPolicy", gym.make("Pendulum-v1"), seed=seed, learning_rate=1e-3, verbose=0)
        eval_env, trained, reached = gym.make("Pendulum-v1"), 0.0, None
        for chunk in range(args.steps // 1000):
            start = time.perf_counter()
            model.learn(total_timesteps=1000, reset_num_timesteps=chunk == 0)
            trained += time.perf_counter() - start
            mean, _ = evaluate_policy(model, eval_env, n_eval_episodes=10, deterministic=True)
            if mean >= args.threshold:
                reached = (1000 * (chunk + 1), trained, mean)
                break
        times.append(reached[1] if reached else float("inf"))
        print(f"sb3 seed={seed} reached={reached}", flush=True)
    print(f"sb3_time_to_return threshold={args.threshold:g} median_train_s={statistics.median(times):.1f}")


if __name__ == "__main__":
    main()
