"""Run under mpiexec -n 4: two independent tasks of two ranks each share one launch via mpi_comm."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from helpers import CountingEnv, MLPActor, MLPQ  # noqa: E402
from mpi4py import MPI  # noqa: E402

from aquaml import RLTaskStarter, SACParameters  # noqa: E402

world = MPI.COMM_WORLD
task = world.Get_rank() % 2
comm = world.Split(color=task, key=world.Get_rank())
starter = RLTaskStarter(env=CountingEnv(horizon=10, target=0.25 * (task + 1)),
                        model_class_dict={"actor": MLPActor, "qf1": MLPQ, "qf2": MLPQ},
                        algo_hyperparameter=SACParameters(total_steps=300 + 100 * task, epoch_length=100,
                                                          learning_starts=50, batch_size=32, calculate_episodes=1),
                        mpi_comm=comm, run_root=sys.argv[1], name=f"task{task}", verbose=False, tensorboard=False)
result = starter.run()
if result:
    print(f"task {task} world rank {world.Get_rank()} finished {starter.topology.size} ranks", flush=True)
