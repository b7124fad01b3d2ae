"""Time to write one checkpoint of the tutorial1 run (SAC, Pendulum-v1) and its size, with and without the buffer.

    .venv/bin/python benchmarks/checkpoint_cost.py [--steps 10000] [--interval 2000] [--writes 5] [--seed 0]
                                                   [--threads 1] [--no-fill]

What is measured, and how:

1. The run. tutorial1's task (its Actor_net, Q_net, PendulumWrapper and SAC parameters: 256x256
   nets, buffer_size 100_000, epoch_length 1000, learning_starts 1000, eval every 2000 steps with 10
   episodes) is trained in one process for ``--steps`` steps with ``checkpoint_interval=--interval``
   and the replay buffer in the checkpoints (the default). Every checkpoint the loop writes is
   recorded: ``Checkpointer.save``'s own ``last_seconds`` (files, fsyncs, checksums, rename, prune)
   and ``last_bytes``, the whole write as the loop pays it (``Worker.state_dict()`` + reading the
   variables + ``save``, timed around the task's checkpoint sink, ``TaskCheckpoints.save``), and the size of each file
   from the checkpoint's MANIFEST.json.
2. Repeated writes of the final state. The arguments of the run's last write (its learner
   state, worker snapshots and buffer: 10k transitions in the buffer) are kept, and after the run that exact
   call, ``TaskCheckpoints.save(step, learner_state, workers, buffer)`` with a fresh worker snapshot, is
   made ``--writes`` more times with the sink's ``keep_buffer`` True and False alternately (each
   under a new step number, so each is a fresh directory and the older ones are pruned, as in a
   run). Medians are printed.
3. A full buffer, SYNTHETIC FILL (skipped with ``--no-fill``): rows 10k..100k of the same buffer are
   filled with transitions of random-action Pendulum-v1 episodes (real dynamics, random policy;
   the trained policy's data would compress a little differently) and its counter set to 100k,
   then ``--writes`` checkpoints with the buffer are written the same way. Without the buffer the
   checkpoint does not depend on the buffer, so part 2's figure stands for it.

Checkpoints go to a temporary directory under the system's temp dir (its filesystem is printed;
each write fsyncs its files, so the disk is part of the figure). Sizes are in MB = 10^6 bytes.
The machine may be shared: write times are noisy, sizes are exact.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tutorials"))

from aquaml.parallel.devices import limit_tf_threads  # noqa: E402
from aquaml.run.checkpoint import TaskCheckpoints  # noqa: E402

MB = 1e6
FILES = ("algo.npz", "state.json", "state.npz", "workers.0.worker.envs.pkl", "replay.h5", "MANIFEST.json")


def manifest_sizes(path: str) -> dict[str, int]:
    """Bytes per file of a written checkpoint, MANIFEST.json included."""
    with open(os.path.join(path, "MANIFEST.json"), encoding="utf-8") as f:
        sizes = {name: entry["bytes"] for name, entry in json.load(f)["files"].items()}
    sizes["MANIFEST.json"] = os.path.getsize(os.path.join(path, "MANIFEST.json"))
    return sizes


class Recorder:
    """Wraps ``TaskCheckpoints.save`` (the task's checkpoint sink) and the worker's ``state_dict``
    to time every checkpoint write of one starter."""

    def __init__(self, starter) -> None:
        self.starter = starter
        self.records: list[dict] = []
        self.sink = self.last_args = None
        self._snapshot_s = 0.0
        state_dict, save = starter.worker.state_dict, TaskCheckpoints.save
        recorder = self

        def timed_state_dict():
            t0 = time.perf_counter()
            out = state_dict()
            recorder._snapshot_s = time.perf_counter() - t0
            return out

        def timed_save(sink, step, learner, workers, buffer, counts=None):
            recorder.sink, recorder.last_args = sink, (learner, workers, buffer, counts)
            t0 = time.perf_counter()
            path = save(sink, step, learner, workers, buffer, counts)
            whole = time.perf_counter() - t0 + recorder._snapshot_s
            ck = sink.checkpointer
            recorder.records.append({"step": step, "buffer": sink.keep_buffer, "rows": len(starter.buffer),
                                     "save_s": ck.last_seconds, "whole_s": whole, "snapshot_s": recorder._snapshot_s,
                                     "bytes": ck.last_bytes + os.path.getsize(os.path.join(path, "MANIFEST.json")),
                                     "files": manifest_sizes(path)})
            recorder._snapshot_s = 0.0
            return path

        TaskCheckpoints.save = timed_save
        starter.worker.state_dict = timed_state_dict

    def write_again(self, step: int, with_buffer: bool) -> dict:
        """The loop's final write once more, under ``step``, with a fresh worker snapshot; returns its record."""
        learner, workers, buffer, counts = self.last_args
        self.sink.keep_buffer = with_buffer
        fresh = [dict(w, worker=self.starter.worker.state_dict()) if "worker" in w else w for w in workers]
        self.sink.save(step, learner, fresh, buffer, counts)
        return self.records[-1]


def fill_synthetic(buffer, rows_from: int, seed: int) -> float:
    """Fill slice 0 from row ``rows_from`` to capacity with random-action Pendulum-v1 transitions."""
    import gymnasium as gym
    env = gym.make("Pendulum-v1")
    rng = np.random.default_rng(seed)
    n = buffer.slice_capacity - rows_from
    cols = {k: np.zeros((n,) + a.shape[2:], a.dtype) for k, a in buffer.arrays.items()}
    t0 = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    for i in range(n):
        action = rng.uniform(-1.0, 1.0, size=(1,)).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action * 2.0)
        cols["obs"][i], cols["next_obs"][i], cols["action"][i] = obs, next_obs, action
        cols["reward"][i], cols["terminated"][i], cols["truncated"][i] = reward, terminated, truncated
        obs = env.reset()[0] if terminated or truncated else next_obs
    for k, a in buffer.arrays.items():
        a[0, rows_from:] = cols[k]
    buffer.counters[0] = buffer.slice_capacity
    return time.perf_counter() - t0


