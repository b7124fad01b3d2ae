"""Per-process TensorFlow thread limits, set before TensorFlow initialises its runtime."""
from __future__ import annotations

import os
import warnings


def limit_tf_threads(intra_op: int | None, inter_op: int | None = 1) -> bool:
    """Limit TensorFlow's thread pools for this process; None leaves a pool at TensorFlow's default.

    Must run before the first TensorFlow operation (the pools are fixed then). Returns False,
    with a warning, when TensorFlow has already initialised and the limits could not be applied.

    Raises:
        ValueError: a count is not a positive int.
    """
    for field, value in (("intra_op", intra_op), ("inter_op", inter_op)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{field} threads must be None or a positive int, got {value!r}")
    import tensorflow as tf
    threading = tf.config.threading
    if (intra_op is None or threading.get_intra_op_parallelism_threads() == intra_op) and \
            (inter_op is None or threading.get_inter_op_parallelism_threads() == inter_op):
        return True
    try:
        if intra_op is not None:
            threading.set_intra_op_parallelism_threads(intra_op)
        if inter_op is not None:
            threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:
        warnings.warn("TensorFlow was initialised before aquaml could limit its threads (intra_op="
                      f"{intra_op}, inter_op={inter_op}); create the RLTaskStarter before running any "
                      "TensorFlow operation", stacklevel=3)
        return False
    return True


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which SLURM and mpiexec binding narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_optimizer_threads(workers_on_node: int) -> int:
    """The optimizer rank's TensorFlow threads when the user names none: the cores its workers leave
    over, but at least two when it may run on two cores.

    Two is the floor because the inter-op pool runs the independent parts of an update side by side
    (an off-policy update's twin critics, its target and its actor): 204 against 127 updates/s for
    tutorial1's networks on this project's 2-core machine. Workers rarely need their core at the same
    time: the replay ratio holds asynchronous workers back while the optimizer computes, and
    synchronous workers wait while it trains a round.
    """
    cores = usable_cores()
    return max(min(2, cores), cores - workers_on_node)


def allocate_gpu(comm=None, optimizer_rank: int = 0) -> list:
    """Give the optimizer rank the GPUs (with memory growth) and hide every GPU from other ranks.

    Call it at the top of the script, before any TensorFlow operation, as the reference AquaML's
    ``allocate_gpu(comm)``. Returns the GPUs this rank may use (empty on workers and on machines
    without a GPU).

    Raises:
        RuntimeError: TensorFlow already initialised its devices.
    """
    import tensorflow as tf
    rank = 0 if comm is None else comm.Get_rank()
    gpus = tf.config.list_physical_devices("GPU")
    try:
        if rank != optimizer_rank:
            tf.config.set_visible_devices([], "GPU")
            return []
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError as err:
        raise RuntimeError("allocate_gpu(comm) must run before any TensorFlow operation; call it at the top "
                           f"of the script ({err})") from None
    return gpus
