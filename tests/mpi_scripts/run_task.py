"""Run under mpiexec: a whole RLTaskStarter task with test environments and small models.

    run_task.py [--raise-on worker|optimizer] [--raise-at N] [--env-sleep S] [--steps N]
                [--learning-starts N] [--replay-ratio R] [--run-root DIR] [--ppo-epochs N]

With --ppo-epochs the task is PPO (synchronous rounds of 64 steps per worker, N passes each).

Prints ``rank R role cpu_fraction F`` for the time spent in run(), so tests can check that a
waiting rank does not spin; with --raise-on, the chosen role raises at its N-th environment step.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from helpers import CountingEnv, MLPActor, MLPQ, MLPV  # noqa: E402

from aquaml import PPO, PPOParameters, RLTaskStarter, SAC, SACParameters  # noqa: E402


class TestEnv(CountingEnv):
    """CountingEnv that can sleep per step (a remote simulator) and raise on one role."""

    def __init__(self, sleep, raise_on, raise_at):
        super().__init__(horizon=20)
        self.sleep, self.raise_on, self.raise_at = sleep, raise_on, raise_at

    def step(self, action_dict):
        if self.raise_on and self.steps_taken + 1 == self.raise_at and role() == self.raise_on:
            print(f"raising at {time.time():.3f}", file=sys.stderr, flush=True)
            raise RuntimeError(f"deliberate failure in the {self.raise_on} at step {self.raise_at}")
        if self.sleep:
            time.sleep(self.sleep)
        return super().step(action_dict)


def role():
    from mpi4py import MPI
    return "optimizer" if MPI.COMM_WORLD.Get_rank() == 0 else "worker"


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
    args = parser.parse_args()
    env = TestEnv(args.env_sleep, args.raise_on, args.raise_at)
    if args.ppo_epochs:
        algo, models = PPO, {"actor": MLPActor, "critic": MLPV}
        params = PPOParameters(total_steps=args.steps, rollout_steps=64, update_epochs=args.ppo_epochs,
                               batch_size=32, eval_interval=args.eval_interval, calculate_episodes=2)
    else:
        algo, models = SAC, {"actor": MLPActor, "qf1": MLPQ, "qf2": MLPQ}
        params = SACParameters(total_steps=args.steps, epoch_length=200, learning_starts=args.learning_starts,
                               replay_ratio=args.replay_ratio, batch_size=64, eval_interval=args.eval_interval,
                               calculate_episodes=2)
    starter = RLTaskStarter(env=env, model_class_dict=models, algo=algo, algo_hyperparameter=params,
                            run_root=args.run_root, name="task", verbose=False, tensorboard=False)
    topo = starter.topology
    print(f"rank {topo.rank} {topo.role} pid {os.getpid()} started", flush=True)
    wall, cpu = time.perf_counter(), time.process_time()
    result = starter.run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"rank {topo.rank} {topo.role} cpu_fraction {cpu / wall:.3f} wall {wall:.1f}", flush=True)
    if result:
        print(f"final return {result['eval/return_mean']:.3f}", flush=True)


if __name__ == "__main__":
    main()
