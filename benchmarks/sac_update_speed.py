"""SAC gradient updates per second: batch 256, two 256x256 hidden layers (tutorial1's networks), one thread.

    .venv/bin/python benchmarks/sac_update_speed.py [--updates 1000] [--repeats 3] [--jit]
        [--threads 1] [--inter-threads 1] [--per-call K] [--read-weights] [--finite-check-cost]

Prints the median over repeats of updates per second, timed after a warm-up that includes tracing.
Compare with Stable-Baselines3's steps/s from ../shared/peers/sb3_sac_pendulum.sh (one update per step).

The optimizer rank's settings under MPI: ``--inter-threads 2 --threads 2`` (its default thread
pools on this machine) with ``--per-call 8`` (``update_many``, which also returns the actor's
weights flat); ``--read-weights`` adds the per-variable read of the actor's weights after every
call that the optimizer made before ``update_many``. ``--finite-check-cost`` hands every call's
metrics to the run's ``Progress.add_metrics`` (which checks them for NaN and infinities) in
alternate repeats and prints that cost's share of the update rate.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tutorials"))

from aquaml.parallel.devices import limit_tf_threads  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=1000, help="timed updates per repeat (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (default 3)")
    parser.add_argument("--jit", action="store_true", help="compile the update with XLA")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow intra-op threads (default 1)")
    parser.add_argument("--inter-threads", type=int, default=1, help="TensorFlow inter-op threads (default 1)")
    parser.add_argument("--per-call", type=int, default=None,
                        help="updates per update_many call (default: update(), one per call)")
    parser.add_argument("--read-weights", action="store_true", help="read actor_weights() after every call")
    parser.add_argument("--finite-check-cost", action="store_true",
                        help="pass every call's metrics through Progress.add_metrics in alternate repeats")
    args = parser.parse_args()
    for name in ("updates", "repeats", "threads", "inter_threads", "per_call"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    limit_tf_threads(args.threads, args.inter_threads)

    import numpy as np
    from tutorial1 import Actor_net, Q_net

    from aquaml import DataInfo, SACParameters
    from aquaml.algos.sac import SAC
    from aquaml.models.base import build_models

    obs_info, action_info = DataInfo("obs", (3,)), DataInfo("action", (1,))
    models, action_info = build_models({"actor": Actor_net, "qf1": Q_net, "qf2": Q_net}, SAC.required_models,
                                       obs_info, action_info)
    sac = SAC(models, obs_info, action_info, SACParameters(jit_compile=args.jit))
    rng = np.random.default_rng(0)
    info = sac.batch_info
    batches = [{k: rng.uniform(-1, 1, (256,) + info.shape(k)).astype(np.float32) for k in info.names}
               for _ in range(8)]
    if args.per_call is None:
        calls = [batches[i % 8] for i in range(8)]

        def call(batch):
            return sac.update(batch)
    else:
        calls = [{k: np.stack([batches[(i + j) % 8][k] for j in range(args.per_call)]) for k in info.names}
                 for i in range(8)]

        def call(batch):
            return sac.update_many(batch)
    per_call = args.per_call or 1
    for i in range(max(50 // per_call, 2)):
        call(calls[i % 8])
    progress = _progress(sac) if args.finite_check_cost else None
    rates, checked = [], []
    for repeat in range(args.repeats * (2 if progress else 1)):
        n_calls = max(args.updates // per_call, 1)
        check = progress is not None and repeat % 2 == 1
        start = time.perf_counter()
        for i in range(n_calls):
            out = call(calls[i % 8])
            if args.read_weights:
                sac.actor_weights()
            if check:
                progress.add_metrics(out[0] if isinstance(out, tuple) else out)
        (checked if check else rates).append(n_calls * per_call / (time.perf_counter() - start))
    if progress is not None:
        cost = 1.0 - statistics.median(checked) / statistics.median(rates)
        print(f"finite_check_cost on updates/s: {100 * cost:.2f}% (updates/s without the check: "
              f"{', '.join(f'{r:.1f}' for r in rates)}; with it: {', '.join(f'{r:.1f}' for r in checked)})")
    print(f"sac_update_speed batch=256 hidden=256x256 threads={args.threads} inter_threads={args.inter_threads} "
          f"per_call={args.per_call} read_weights={args.read_weights} jit={args.jit} "
          f"updates_per_s={statistics.median(rates):.1f} (repeats: {', '.join(f'{r:.1f}' for r in rates)})")

def _progress(sac):
    """The run's epoch bookkeeping as the learner uses it (no files, no evaluation)."""
    from aquaml.run.progress import Progress

    class _NoLog:
        elapsed = 0.0

    return Progress(sac.params, sac.metric_names, _NoLog(), lambda: {}, verbose=False)


if __name__ == "__main__":
    main()
