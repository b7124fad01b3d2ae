"""Overhead of logging, evaluation and checkpoints on SAC training throughput (tutorial1, one process); target < 5%.

    .venv/bin/python benchmarks/logging_overhead.py [--steps 6000] [--repeats 3] [--seed 0] [--threads 1]
                                                    [--warmup-steps 1100]

Two configurations of tutorial1's task (its Actor_net, Q_net, PendulumWrapper and SAC parameters:
256x256 nets, buffer 100k, epoch_length 1000, learning_starts 1000, 10 evaluation episodes), each
built afresh with the same seed and trained in this process for ``--steps`` steps:

- A, the normal run: progress.csv, TensorBoard events, console progress lines (verbose=True, the
  lines printed to /dev/null so printing is paid but not shown), evaluation every 2000 steps and
  the default checkpoints (every total_steps/10 steps, replay buffer included).
- B, minimised: verbose=False, tensorboard=False, eval_interval=0 (only the final evaluation) and
  checkpoint_interval=0 (only the final checkpoint). progress.csv is still written (one row per
  epoch: the library has no switch for it).

Throughput = steps / T, where T runs from the call of ``starter.run()`` to the return of the
training loop, minus the final evaluation and the final checkpoint, which both configurations make
once at the end (they are end-of-run costs, not per-step ones). T so includes opening the run
directory, the logger and TensorBoard writer, and every periodic evaluation, checkpoint and log
row; it excludes saving the final models and policy after the loop. Each call of
``aquaml.run.progress.Evaluator`` (an evaluation), of ``TaskCheckpoints.save`` (with the worker
snapshots it is made of) and of ``Progress._end_epoch`` (building, writing and printing one log
row) is timed by wrapping it, to break A's time down.

Every time is taken on two clocks: wall-clock, and this process's CPU time (all its threads;
with one TensorFlow thread it tracks the work done and is far less disturbed when other jobs share
the cores; it leaves out waits such as fsync, which wall-clock keeps).

Runs alternate A B, B A, A B, ... (``--repeats`` pairs) after one short untimed warm-up run, so
load drift on a shared machine hits both alike; medians are printed. The overheads, per clock:

- from A/B throughput: 1 - median(A steps/s) / median(B steps/s), including the evaluation
  episodes; and excluding them, the same with each A run's periodic evaluation seconds taken out
  of its T. The evaluation episodes (10 x 200 Pendulum steps with the deterministic policy, 10
  environments stepped together) are the user's choice via eval_interval and calculate_episodes;
  the second figure is what the rest of the machinery (log rows, console, TensorBoard,
  checkpoints) costs. On a shared machine the run-to-run noise of T can exceed the overhead.
- from the timed parts: A's extra seconds (its periodic evaluations, checkpoints, and its log rows
  and setup beyond B's medians) as a share of A's T (excluding evaluations: the other extras over
  T minus evaluations); median over A's runs. This assumes acting and training cost the same in A
  and B, and is much less noisy; anything A slows down outside the timed calls is missed by it
  (the A/B figure would catch that, and the "rest" of each run is printed for comparison).
"""
import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tutorials"))

from aquaml.parallel.devices import limit_tf_threads  # noqa: E402

TARGET = 0.05
CLOCKS = ("wall", "cpu")


def now() -> np.ndarray:
    """Wall-clock and this process's CPU seconds (all threads), together."""
    return np.array([time.perf_counter(), time.process_time()])


