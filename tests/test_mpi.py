"""The MPI runtime under real mpiexec (MPICH from the venv): data, weights, failures, idling, learning."""
import os
import re
import subprocess
import sys
import time

import pytest
from helpers import rank_pids

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "tests", "mpi_scripts")
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")


def mpi_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    env.update(extra)
    return env


def mpirun(n, args, timeout=240, **extra):
    start = time.monotonic()
    proc = subprocess.run([MPIEXEC, "-n", str(n), sys.executable] + args, capture_output=True, text=True,
                          timeout=timeout, env=mpi_env(**extra), cwd=ROOT)
    return proc, time.monotonic() - start


def shm_files():
    return {f for f in os.listdir("/dev/shm") if f.startswith("mpich")}


@pytest.mark.parametrize("ranks", [2, 3, 4])
def test_every_transition_once_in_order_and_weights_whole(ranks):
    proc, _ = mpirun(ranks, [os.path.join(SCRIPTS, "check_transport.py"), "100000"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [int(m) for m in re.findall(r"slice \d+ rows (\d+)", proc.stdout)]
    assert len(rows) == ranks - 1 and sum(rows) == 100_000
    loaded = [int(m) for m in re.findall(r"loaded (\d+) whole weight versions", proc.stdout)]
    assert len(loaded) == ranks - 1 and min(loaded) > 0


def test_pseudo_node_path_delivers_the_same_data():
    """Ranks grouped in pseudo-nodes of 2: workers 2 and 3 ship transitions as MPI messages."""
    local, _ = mpirun(4, [os.path.join(SCRIPTS, "check_transport.py"), "30000"])
    remote, _ = mpirun(4, [os.path.join(SCRIPTS, "check_transport.py"), "30000"], AQUAML_PSEUDO_NODE_SIZE="2")
    assert local.returncode == 0 and remote.returncode == 0, local.stderr[-2000:] + remote.stderr[-2000:]
    digests = lambda out: sorted(re.findall(r"slice \d+ rows \d+ digest [0-9a-f]{16}", out))  # noqa: E731
    assert len(digests(local.stdout)) == 3 and digests(local.stdout) == digests(remote.stdout)


@pytest.mark.parametrize("role,ranks", [("worker", "[12]"), ("optimizer", "0")])
def test_a_raising_rank_aborts_the_job_quickly_and_cleanly(role, ranks, tmp_path):
    before = shm_files()
    proc, _ = mpirun(3, [os.path.join(SCRIPTS, "run_task.py"), "--raise-on", role, "--raise-at", "10",
                         "--eval-interval", "0", "--run-root", str(tmp_path)], timeout=60)
    end = time.time()
    assert proc.returncode != 0
    assert re.search(rf"rank {ranks} \({role}\): Traceback", proc.stderr), proc.stderr[-3000:]
    assert f"RuntimeError: deliberate failure in the {role} at step 10" in proc.stderr
    raised = float(re.search(r"raising at ([\d.]+)", proc.stderr).group(1))
    assert end - raised < 15, f"took {end - raised:.1f} s from the exception to mpiexec's exit"
    assert shm_files() <= before


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _waiting_cpu_fraction(waiting_rank, args, tmp_path, settle=2.0, after_rows=0):
    """The CPU share of ``waiting_rank`` over 3 s of a run_task.py launch, measured ``settle`` seconds
    after it started, or ``settle`` seconds after progress.csv holds ``after_rows`` rows: the first
    rounds trace the training step, which is work, not waiting (on a busy machine that tracing can
    run past any fixed delay and used to be counted as waiting)."""
    err_path = os.path.join(tmp_path, "stderr.txt")
    with open(err_path, "w") as err:
        proc = subprocess.Popen([MPIEXEC, "-n", "3", sys.executable, os.path.join(SCRIPTS, "run_task.py"),
                                 "--run-root", str(tmp_path)] + args, stdout=subprocess.PIPE, stderr=err,
                                text=True, env=mpi_env(), cwd=ROOT)
    csv_path = os.path.join(tmp_path, "task", "progress.csv")
    try:
        pid = rank_pids(proc, 3)[waiting_rank]
        deadline = time.monotonic() + 120
        while after_rows and not (os.path.isfile(csv_path) and len(open(csv_path).read().splitlines()) > after_rows):
            assert proc.poll() is None and time.monotonic() < deadline, "no progress rows"
            time.sleep(0.05)
        time.sleep(settle)  # past start-up and the first tracing
        c0, t0 = _cpu_seconds(pid), time.monotonic()
        time.sleep(3.0)
        fraction = (_cpu_seconds(pid) - c0) / (time.monotonic() - t0)
    finally:
        proc.kill()
        proc.wait()
    return fraction


def test_optimizer_waiting_for_data_does_not_spin(tmp_path):
    """Workers step a 5 ms-per-step environment and no update is due: the optimizer only waits."""
    fraction = _waiting_cpu_fraction(0, ["--env-sleep", "0.005", "--steps", "4000", "--learning-starts", "100000",
                                         "--eval-interval", "0"], tmp_path, settle=0.5, after_rows=1)
    assert fraction < 0.10, f"waiting optimizer used {fraction:.1%} of a core"


def test_worker_waiting_for_updates_does_not_spin(tmp_path):
    """At 200 updates per step the workers spend nearly all their time waiting for the optimizer."""
    fraction = _waiting_cpu_fraction(1, ["--replay-ratio", "200", "--steps", "4000", "--eval-interval", "0"], tmp_path)
    assert fraction < 0.10, f"waiting worker used {fraction:.1%} of a core"


def test_ppo_optimizer_waiting_for_segments_does_not_spin(tmp_path):
    """PPO rounds: workers step a 10 ms-per-step environment while the optimizer waits for their segments.

    Each 0.64 s round ends with a short training round (and the first with tracing it): measured
    after the first two rounds are logged, what is left of the optimizer's time is waiting."""
    fraction = _waiting_cpu_fraction(0, ["--ppo-epochs", "1", "--env-sleep", "0.01", "--steps", "40000",
                                         "--eval-interval", "0"], tmp_path, settle=0.5, after_rows=2)
    assert fraction < 0.10, f"waiting optimizer used {fraction:.1%} of a core"


def test_ppo_worker_waiting_for_a_round_does_not_spin(tmp_path):
    """PPO rounds of 64 steps trained with 400 passes each: the workers mostly wait for new weights."""
    fraction = _waiting_cpu_fraction(1, ["--ppo-epochs", "400", "--steps", "40000", "--eval-interval", "0"], tmp_path)
    assert fraction < 0.10, f"waiting worker used {fraction:.1%} of a core"


def test_tutorial1_learns_under_three_ranks(tmp_path):
    proc, wall = mpirun(3, [os.path.join(ROOT, "tutorials", "tutorial1.py"), "--steps", "8000", "--hidden", "64",
                            "--learning-starts", "500", "--name", "mpi", "--run-root", str(tmp_path)], timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = float(re.search(r"final evaluation return: (-?[\d.]+)", proc.stdout).group(1))
    assert final > -400, proc.stdout[-2000:]
    assert os.path.isfile(os.path.join(tmp_path, "mpi", "models", "actor.weights.h5"))
    config = open(os.path.join(tmp_path, "mpi", "config.json")).read()
    assert '"ranks": 3' in config


def test_two_tasks_share_one_launch_through_sub_communicators(tmp_path):
    proc, _ = mpirun(4, [os.path.join(SCRIPTS, "two_tasks.py"), str(tmp_path)], timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(re.findall(r"task (\d) world rank (\d) finished 2 ranks", proc.stdout)) == [("0", "0"), ("1", "1")]
    for task, steps in ((0, "300"), (1, "400")):
        with open(os.path.join(tmp_path, f"task{task}", "progress.csv")) as f:
            assert f.read().splitlines()[-1].split(",")[0] == steps


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_signal_stops_every_rank_cleanly_and_keeps_the_weights(signal_name, tmp_path):
    import signal
    proc = subprocess.Popen([MPIEXEC, "-n", "3", sys.executable, os.path.join(SCRIPTS, "run_task.py"),
                             "--env-sleep", "0.005", "--steps", "100000", "--eval-interval", "0",
                             "--run-root", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=mpi_env(), cwd=ROOT)
    csv_path = os.path.join(tmp_path, "task", "progress.csv")
    deadline = time.monotonic() + 180
    while not (os.path.isfile(csv_path) and len(open(csv_path).read().splitlines()) > 1):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no progress row within 180 s"
        time.sleep(0.1)
    time.sleep(1)  # mid-run: past the first epoch, well short of the 100k steps
    assert proc.poll() is None, "the run finished before it could be signalled"
    proc.send_signal(getattr(signal, signal_name))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert len(re.findall(r"rank \d \w+ cpu_fraction", out)) == 3
    models = os.path.join(tmp_path, "task", "models")
    assert sorted(os.listdir(models)) == ["actor.weights.h5", "qf1.weights.h5", "qf2.weights.h5", "sac_state.npz"]
    with open(csv_path) as f:
        assert 0 < int(f.read().splitlines()[-1].split(",")[0]) < 100_000


def _csv_without_timing(path):
    import csv
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in r.items() if not k.startswith("time/") and k not in ("charts/SPS", "charts/UPS")}
            for r in rows]


def test_ppo_learns_cartpole_under_three_ranks_identically_over_both_transports(tmp_path):
    """Synchronous rounds: the same rank count gives the same run, through shared memory or messages."""
    args = [os.path.join(ROOT, "tutorials", "tutorial3.py"), "--steps", "16000", "--name", "ppo"]
    local, _ = mpirun(3, args + ["--run-root", str(tmp_path / "local")], timeout=300)
    remote, _ = mpirun(3, args + ["--run-root", str(tmp_path / "remote")], timeout=300, AQUAML_PSEUDO_NODE_SIZE="2")
    assert local.returncode == 0 and remote.returncode == 0, local.stderr[-2000:] + remote.stderr[-2000:]
    final = float(re.search(r"final evaluation return: (-?[\d.]+)", local.stdout).group(1))
    assert final >= 195, local.stdout[-2000:]
    rows = _csv_without_timing(tmp_path / "local" / "ppo" / "progress.csv")
    assert len(rows) > 10 and rows == _csv_without_timing(tmp_path / "remote" / "ppo" / "progress.csv")
    assert sorted(os.listdir(tmp_path / "local" / "ppo" / "models")) == \
        ["actor.weights.h5", "critic.weights.h5", "ppo_state.npz"]
