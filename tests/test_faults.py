"""Faults a cluster job meets: no setting stalls, no signal hangs or kills a job, a refused start
ends every rank, a stopped or stuck worker ends the job, and non-finite numbers stop it early.

Every test here runs real ``mpiexec`` launches (MPICH from the venv), pseudo-nodes and MPICH's fork
launcher with two host names (a real two-node layout on one machine, as MPI itself sees it).
"""
import os
import re
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from helpers import CountingEnv, MLPActor, MLPQ, rank_pids

from aquaml import NonFiniteError, RLTaskStarter, SACParameters
from aquaml.buffers.replay import ReplayBuffer
from aquaml.parallel.episodes import EpisodeRingReader
from aquaml.parallel.transport import EPISODE_INFO
from aquaml.run.checkpoint import Checkpointer
from aquaml.schedules.rate import ReplayRatio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
MPIEXEC = os.path.join(os.path.dirname(PYTHON), "mpiexec")
RUN_TASK = os.path.join(ROOT, "tests", "mpi_scripts", "run_task.py")
RESUMABLE = os.path.join(ROOT, "tests", "scripts", "resumable.py")
#: ``mpiexec`` prefixes for 4 ranks on two nodes of two: pseudo-nodes, and two hosts to MPICH itself
TWO_NODES = {"pseudo": ([MPIEXEC, "-n", "4"], {"AQUAML_PSEUDO_NODE_SIZE": "2"}),
             "fork": ([MPIEXEC, "-launcher", "fork", "-hosts", "A:2,B:2", "-n", "4"], {})}


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_", "AQUAML_PSEUDO"))}
    env.update(extra)
    return env


def shm_files():
    return {f for f in os.listdir("/dev/shm") if f.startswith("mpich")}


def wait_for(predicate, proc, seconds, what):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert proc.poll() is None, f"exited before {what}: " + proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"no {what} within {seconds} s"
        time.sleep(0.05)


def ended_within(proc, seconds):
    """Wait for ``proc``; return (exit code, stdout, stderr, seconds taken), killing it past ``seconds``."""
    start = time.monotonic()
    try:
        out, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"still running {seconds} s after the fault: {(err or '')[-2000:]}")
    return proc.returncode, out, err, time.monotonic() - start


# --- pacing --------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.01, 0.05, 1 / 3, 1.0, 4.0])
@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("interval", [1, 7])
def test_the_next_burst_is_always_due_before_every_worker_waits(ratio, workers, interval):
    for updates in list(range(0, 40)) + [997, 12345]:
        rate = ReplayRatio(ratio, learning_starts=100, lead=0, interval=interval)
        nxt = rate.next_due_steps(updates)
        assert rate.updates_allowed(nxt) > updates >= rate.updates_allowed(nxt - 1)
        # the last burst came at the latest one step before the next update was allowed
        rate.last_burst = nxt - 1
        allowed = rate.steps_allowed(updates, workers)
        assert rate.updates_due(allowed * workers, updates) >= 1  # every worker at its allowance


