"""SAC gradient updates per second: batch 256, two 256x256 hidden layers (tutorial1's networks), one thread.

    .venv/bin/python benchmarks/sac_update_speed.py [--updates 1000] [--repeats 3] [--jit]

Prints the median over repeats of updates per second, timed after a warm-up that includes tracing.
Compare with Stable-Baselines3's steps/s from ../shared/peers/sb3_sac_pendulum.sh (one update per step).
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
    args = parser.parse_args()
    limit_tf_threads(args.threads, 1)

    import numpy as np
    from tutorial1 import Actor_net, Q_net

    from aquaml import DataInfo, SACParameters
    from aquaml.algos.sac import SAC
    from aquaml.model import build_models

    obs_info, action_info = DataInfo("obs", (3,)), DataInfo("action", (1,))
    models, action_info = build_models({"actor": Actor_net, "qf1": Q_net, "qf2": Q_net}, SAC.required_models,
                                       obs_info, action_info)
    sac = SAC(models, obs_info, action_info, SACParameters(jit_compile=args.jit))
    rng = np.random.default_rng(0)
    info = sac.batch_info
    batches = [{k: rng.uniform(-1, 1, (256,) + info.shape(k)).astype(np.float32) for k in info.names}
               for _ in range(8)]
    for i in range(50):
        sac.update(batches[i % 8]).numpy()
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for i in range(args.updates):
            metrics = sac.update(batches[i % 8])
        metrics.numpy()
        rates.append(args.updates / (time.perf_counter() - start))
    print(f"sac_update_speed batch=256 hidden=256x256 threads={args.threads} jit={args.jit} "
          f"updates_per_s={statistics.median(rates):.1f} (repeats: {', '.join(f'{r:.1f}' for r in rates)})")


if __name__ == "__main__":
    main()