def summary(label: str, recs: list[dict]) -> str:
    files = recs[-1]["files"]
    parts = " ".join(f"{name}={files[name] / MB:.3f}MB" for name in FILES if name in files)
    save = [r["save_s"] for r in recs]
    whole = [r["whole_s"] for r in recs]
    return (f"  {label}: rows={recs[-1]['rows']} writes={len(recs)} "
            f"median_save_s={statistics.median(save):.3f} (min {min(save):.3f} max {max(save):.3f}) "
            f"median_whole_write_s={statistics.median(whole):.3f} size={recs[-1]['bytes'] / MB:.2f}MB\n"
            f"      files: {parts}\n"
            f"      save_s each: {', '.join(f'{s:.3f}' for s in save)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000, help="training steps (default 10000)")
    parser.add_argument("--interval", type=int, default=2000, help="checkpoint_interval of the run (default 2000)")
    parser.add_argument("--writes", type=int, default=5, help="extra writes per configuration (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads (default 1)")
    parser.add_argument("--no-fill", action="store_true", help="skip the synthetic 100k-row buffer")
    args = parser.parse_args()
    limit_tf_threads(args.threads, 1)
    import tutorial1
    from aquaml import SAC2, SAC2_parameter, RLTaskStarter

    params = SAC2_parameter(total_steps=args.steps, epoch_length=1000, batch_size=256, discount=0.99, tau=0.005,
                            alpha_learning_rate=1e-3, buffer_size=100_000, mini_buffer_size=1000,
                            eval_interval=2000, calculate_episodes=10, seed=args.seed)
    with tempfile.TemporaryDirectory() as root:
        fs = subprocess.run(["df", "-T", root], capture_output=True, text=True).stdout.splitlines()[-1].split()
        print(f"checkpoint_cost tutorial1 SAC Pendulum-v1 steps={args.steps} interval={args.interval} "
              f"threads={args.threads} dir={root} filesystem={fs[1]} ({fs[0]})")
        starter = RLTaskStarter(env=tutorial1.PendulumWrapper(),
                                model_class_dict={"actor": tutorial1.Actor_net, "qf1": tutorial1.Q_net,
                                                  "qf2": tutorial1.Q_net},
                                algo=SAC2, algo_hyperparameter=params, name="ckpt", run_root=root,
                                optimizer_threads=args.threads, verbose=False, tensorboard=False,
                                checkpoint_interval=args.interval)
        rec = Recorder(starter)
        t0 = time.perf_counter()
        result = starter.run()
        wall = time.perf_counter() - t0
        in_run = list(rec.records)
        print(f"run: wall_s={wall:.1f} eval_return={result['eval/return_mean']:.1f} "
              f"checkpoints_written={len(in_run)} (with buffer)")
        for r in in_run:
            print(f"  step {r['step']:>6}: rows={r['rows']:>6} save_s={r['save_s']:.3f} "
                  f"whole_write_s={r['whole_s']:.3f} (worker snapshot {r['snapshot_s']:.3f}) "
                  f"size={r['bytes'] / MB:.2f}MB")
        print(f"  total checkpoint time in the run: {sum(r['whole_s'] for r in in_run):.2f}s of {wall:.1f}s wall "
              f"({100 * sum(r['whole_s'] for r in in_run) / wall:.1f}%)")

        step = in_run[-1]["step"]
        with_buf, without = [], []
        for i in range(args.writes):  # alternate, so drift in machine load hits both alike
            step += 1
            with_buf.append(rec.write_again(step, True))
            step += 1
            without.append(rec.write_again(step, False))
        print(f"final state ({in_run[-1]['rows']} transitions), {args.writes} repeated writes each:")
        print(summary("with buffer   ", with_buf))
        print(summary("without buffer", without))

        if not args.no_fill:
            rows = len(starter.buffer)
            fill_s = fill_synthetic(starter.buffer, rows, args.seed + 7)
            full = []
            for _ in range(args.writes):
                step += 1
                full.append(rec.write_again(step, True))
            raw = sum(a[0].nbytes for a in starter.buffer.arrays.values())
            print(f"SYNTHETIC FILL: full buffer = {rows} trained rows + {starter.buffer.slice_capacity - rows} "
                  f"random-action Pendulum-v1 transitions (made in {fill_s:.1f}s); raw columns {raw / MB:.2f}MB "
                  f"in memory; {args.writes} writes with buffer:")
            print(summary("with buffer   ", full))


if __name__ == "__main__":
    main()