class Timers:
    """Wraps the evaluation, checkpoint and log-row functions at class/module level; records each
    call's (wall, cpu) seconds, and when the training loop starts and ends."""

    def __init__(self) -> None:
        import aquaml.run.checkpoint as checkpoint
        import aquaml.run.progress as progress
        import aquaml.run.starter as starter
        import aquaml.schedules.async_replay as replay
        self.calls: dict[str, list[np.ndarray]] = {"eval": [], "checkpoint": [], "row": []}
        self.loop_start = self.loop_end = np.zeros(2)
        self._snapshot = np.zeros(2)
        evaluate, end_epoch = progress.Evaluator.__call__, progress.Progress._end_epoch
        write, snapshot, run_serial = checkpoint.TaskCheckpoints.save, replay.ReplayActor.snapshot, starter.run_serial

        def timed(kind, fn):
            def wrapper(*a, **k):
                t0 = now()
                out = fn(*a, **k)
                self.calls[kind].append(now() - t0)
                return out
            return wrapper

        def timed_snapshot(actor):  # the worker snapshot a checkpoint is made of
            t0 = now()
            out = snapshot(actor)
            self._snapshot = self._snapshot + (now() - t0)
            return out

        def timed_write(*a, **k):
            t0 = now()
            out = write(*a, **k)
            self.calls["checkpoint"].append(now() - t0 + self._snapshot)
            self._snapshot = np.zeros(2)
            return out

        def timed_run(*a, **k):
            self.loop_start = now()
            out = run_serial(*a, **k)
            self.loop_end = now()
            return out

        progress.Evaluator.__call__ = timed("eval", evaluate)
        progress.Progress._end_epoch = timed("row", end_epoch)
        checkpoint.TaskCheckpoints.save = timed_write
        replay.ReplayActor.snapshot = timed_snapshot
        starter.run_serial = timed_run

    def reset(self) -> None:
        for v in self.calls.values():
            v.clear()