def test_no_replay_ratio_worker_count_or_node_layout_stalls(tmp_path):
    """replay_ratio {0.01, 0.05, 1, 4} x workers {1, 2} x local / every worker on its own pseudo-node,
    and the update count reaching other nodes between weight publications (weight_sync_interval 24):
    each short task finishes well inside its bound (a stall would be cut off by stall_timeout=30 s)."""
    proc = subprocess.run([MPIEXEC, "-n", "3", PYTHON, os.path.join(ROOT, "tests", "mpi_scripts", "pacing_sweep.py"),
                           str(tmp_path)], capture_output=True, text=True, timeout=900, env=clean_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = re.findall(r"config (\S+) (\d) (\w+) (\d+) seconds ([\d.]+)", proc.stdout)
    assert len(done) == 18, proc.stdout
    assert {(float(r), int(w), layout) for r, w, layout, _, _ in done} == \
        {(r, w, layout) for r in (0.01, 0.05, 1.0, 4.0) for w in (1, 2) for layout in ("local", "remote")}
    slowest = max(float(s) for *_, s in done)
    assert slowest < 120, proc.stdout


# --- signals ------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", sorted(TWO_NODES))
def test_term_with_workers_on_another_node_exits_zero_and_resumes(layout, tmp_path):
    """SIGTERM to a job whose workers sit on two nodes (the stop message reaches the other node once)."""
    prefix, extra = TWO_NODES[layout]
    args = [PYTHON, RESUMABLE, "--run-root", str(tmp_path), "--name", "run", "--interval", "500"]
    before = shm_files()
    proc = subprocess.Popen(prefix + args + ["--steps", "20000", "--step-sleep", "0.004"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=clean_env(**extra), cwd=ROOT)
    first = os.path.join(tmp_path, "run", "checkpoints", "step_000000000500")
    wait_for(lambda: os.path.isdir(first), proc, 240, "first checkpoint")
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    code, out, err, took = ended_within(proc, 60)
    assert code == 0, err[-3000:]
    assert took < 20, f"{took:.1f} s from SIGTERM to exit"
    assert out.count("interrupted") == 4
    assert shm_files() <= before
    stopped_at = max(Checkpointer(os.path.join(tmp_path, "run")).steps())
    assert 500 < stopped_at < 20000
    resumed = subprocess.run(prefix + args + ["--steps", str(stopped_at + 300), "--resume"], capture_output=True,
                             text=True, timeout=300, env=clean_env(**extra), cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("done") == 4
    with open(os.path.join(tmp_path, "run", "progress.csv")) as f:
        steps = [int(line.split(",")[0]) for line in f.read().splitlines()[1:]]
    assert steps == sorted(steps) and steps[-1] == stopped_at + 300


@pytest.mark.parametrize("seconds", [1, 3, 6, 7, 9])
def test_term_at_any_moment_of_start_up_exits_zero_without_leftovers(seconds, tmp_path):
    """SIGTERM to ``mpiexec -n 3 aquaml train`` while TensorFlow imports, while MPI starts, while the
    models are built or once training runs: exit 0 and either a checkpoint or 'stopped before
    training started' with no run directory; never a /dev/shm leftover."""
    before = shm_files()
    root = tmp_path / "runs"
    proc = subprocess.Popen([MPIEXEC, "-n", "3", PYTHON, "-m", "aquaml.cli", "train", "--env", "Pendulum-v1",
                             "--steps", "100000", "--name", "run", "--run-root", str(root), "--hidden", "16,16"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(), cwd=ROOT)
    time.sleep(seconds)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGTERM)
    code, out, err, _ = ended_within(proc, 90)
    assert code == 0, err[-3000:]
    if "before training started" in out:
        assert out.count("before training started") == 1
        assert not root.exists()
    else:
        assert "stopped by SIGTERM; checkpoint written" in out, out[-2000:]
        assert Checkpointer(os.path.join(root, "run")).latest() is not None
    assert shm_files() <= before


# --- refused starts -------------------------------------------------------------------------------
def test_a_refused_resume_ends_every_rank_with_one_message_and_exit_code_2(tmp_path):
    train = [PYTHON, "-m", "aquaml.cli", "train", "--env", "Pendulum-v1", "--name", "run",
             "--run-root", str(tmp_path), "--hidden", "16,16", "--set", "learning_starts=100", "--quiet"]
    first = subprocess.run(train + ["--steps", "300", "--ranks", "3"], capture_output=True, text=True, timeout=300,
                           env=clean_env(), cwd=ROOT)
    assert first.returncode == 0, first.stderr[-3000:]
    for extra, difference in ((["--steps", "400"], "ranks: checkpoint 3, now 2"),
                              (["--steps", "300", "--set", "gamma=0.95"], "parameters.gamma: checkpoint 0.99, now 0.95")):
        start = time.monotonic()
        proc = subprocess.run([MPIEXEC, "-n", "2"] + train + ["--resume"] + extra, capture_output=True, text=True,
                              timeout=120, env=clean_env(), cwd=ROOT)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert proc.stderr.count("cannot resume") == 1 and difference in proc.stderr, proc.stderr[-3000:]
        assert time.monotonic() - start < 60


def test_an_error_on_one_worker_rank_before_start_ends_every_rank_with_its_message(tmp_path):
    """The environment factory fails on rank 2 only: every rank leaves the constructor, exit code 2,
    the message printed once, by the rank that found it."""
    code = ("import sys; sys.path.insert(0, 'tests')\n"
            "from helpers import CountingEnv, MLPActor, MLPQ\n"
            "from mpi4py import MPI\n"
            "from aquaml import RLTaskStarter, SACParameters\n"
            "def env():\n"
            "    if MPI.COMM_WORLD.Get_rank() == 2:\n"
            "        raise ValueError('no simulator licence on this node')\n"
            "    return CountingEnv()\n"
            f"RLTaskStarter(env=env, model_class_dict={{'actor': MLPActor, 'qf1': MLPQ, 'qf2': MLPQ}}, "
            f"algo_hyperparameter=SACParameters(total_steps=100), run_root={str(tmp_path)!r}, name='run')\n")
    proc = subprocess.run([MPIEXEC, "-n", "3", PYTHON, "-c", code], capture_output=True, text=True, timeout=120,
                          env=clean_env(), cwd=ROOT)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.count("no simulator licence on this node") == 1, proc.stderr[-3000:]
    assert not os.path.exists(tmp_path / "run")


# --- stopped and stuck workers ------------------------------------------------------------------
def _start_task(tmp_path, *extra):
    """Start run_task.py on 3 ranks; its stderr goes to a file (a pipe nobody reads could fill up and
    block the ranks); returns the process and each rank's pid."""
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen([MPIEXEC, "-n", "3", PYTHON, RUN_TASK, "--run-root", str(tmp_path), "--eval-interval",
                                 "0", *extra], stdout=subprocess.PIPE, stderr=err, text=True, env=clean_env(),
                                cwd=ROOT)
    return proc, rank_pids(proc, 3)


@pytest.mark.parametrize("ppo", [False, True])
def test_a_signal_to_one_worker_stops_the_whole_job_cleanly(ppo, tmp_path):
    algo = ["--ppo-epochs", "2"] if ppo else []
    proc, pids = _start_task(tmp_path, "--env-sleep", "0.005", "--steps", "100000", *algo)
    csv_path = os.path.join(tmp_path, "task", "progress.csv")
    wait_for(lambda: os.path.isfile(csv_path) and len(open(csv_path).read().splitlines()) > 1, proc, 180,
             "progress row")
    if proc.poll() is not None:  # ended before the signal: say how (its stop reasons are on stdout)
        pytest.fail(f"the job ended (exit code {proc.returncode}) before the signal\nstdout:\n{proc.stdout.read()}\n"
                    f"progress.csv:\n{open(csv_path).read()[-1500:]}\nstderr:\n"
                    f"{open(tmp_path / 'stderr.txt').read()[-3000:]}")
    os.kill(pids[2], signal.SIGTERM)
    code, out, _, took = ended_within(proc, 60)
    err = open(tmp_path / "stderr.txt").read()
    assert code == 0, err[-3000:]
    assert took < 20, f"{took:.1f} s from the worker's SIGTERM to exit"
    assert "rank 0 optimizer stopped" in out and "rank 2 worker stopped" in out
    assert Checkpointer(os.path.join(tmp_path, "task")).latest() is not None


@pytest.mark.parametrize("ppo", [False, True])
def test_a_stuck_environment_step_aborts_the_job_naming_the_silent_rank(ppo, tmp_path):
    algo = ["--ppo-epochs", "2"] if ppo else []
    proc, _ = _start_task(tmp_path, "--steps", "100000", "--hang-rank", "2", "--hang-at", "300",
                          "--stall-timeout", "5", *algo)
    code, out, _, took = ended_within(proc, 120)
    err = open(tmp_path / "stderr.txt").read()
    hung_at = float(re.search(r"hanging at ([\d.]+)", err).group(1))
    assert code != 0
    assert re.search(r"rank 0 \(optimizer\): Traceback", err), err[-3000:]
    assert re.search(r"WorkerStall: no worker wrote anything for 5 s .*rank 2 \(worker 1\) silent \d+ s, inside an "
                     r"environment step", err), err[-3000:]
    assert time.time() - hung_at < 5 + 20


# --- finished-episode records ----------------------------------------------------------------------
def test_an_overrun_episode_ring_keeps_the_newest_records_and_counts_the_rest():
    ring = ReplayBuffer(EPISODE_INFO, 2 * 1024, num_slices=2)
    reader = EpisodeRingReader(ring, [0, 1])
    ring.write_batch(1, {"return": np.arange(10.0), "length": np.arange(10)})
    assert [len(c["return"]) for _, c in reader.read()] == [10]
    ring.write_batch(0, {"return": np.arange(3000.0), "length": np.arange(3000)})  # far more than the ring holds
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (slice_index, columns), = reader.read()
    kept = columns["return"]
    assert slice_index == 0 and f"{3000 - len(kept)} episode records were dropped" in str(caught[0].message)
    assert kept[-1] == 2999 and np.array_equal(np.diff(kept), np.ones(len(kept) - 1))  # the newest, in order
    assert reader.dropped + len(kept) == 3000 and len(kept) >= 1024 // 2
    ring.write_batch(0, {"return": np.array([7.0]), "length": np.array([1])})
    assert [c["return"].tolist() for _, c in reader.read()] == [[7.0]]


# --- non-finite numbers ---------------------------------------------------------------------------
class _Poisoned(CountingEnv):
    def __init__(self, at, field, value):
        super().__init__(horizon=20)
        self.at, self.field, self.value = at, field, value

    def step(self, action_dict):
        obs, reward, terminated, truncated, info = super().step(action_dict)
        if self.steps_taken >= self.at:
            if self.field == "reward":
                reward = dict(reward, total_reward=self.value)
            else:
                obs = {"obs": np.full((1,), self.value, np.float32)}
        return obs, reward, terminated, truncated, info


def _one_process(run_root, env, steps=600):
    return RLTaskStarter(env=env, model_class_dict={"actor": lambda: MLPActor(16), "qf1": lambda: MLPQ(16),
                                                    "qf2": lambda: MLPQ(16)},
                         algo_hyperparameter=SACParameters(total_steps=steps, epoch_length=100, learning_starts=100,
                                                           batch_size=32, eval_interval=0, calculate_episodes=1),
                         run_root=run_root, name="run", verbose=False, tensorboard=False, checkpoint_interval=100)


@pytest.mark.parametrize("field,value", [("reward", float("nan")), ("reward", float("-inf")),
                                         ("obs", float("nan")), ("obs", float("inf"))])
def test_a_non_finite_observation_or_reward_stops_the_run_before_the_buffer(field, value, run_root):
    starter = _one_process(run_root, _Poisoned(250, field, value))
    with pytest.raises(NonFiniteError, match=rf"environment 0 of worker 0 .* non-finite .*{field}.* at step 250"):
        starter.run()
    buffer = starter.buffer
    assert len(buffer) == 249
    for name, column in buffer.arrays.items():
        assert np.isfinite(column[0, :249]).all(), name
    assert max(Checkpointer(starter.run_dir).steps()) == 200  # the last good one stays the newest


def test_diverging_losses_stop_the_run_before_a_checkpoint_holds_them(run_root):
    """Rewards of 1e30 are finite, but the critic's squared error overflows float32: caught at the update."""
    starter = _one_process(run_root, _Poisoned(150, "reward", 1e30))
    with pytest.raises(NonFiniteError, match="training diverged: losses/qf_loss"):
        starter.run()
    assert max(Checkpointer(starter.run_dir).steps()) <= 200


def test_a_non_finite_reward_on_a_worker_rank_aborts_the_job_naming_it(tmp_path):
    proc = subprocess.run([MPIEXEC, "-n", "3", PYTHON, RUN_TASK, "--run-root", str(tmp_path), "--steps", "100000",
                           "--eval-interval", "0", "--nan-rank", "2", "--nan-at", "150"], capture_output=True,
                          text=True, timeout=180, env=clean_env(), cwd=ROOT)
    assert proc.returncode != 0
    assert re.search(r"rank 2 \(worker\): Traceback.*NonFiniteError: environment 0 of worker 1 \(TestEnv\) returned a "
                     r"non-finite reward 'total_reward' at step 150", proc.stderr, re.S), proc.stderr[-3000:]
