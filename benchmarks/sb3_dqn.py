"""Stable-Baselines3's DQN, the peer of the DQN figures, with rl-baselines3-zoo's settings.

Run with the peer's Python (benchmarks/sb3_peer.sh builds it), one thread:

    $(benchmarks/sb3_peer.sh) benchmarks/sb3_dqn.py speed [--updates 2000] [--batch 64]
    $(benchmarks/sb3_peer.sh) benchmarks/sb3_dqn.py time-to-return [--seeds 0 1 2] [--threshold 475]
    $(benchmarks/sb3_peer.sh) benchmarks/sb3_dqn.py returns --env Acrobot-v1 --steps 100000 [--seeds 0]

``speed``: gradient updates per second of ``DQN.train`` (replay sampling, target, Huber loss,
backward, clip, Adam step) on CartPole-v1 with net_arch [256, 256] and the given batch, after
filling the buffer with random transitions. ``time-to-return``: CartPole-v1 with the zoo's
settings; every 1,000 steps the clock pauses for 10 deterministic evaluation episodes, and the
training seconds at the first evaluation at or above the threshold are printed.
"""
import argparse
import statistics
import time
import warnings

#: rl-baselines3-zoo hyperparams/dqn.yml, as Stable-Baselines3 takes them.
ZOO = {
    "CartPole-v1": dict(learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1_000, gamma=0.99,
                        target_update_interval=10, train_freq=256, gradient_steps=128, exploration_fraction=0.16,
                        exploration_final_eps=0.04, policy_kwargs=dict(net_arch=[256, 256])),
    "Acrobot-v1": dict(learning_rate=6.3e-4, batch_size=128, buffer_size=50_000, learning_starts=0, gamma=0.99,
                       target_update_interval=250, train_freq=4, gradient_steps=-1, exploration_fraction=0.12,
                       exploration_final_eps=0.1, policy_kwargs=dict(net_arch=[256, 256])),
    "LunarLander-v3": dict(learning_rate=6.3e-4, batch_size=128, buffer_size=50_000, learning_starts=0, gamma=0.99,
                           target_update_interval=250, train_freq=4, gradient_steps=-1, exploration_fraction=0.12,
                           exploration_final_eps=0.1, policy_kwargs=dict(net_arch=[256, 256])),
}


def speed(args) -> None:
    import gymnasium as gym
    from stable_baselines3 import DQN
    model = DQN("MlpPolicy", gym.make("CartPole-v1"), batch_size=args.batch, learning_starts=10_000,
                policy_kwargs=dict(net_arch=[256, 256]), seed=0, verbose=0)
    model.learn(total_timesteps=10_000)  # fills the buffer; no update before learning_starts
    model.train(gradient_steps=100, batch_size=args.batch)  # warm-up
    start = time.perf_counter()
    model.train(gradient_steps=args.updates, batch_size=args.batch)
    seconds = time.perf_counter() - start
    print(f"sb3 dqn updates_per_s={args.updates / seconds:.1f} batch={args.batch} updates={args.updates}", flush=True)


def time_to_return(args) -> None:
    import gymnasium as gym
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.evaluation import evaluate_policy

    class EvaluateEvery(BaseCallback):
        """Every ``interval`` steps: pause the clock, evaluate, stop at the threshold."""

        def __init__(self, interval, threshold):
            super().__init__()
            self.interval, self.threshold, self.eval_env = interval, threshold, gym.make("CartPole-v1")
            self.paused, self.reached = 0.0, None

        def _on_training_start(self):
            self.start = time.perf_counter()

        def _on_step(self):
            if self.num_timesteps % self.interval:
                return True
            t = time.perf_counter()
            mean, _ = evaluate_policy(self.model, self.eval_env, n_eval_episodes=10, deterministic=True)
            self.paused += time.perf_counter() - t
            if mean >= self.threshold:
                self.reached = (self.num_timesteps, time.perf_counter() - self.start - self.paused, mean)
                return False
            return True

    times = []
    for seed in args.seeds:
        model = DQN("MlpPolicy", gym.make("CartPole-v1"), seed=seed, verbose=0, **ZOO["CartPole-v1"])
        callback = EvaluateEvery(1000, args.threshold)
        model.learn(total_timesteps=args.steps, callback=callback)
        times.append(callback.reached[1] if callback.reached else float("inf"))
        print(f"sb3 dqn CartPole-v1 seed={seed} reached={callback.reached}", flush=True)
    print(f"sb3_dqn_time_to_return threshold={args.threshold:g} median_train_s={statistics.median(times):.1f}")


def returns(args) -> None:
    import gymnasium as gym
    from stable_baselines3 import DQN
    from stable_baselines3.common.evaluation import evaluate_policy
    values = []
    for seed in args.seeds:
        model = DQN("MlpPolicy", gym.make(args.env), seed=seed, verbose=0, **ZOO[args.env])
        start = time.perf_counter()
        model.learn(total_timesteps=args.steps)
        wall = time.perf_counter() - start
        mean, _ = evaluate_policy(model, gym.make(args.env), n_eval_episodes=10, deterministic=True)
        values.append(mean)
        print(f"sb3 dqn {args.env} steps={args.steps} seed={seed} wall_s={wall:.1f} eval_return={mean:.1f}", flush=True)
    print(f"sb3 dqn {args.env} median_eval_return={statistics.median(values):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--updates", type=int, default=2000)
    s.add_argument("--batch", type=int, default=64)
    t = sub.add_parser("time-to-return")
    t.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    t.add_argument("--threshold", type=float, default=475.0)
    t.add_argument("--steps", type=int, default=50_000)
    r = sub.add_parser("returns")
    r.add_argument("--env", choices=sorted(ZOO), default="CartPole-v1")
    r.add_argument("--steps", type=int, default=50_000)
    r.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import torch
    torch.set_num_threads(1)
    {"speed": speed, "time-to-return": time_to_return, "returns": returns}[args.command](args)


if __name__ == "__main__":
    main()
