"""Checkpoints: killed runs resume exactly, damaged checkpoints are skipped, nothing is half-written."""
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import MLPActor, MLPQ, curve

from aquaml import CheckpointError, RLTaskStarter, SACParameters
from aquaml.run.checkpoint import Checkpointer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "scripts", "resumable.py")
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")


def clean_env():
    return {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}


def script(run_root, name, *extra, ranks=1):
    prefix = [MPIEXEC, "-n", str(ranks)] if ranks > 1 else []
    return prefix + [sys.executable, SCRIPT, "--run-root", run_root, "--name", name, *extra]


def run(cmd, timeout=300):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=clean_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def start_and_interrupt(cmd, checkpoint_dir, sig, delay):
    """Start ``cmd``, wait for its first checkpoint, then send ``sig`` after ``delay`` seconds."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(), cwd=ROOT)
    deadline = time.monotonic() + 240
    while not os.path.isdir(checkpoint_dir):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    time.sleep(delay)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


@pytest.mark.parametrize("algo", ["sac", "ppo", "dqn"])
def test_sigkill_at_a_random_point_then_resume_matches_an_uninterrupted_run(algo, run_root):
    """One process, fixed seed: killed with SIGKILL somewhere after its first checkpoint and resumed,
    the run's whole progress.csv equals an uninterrupted run's (counters, optimizer state, RNG streams
    of the algorithm, worker, environments and loop all restored)."""
    run(script(run_root, "full", "--algo", algo))
    delay = random.Random().uniform(0.0, 1.5)
    code, _, _ = start_and_interrupt(script(run_root, "killed", "--algo", algo, "--step-sleep", "0.004"),
                                     os.path.join(run_root, "killed", "checkpoints", "step_000000000200"),
                                     signal.SIGKILL, delay)
    assert code == -signal.SIGKILL
    killed_at = Checkpointer(os.path.join(run_root, "killed")).steps()
    assert killed_at and max(killed_at) < 1200, f"killed after delay {delay:.2f}s at checkpoints {killed_at}"
    out = run(script(run_root, "killed", "--algo", algo, "--resume")).stdout
    assert "done" in out
    full, resumed = curve(os.path.join(run_root, "full")), curve(os.path.join(run_root, "killed"))
    assert [r["global_step"] for r in resumed] == [str(s) for s in range(100, 1201, 100)]
    assert resumed == full, f"killed after {delay:.2f}s (checkpoints {killed_at})"


def test_mpi_sigterm_checkpoints_exits_zero_and_resumes_identically(run_root):
    """PPO under mpiexec -n 3: SIGTERM to the launcher reaches every rank, the run checkpoints the
    last trained round and exits 0; resumed with the same rank count it matches an uninterrupted run."""
    args = ("--algo", "ppo", "--steps", "3000", "--interval", "1000")
    run(script(run_root, "full", *args, ranks=3))
    code, out, err = start_and_interrupt(script(run_root, "stopped", *args, "--step-sleep", "0.004", ranks=3),
                                         os.path.join(run_root, "stopped", "checkpoints", "step_000000001000"),
                                         signal.SIGTERM, 0.8)
    assert code == 0, err[-3000:]
    assert out.count("interrupted") == 3
    stopped_at = max(Checkpointer(os.path.join(run_root, "stopped")).steps())
    assert 1000 < stopped_at < 3000  # the round trained when the signal came, not the older periodic one
    run(script(run_root, "stopped", *args, "--resume", ranks=3))
    assert curve(os.path.join(run_root, "stopped")) == curve(os.path.join(run_root, "full"))


def small_starter(run_root, name="run", steps=400, resume=False, **params):
    return RLTaskStarter(env="Pendulum-v1", model_class_dict={"actor": MLPActor, "qf1": MLPQ, "qf2": MLPQ},
                         algo_hyperparameter=SACParameters(total_steps=steps, epoch_length=100, learning_starts=100,
                                                           batch_size=32, calculate_episodes=1, eval_interval=0,
                                                           **params),
                         name=name, run_root=run_root, verbose=False, tensorboard=False, checkpoint_interval=100,
                         keep_checkpoints=3, resume=resume)


def test_two_seeded_runs_are_identical(run_root):
    a, b = small_starter(run_root, "a"), small_starter(run_root, "b")
    a.run()
    b.run()
    assert curve(a.run_dir) == curve(b.run_dir)
    assert len(curve(a.run_dir)) == 4


def test_damaged_checkpoints_are_skipped_with_a_warning_and_the_previous_one_used(run_root):
    starter = small_starter(run_root)
    starter.run()
    ckpt = Checkpointer(starter.run_dir)
    assert ckpt.steps() == [200, 300, 400]  # the newest three kept
    with open(os.path.join(ckpt.path(400), "algo.npz"), "r+b") as f:  # truncated, as by a full disk
        f.truncate(1000)
    os.remove(os.path.join(ckpt.path(300), "MANIFEST.json"))  # as if killed before it was complete
    with pytest.warns(UserWarning) as record:
        assert ckpt.latest() == ckpt.path(200)
    messages = " ".join(str(w.message) for w in record)
    assert "step_000000000400: algo.npz has 1000 bytes" in messages and "step_000000000300: no MANIFEST.json" in messages
    with pytest.warns(UserWarning, match="skipping damaged checkpoint"):
        resumed = small_starter(run_root, steps=500, resume=True)
    resumed.run()
    rows = curve(resumed.run_dir)
    assert [int(r["global_step"]) for r in rows] == [100, 200, 300, 400, 500]
    assert int(rows[-1]["charts/updates"]) == 400  # counters continued from step 200's checkpoint


def test_a_failed_checkpoint_write_leaves_the_previous_ones_intact(run_root, monkeypatch):
    starter = small_starter(run_root, steps=200)
    starter.run()
    ckpt = Checkpointer(starter.run_dir)
    before = {s: sorted(os.listdir(ckpt.path(s))) for s in ckpt.steps()}

    def failing_replay(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr("aquaml.run.checkpoint.save_replay", failing_replay)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save(300, {"x": np.zeros(3)}, {"step": 300}, replay=(starter.buffer, None))
    assert {s: sorted(os.listdir(ckpt.path(s))) for s in ckpt.steps()} == before
    assert not [n for n in os.listdir(ckpt.root) if n.startswith(".")]  # no temporary left behind
    Checkpointer.verify(ckpt.path(200))


def test_resume_refuses_a_changed_task_before_any_work(run_root):
    small_starter(run_root, steps=200).run()
    progress = os.path.join(run_root, "run", "progress.csv")
    before = open(progress).read()
    with pytest.raises(CheckpointError, match=r"parameters.gamma: checkpoint 0.99, now 0.9"):
        small_starter(run_root, steps=300, resume=True, gamma=0.9)
    assert open(progress).read() == before


def test_resume_without_a_checkpoint_sets_the_earlier_attempt_aside_and_says_where(run_root, capsys):
    run_dir = os.path.join(run_root, "run")
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "config.json"), "w") as f:  # an attempt killed before its first checkpoint
        json.dump({"name": "run", "algo": "SAC", "parameters": {}}, f)
    with open(os.path.join(run_dir, "progress.csv"), "w") as f:
        f.write("global_step\n100\n")
    starter = small_starter(run_root, steps=200, resume=True)
    starter.run()
    assert open(os.path.join(run_dir, "previous-1", "progress.csv")).read() == "global_step\n100\n"
    assert [r["global_step"] for r in curve(starter.run_dir)] == ["100", "200"]
    err = capsys.readouterr().err
    assert f"moved config.json, progress.csv to {os.path.join(run_dir, 'previous-1')}" in err, err


@pytest.mark.parametrize("name", ["..", ".", "", "a/b"])
def test_a_name_that_is_not_one_plain_directory_name_is_refused(name, run_root):
    with pytest.raises(ValueError, match="name must be one plain directory name"):
        small_starter(run_root, name=name, resume=True)


def test_resume_refuses_to_start_in_a_directory_that_holds_files_but_no_run(run_root):
    """Only a directory holding an aquaml run (its config.json) is ever set aside: other files stay put."""
    folder = os.path.join(run_root, "project")
    os.makedirs(os.path.join(folder, "src"))
    with open(os.path.join(folder, "important.txt"), "w") as f:
        f.write("keep me")
    with pytest.raises(ValueError, match="holds files but no aquaml run"):
        small_starter(run_root, name="project", resume=True)
    assert sorted(os.listdir(folder)) == ["important.txt", "src"]


def test_bad_checkpoint_arguments_are_rejected(run_root):
    for kwargs, field in (({"checkpoint_interval": -1}, "checkpoint_interval"), ({"keep_checkpoints": 0}, "keep_checkpoints"),
                          ({"resume": True}, "resume=True needs the name")):
        with pytest.raises(ValueError, match=field):
            RLTaskStarter(env="Pendulum-v1", model_class_dict={"actor": MLPActor, "qf1": MLPQ, "qf2": MLPQ},
                          run_root=run_root, verbose=False, **kwargs)


def test_resuming_a_finished_sac_run_under_mpi_ends_instead_of_waiting(run_root):
    """Workers already at their quota still send their last snapshot (this once hung forever)."""
    args = ("--algo", "sac", "--steps", "400", "--interval", "200")
    run(script(run_root, "done", *args, ranks=3), timeout=180)
    out = run(script(run_root, "done", *args, "--resume", ranks=3), timeout=120).stdout
    assert out.count("done") == 3
    assert max(Checkpointer(os.path.join(run_root, "done")).steps()) == 400


def tensorboard_scalars(run_dir, tag):
    """(step, value) of every event of ``tag`` in the run's TensorBoard files, in step order."""
    import tensorflow as tf
    found = []
    for name in sorted(os.listdir(run_dir)):
        if "tfevents" in name:
            for event in tf.compat.v1.train.summary_iterator(os.path.join(run_dir, name)):
                for value in event.summary.value:
                    if value.tag == tag:
                        found.append((event.step, float(tf.make_ndarray(value.tensor))))
    return sorted(found)


def test_tensorboard_after_a_resume_shows_what_progress_csv_shows(cli_runs):
    """Killed after its row at step 200 but before that checkpoint was complete, then resumed: TensorBoard
    must not keep the lost attempt's step-200 events beside the resumed ones."""
    from conftest import resume_cli_run
    run_dir = str(cli_runs / "run")
    shutil.rmtree(Checkpointer(run_dir).path(200))
    assert resume_cli_run(cli_runs, 200) == 0
    rows = [(int(r["global_step"]), float(r["charts/updates"])) for r in csv.DictReader(open(os.path.join(run_dir, "progress.csv")))]
    assert [s for s, _ in rows] == [100, 200]
    assert tensorboard_scalars(run_dir, "charts/updates") == rows
