"""Run under ``mpiexec -n 3``: short SAC tasks over a sweep of replay ratios, worker counts and node
layouts, one after another in one launch, to show that no valid combination stalls.

    pacing_sweep.py RUN_ROOT

For one worker, ranks 0 and 1 run the task on a sub-communicator while rank 2 waits. "remote"
places every worker on a pseudo-node of its own (``AQUAML_PSEUDO_NODE_SIZE=1``), so it learns the
update count only from messages. Prints ``config <ratio> <workers> <layout> <sync> seconds <s>``
per task on rank 0.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from helpers import CountingEnv, MLPActor, MLPQ  # noqa: E402

from aquaml import RLTaskStarter, SAC, SACParameters  # noqa: E402
from aquaml.parallel.mpi import mpi, sleepy_barrier  # noqa: E402

#: (replay_ratio, workers, layout, weight_sync_interval)
CONFIGS = [(ratio, workers, layout, 1) for ratio in (0.01, 0.05, 1.0, 4.0) for workers in (1, 2)
           for layout in ("local", "remote")] + [(1.0, 1, "remote", 24), (1.0, 2, "remote", 24)]


def main():
    MPI = mpi()
    world = MPI.COMM_WORLD
    run_root = sys.argv[1]
    for index, (ratio, workers, layout, sync) in enumerate(CONFIGS):
        member = world.Get_rank() <= workers
        comm = world.Split(0 if member else MPI.UNDEFINED, world.Get_rank())
        if member:
            if layout == "remote":
                os.environ["AQUAML_PSEUDO_NODE_SIZE"] = "1"
            else:
                os.environ.pop("AQUAML_PSEUDO_NODE_SIZE", None)
            params = SACParameters(total_steps=200, epoch_length=100, learning_starts=50, replay_ratio=ratio,
                                   batch_size=32, eval_interval=0, calculate_episodes=1,
                                   weight_sync_interval=sync, stall_timeout=30)
            start = time.monotonic()
            starter = RLTaskStarter(env=CountingEnv(horizon=20), model_class_dict={
                "actor": lambda: MLPActor(width=16), "qf1": lambda: MLPQ(width=16), "qf2": lambda: MLPQ(width=16)},
                algo=SAC, algo_hyperparameter=params, mpi_comm=comm, run_root=run_root, name=f"c{index}",
                verbose=False, tensorboard=False, checkpoint_interval=0)
            starter.run()
            if comm.Get_rank() == 0:
                print(f"config {ratio} {workers} {layout} {sync} seconds {time.monotonic() - start:.1f}", flush=True)
            comm.Free()
        sleepy_barrier(world)


if __name__ == "__main__":
    main()
