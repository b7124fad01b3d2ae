"""Run under mpiexec: a whole RLTaskStarter task with test environments and small models.

    run_task.py [--raise-on worker|optimizer] [--raise-at N] [--env-sleep S] [--steps N]
                [--learning-starts N] [--replay-ratio R] [--run-root DIR] [--ppo-epochs N]
                [--hang-rank R --hang-at N] [--stall-timeout S] [--nan-rank R --nan-at N --nan-field F]

With --ppo-epochs the task is PPO (synchronous rounds of 64 steps per worker, N passes each).

Prints ``rank R role cpu_fraction F`` for the time spent in run(), so tests can check that a
waiting rank does not spin; with --raise-on, the chosen role raises at its N-th environment step.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from helpers import CountingEnv, MLPActor, MLPQ, MLPV  # noqa: E402

from aquaml import PPO, PPOParameters, RLTaskStarter, SAC, SACParameters  # noqa: E402


class TestEnv(CountingEnv):
    """CountingEnv that can sleep per step (a remote simulator), raise on one role, hang on one rank
    (an environment step that never returns) or return a non-finite value on one rank."""

    def __init__(self, args):
        super().__init__(horizon=20)
        self.args = args

    def step(self, action_dict):
        a = self.args
        if a.raise_on and self.steps_taken + 1 == a.raise_at and role() == a.raise_on:
            print(f"raising at {time.time():.3f}", file=sys.stderr, flush=True)
            raise RuntimeError(f"deliberate failure in the {a.raise_on} at step {a.raise_at}")
        if a.hang_rank is not None and rank() == a.hang_rank and self.steps_taken + 1 == a.hang_at:
            print(f"hanging at {time.time():.3f}", file=sys.stderr, flush=True)
            time.sleep(3600)
        if a.env_sleep:
            time.sleep(a.env_sleep)
        obs, reward, terminated, truncated, info = super().step(action_dict)
        if a.nan_rank is not None and rank() == a.nan_rank and self.steps_taken == a.nan_at:
            if a.nan_field == "reward":
                reward = dict(reward, total_reward=float("nan"))
            else:
                obs = {"obs": np.full_like(obs["obs"], np.inf)}
        return obs, reward, terminated, truncated, info


def say(text: str) -> None:
    """One line to stdout in one write: under PYTHONUNBUFFERED, print() writes the text and its
    newline separately, and another rank's line could land between them."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def rank():
    from mpi4py import MPI
    return MPI.COMM_WORLD.Get_rank()


def role():
    return "optimizer" if rank() == 0 else "worker"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--raise-on", choices=["worker", "optimizer"])
    parser.add_argument("--raise-at", type=int, default=50)
    parser.add_argument("--env-sleep", type=float, default=0.0)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--learning-starts", type=int, default=100)
    parser.add_argument("--replay-ratio", type=float, default=1.0)
    parser.add_argument("--run-root", default="runs")
    parser.add_argument("--eval-interval", type=int, default=200)
    parser.add_argument("--ppo-epochs", type=int, default=0)
    parser.add_argument("--hang-rank", type=int, default=None)
    parser.add_argument("--hang-at", type=int, default=50)
    parser.add_argument("--nan-rank", type=int, default=None)
    parser.add_argument("--nan-at", type=int, default=50)
    parser.add_argument("--nan-field", choices=["reward", "obs"], default="reward")
    parser.add_argument("--stall-timeout", type=float, default=300.0)
    parser.add_argument("--name", default="task")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    env = TestEnv(args)
    if args.ppo_epochs:
        algo, models = PPO, {"actor": MLPActor, "critic": MLPV}
        params = PPOParameters(total_steps=args.steps, rollout_steps=64, update_epochs=args.ppo_epochs,
                               batch_size=32, eval_interval=args.eval_interval, calculate_episodes=2,
                               stall_timeout=args.stall_timeout)
    else:
        algo, models = SAC, {"actor": MLPActor, "qf1": MLPQ, "qf2": MLPQ}
        params = SACParameters(total_steps=args.steps, epoch_length=200, learning_starts=args.learning_starts,
                               replay_ratio=args.replay_ratio, batch_size=64, eval_interval=args.eval_interval,
                               calculate_episodes=2, stall_timeout=args.stall_timeout)
    starter = RLTaskStarter(env=env, model_class_dict=models, algo=algo, algo_hyperparameter=params,
                            run_root=args.run_root, name=args.name, verbose=False, tensorboard=False,
                            resume=args.resume)
    topo = starter.topology
    say(f"rank {topo.rank} {topo.role} pid {os.getpid()} started")
    wall, cpu = time.perf_counter(), time.process_time()
    result = starter.run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    say(f"rank {topo.rank} {topo.role} cpu_fraction {cpu / wall:.3f} wall {wall:.1f}")
    if starter.interrupted:
        say(f"rank {topo.rank} {topo.role} stopped ({starter.stop_reason})")
    if result:
        say(f"final return {result['eval/return_mean']:.3f}")


if __name__ == "__main__":
    main()