def one_run(config: str, steps: int, seed: int, threads: int, timers: Timers) -> dict:
    """Train one configuration; every figure is a (wall, cpu) pair of seconds."""
    import tutorial1
    from aquaml import SAC2, SAC2_parameter, RLTaskStarter
    normal = config == "A"
    params = SAC2_parameter(total_steps=steps, epoch_length=1000, batch_size=256, discount=0.99, tau=0.005,
                            alpha_learning_rate=1e-3, buffer_size=100_000, mini_buffer_size=1000,
                            eval_interval=2000 if normal else 0, calculate_episodes=10, seed=seed)
    with tempfile.TemporaryDirectory() as root, open(os.devnull, "w") as devnull, \
            contextlib.redirect_stdout(devnull):
        starter = RLTaskStarter(env=tutorial1.PendulumWrapper(),
                                model_class_dict={"actor": tutorial1.Actor_net, "qf1": tutorial1.Q_net,
                                                  "qf2": tutorial1.Q_net},
                                algo=SAC2, algo_hyperparameter=params, name=f"run{config}", run_root=root,
                                optimizer_threads=threads, verbose=normal, tensorboard=normal,
                                checkpoint_interval=None if normal else 0)
        timers.reset()
        t0 = now()
        starter.run()
    evals, ckpts, rows = (list(timers.calls[k]) for k in ("eval", "checkpoint", "row"))
    zero = np.zeros(2)
    return {"config": config, "T": timers.loop_end - t0 - evals[-1] - ckpts[-1], "setup": timers.loop_start - t0,
            "evals": sum(evals[:-1], zero), "n_evals": len(evals) - 1, "each_eval": [e[0] for e in evals[:-1]],
            "final_eval": evals[-1], "ckpts": sum(ckpts[:-1], zero), "n_ckpts": len(ckpts) - 1,
            "final_ckpt": ckpts[-1], "rows": sum(rows, zero), "n_rows": len(rows)}


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6000, help="training steps per run (default 6000)")
    parser.add_argument("--repeats", type=int, default=3, help="A/B pairs (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads (default 1)")
    parser.add_argument("--warmup-steps", type=int, default=1100, help="untimed first run (0: none)")
    args = parser.parse_args()
    limit_tf_threads(args.threads, 1)
    timers = Timers()
    print(f"logging_overhead tutorial1 SAC Pendulum-v1 steps={args.steps} repeats={args.repeats} "
          f"threads={args.threads} learning_starts=1000 (seconds are wall/cpu)")
    if args.warmup_steps:
        one_run("A", args.warmup_steps, args.seed, args.threads, timers)
    runs = []
    w = lambda v: f"{v[0]:.2f}/{v[1]:.2f}s"  # noqa: E731
    for i in range(args.repeats):
        for config in ("AB" if i % 2 == 0 else "BA"):
            r = one_run(config, args.steps, args.seed, args.threads, timers)
            runs.append(r)
            print(f"  run {len(runs)} {config}: T={w(r['T'])} steps/s={args.steps / r['T'][0]:.1f} wall "
                  f"{args.steps / r['T'][1]:.1f} cpu | evals {r['n_evals']}x={w(r['evals'])} "
                  f"checkpoints {r['n_ckpts']}x={w(r['ckpts'])} rows {r['n_rows']}x={w(r['rows'])} "
                  f"setup={w(r['setup'])} | excluded: final eval {w(r['final_eval'])}, "
                  f"final checkpoint {w(r['final_ckpt'])}", flush=True)
    a = [r for r in runs if r["config"] == "A"]
    b = [r for r in runs if r["config"] == "B"]
    med = statistics.median
    for c, clock in enumerate(CLOCKS):
        sps_a, sps_b = med(args.steps / r["T"][c] for r in a), med(args.steps / r["T"][c] for r in b)
        sps_a_ex = med(args.steps / (r["T"][c] - r["evals"][c]) for r in a)
        total, ex = 1 - sps_a / sps_b, 1 - sps_a_ex / sps_b
        # the same from the timed parts alone: A's extra seconds over B's (evaluations, checkpoints,
        # log rows beyond B's, setup beyond B's), as a share of A's time
        row_b, setup_b = med(r["rows"][c] for r in b), med(r["setup"][c] for r in b)
        extra = [(r["evals"][c], r["ckpts"][c] + max(r["rows"][c] - row_b, 0) + max(r["setup"][c] - setup_b, 0),
                  r["T"][c]) for r in a]
        direct = med((e + o) / t for e, o, t in extra)
        direct_ex = med(o / (t - e) for e, o, t in extra)
        print(f"[{clock}] A normal: median steps/s={sps_a:.1f}; B minimised: median steps/s={sps_b:.1f}")
        print(f"[{clock}] A's time, medians: T={med(r['T'][c] for r in a):.2f}s, "
              f"evaluations={med(r['evals'][c] for r in a):.3f}s ({pct(med(r['evals'][c] / r['T'][c] for r in a))}), "
              f"checkpoints={med(r['ckpts'][c] for r in a):.3f}s ({pct(med(r['ckpts'][c] / r['T'][c] for r in a))}), "
              f"log rows={med(r['rows'][c] for r in a):.3f}s ({pct(med(r['rows'][c] / r['T'][c] for r in a))}; "
              f"B's rows {row_b:.3f}s), setup={med(r['setup'][c] for r in a):.3f}s (B's {setup_b:.3f}s)")
        rest_a = med(r["T"][c] - r["evals"][c] - r["ckpts"][c] - r["rows"][c] - r["setup"][c] for r in a)
        rest_b = med(r["T"][c] - r["rows"][c] - r["setup"][c] for r in b)
        print(f"[{clock}] the rest of T (acting and training), medians: A {rest_a:.2f}s, B {rest_b:.2f}s "
              f"(A-B {rest_a - rest_b:+.2f}s, not accounted for by the timed parts)")
        print(f"[{clock}] overhead from A/B throughput:   incl. evaluation episodes {pct(total)}, "
              f"excl. them {pct(ex)}  target<5% {'met' if max(total, ex) < TARGET else 'NOT met'}")
        print(f"[{clock}] overhead from the timed parts: incl. evaluation episodes {pct(direct)}, "
              f"excl. them {pct(direct_ex)}  target<5% {'met' if max(direct, direct_ex) < TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
