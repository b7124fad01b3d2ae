import subprocess
import sys

import pytest

from aquaml.parallel.devices import limit_tf_threads


def run_python(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_allocate_gpu_hides_gpus_from_workers_and_keeps_them_for_the_optimizer():
    code = """
import tensorflow as tf
from aquaml import allocate_gpu
class Comm:
    def __init__(self, rank): self.rank = rank
    def Get_rank(self): return self.rank
print("worker", allocate_gpu(Comm(1)), tf.config.get_visible_devices("GPU"))
print("optimizer", allocate_gpu(Comm(0)) == tf.config.list_physical_devices("GPU"))
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "worker [] []" in proc.stdout and "optimizer True" in proc.stdout


def test_thread_limits_apply_before_tensorflow_starts_and_warn_after():
    code = """
import warnings
from aquaml.parallel.devices import limit_tf_threads
import tensorflow as tf
assert limit_tf_threads(1, 1)
print("threads", tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads())
tf.constant(1.0) + 1.0
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    print("late", limit_tf_threads(2, 2), any("initialised" in str(w.message) for w in caught))
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "threads 1 1" in proc.stdout and "late False True" in proc.stdout


def test_thread_counts_are_checked():
    with pytest.raises(ValueError, match="intra_op threads must be None or a positive int, got 0"):
        limit_tf_threads(0)


def test_optimizer_threads_default_to_the_free_cores_but_at_least_two(monkeypatch):
    from aquaml.parallel import devices
    for cores, workers, expected in ((2, 2, 2), (2, 5, 2), (1, 2, 1), (16, 3, 13), (16, 20, 2)):
        monkeypatch.setattr(devices, "usable_cores", lambda cores=cores: cores)
        assert devices.default_optimizer_threads(workers) == expected, (cores, workers)
    monkeypatch.undo()
    assert devices.usable_cores() >= 1
