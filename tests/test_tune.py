"""Hyperparameter tuning (aquaml.tune, aquaml tune): spaces, runtime hooks, and real studies under
real mpiexec with real Optuna journal files: rank groups, pruning, failed trials, pre-emption."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest

from aquaml import RLTaskStarter, SACParameters
from aquaml.parallel.failure import StopRequest
from aquaml.run.progress import EVALUATION_STOP
from aquaml.tuning.space import SpaceError, load_space
from aquaml.tuning.study import open_storage
from helpers import CountingEnv, MLPActor, MLPQ

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")
#: A target task SAC learns in a few hundred steps; tiny models, one evaluation episode.
SAC_SPACE = {"search": {"learning_rate": {"type": "float", "low": 1e-8, "high": 1e-2, "log": True}},
             "fixed": {"learning_starts": 32, "batch_size": 32, "epoch_length": 50, "eval_interval": 100,
                       "calculate_episodes": 1, "buffer_size": 4000, "hidden": [16, 16]}}
PPO_SPACE = {"search": {"learning_rate": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True},
                        "gamma": {"type": "float", "low": 0.9, "high": 0.999},
                        "hidden_width": {"type": "categorical", "choices": [16, 32]}},
             "fixed": {"rollout_steps": 128, "update_epochs": 2, "eval_interval": 128, "calculate_episodes": 2}}


def env_vars(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_", "SLURM_"))}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, TESTS])
    env.update(extra)
    return env


def tune_command(ranks, args):
    prefix = [MPIEXEC, "-n", str(ranks)] if ranks else []
    return prefix + [sys.executable, "-m", "aquaml.cli", "tune"] + [str(a) for a in args]


def run_tune(ranks, args, cwd, timeout=240):
    proc = subprocess.run(tune_command(ranks, args), capture_output=True, text=True, timeout=timeout,
                          env=env_vars(), cwd=cwd)
    return proc


def write_space(path, space):
    path.write_text(json.dumps(space))
    return str(path)


def trials_of(storage, name="study"):
    return optuna.load_study(study_name=name, storage=open_storage(str(storage), 20, 60, 0)).get_trials()


def progress_steps(run_dir):
    with open(os.path.join(run_dir, "progress.csv"), newline="", encoding="utf-8") as f:
        return [int(float(row["global_step"])) for row in csv.DictReader(f)]


# --- search spaces --------------------------------------------------------------------------------
@pytest.mark.parametrize("search, message", [
    ({"gamm": {"type": "float", "low": 0.9, "high": 0.99}}, "search.gamm: unknown parameter 'gamm'"),
    ({"gamma": {"type": "float", "low": 0.99, "high": 0.9}}, "search.gamma: empty range"),
    ({"batch_size": {"type": "int", "low": 64, "high": 64}}, "search.batch_size: empty range"),
    ({"learning_rate": {"type": "float", "low": 0, "high": 0.1, "log": True}},
     "search.learning_rate: log range through zero"),
    ({"tau": {"type": "float", "low": -0.1, "high": 0.1, "log": True}}, "search.tau: log range through zero"),
    ({"gamma": {"type": "float", "low": 0.9, "high": 1.5}}, "search.gamma: high=1.5 is refused by SACParameters"),
    ({"batch_size": {"type": "float", "low": 16, "high": 64}}, "search.batch_size: batch_size takes int values"),
    ({"auto_alpha": {"type": "int", "low": 0, "high": 1}}, "search.auto_alpha: auto_alpha takes bool values"),
    ({"tau": {"type": "categorical", "choices": []}}, "search.tau: a categorical needs a non-empty list"),
    ({"seed": {"type": "int", "low": 0, "high": 9}}, "search.seed: seed cannot be tuned"),
    ({"gamma": {"type": "float", "low": 0.9}}, "search.gamma: a float range needs low and high"),
    ({"gamma": [0.9, 0.99]}, "search.gamma: expected a mapping with type"),
    ({"hidden": {"type": "categorical", "choices": [[64, 0]]}}, "search.hidden: each choice must be a list"),
])
def test_malformed_space_is_refused_naming_the_entry(search, message):
    with pytest.raises(SpaceError) as err:
        load_space({"search": search}, "sac")
    assert message in str(err.value)


def test_fixed_entries_are_checked_and_may_not_be_searched_too():
    with pytest.raises(SpaceError, match=r"fixed\.gamma: gamma is also searched"):
        load_space({"search": {"gamma": {"type": "float", "low": 0.9, "high": 0.99}}, "fixed": {"gamma": 0.9}}, "sac")
    with pytest.raises(SpaceError, match=r"fixed is refused by SACParameters: tau must be in \(0, 1\]"):
        load_space({"search": {"gamma": {"type": "float", "low": 0.9, "high": 0.99}}, "fixed": {"tau": 2.0}}, "sac")
    with pytest.raises(SpaceError, match=r"fixed.rollout_stepz: unknown parameter"):
        load_space(PPO_SPACE, "ppo", fixed={"rollout_stepz": 64})
    with pytest.raises(SpaceError, match=r"the space fixes 128, the command line 64"):
        load_space(PPO_SPACE, "ppo", fixed={"rollout_steps": 64})


def test_relation_between_two_searched_fields_is_left_to_the_trial():
    """burn_in < sequence_length depends on both: with both searched the space is accepted (a
    trial whose pair is refused fails); with sequence_length at its default 32 it is refused."""
    both = {"burn_in": {"type": "int", "low": 0, "high": 40}, "sequence_length": {"type": "int", "low": 48, "high": 64}}
    assert load_space({"search": both}, "sac").names == ("burn_in", "sequence_length")
    with pytest.raises(SpaceError, match=r"search.burn_in: high=40 is refused.*below sequence_length=32"):
        load_space({"search": {"burn_in": both["burn_in"]}}, "sac")


def test_space_files_yaml_and_json_give_the_trial_settings(tmp_path):
    yaml_file = tmp_path / "space.yaml"
    yaml_file.write_text("search:\n  learning_rate: {type: float, low: 1e-5, high: 1e-2, log: true}\n"
                         "  hidden: {type: categorical, choices: [[64, 64], [32]]}\n"
                         "fixed:\n  rollout_steps: 256\n")
    space = load_space(str(yaml_file), "ppo")  # YAML 1.1 reads 1e-5 as text: accepted as a number
    assert space.dimensions[0].low == 1e-5 and space.dimensions[1].choices == ("64,64", "32")
    assert space.settings({"learning_rate": 0.001, "hidden": "32"}) == ({"rollout_steps": 256}, (32,), 0.001)
    json_file = write_space(tmp_path / "space.json", {"search": {"hidden_width": {"type": "int", "low": 8, "high": 64}},
                                                      "fixed": {"hidden_layers": 3}})
    assert load_space(json_file, "sac").settings({"hidden_width": 24}) == ({}, (24, 24, 24), None)
    with pytest.raises(SpaceError, match="space file .*space.txt: expected a .json, .yaml or .yml file"):
        load_space(str(tmp_path / "space.txt"), "sac")


# --- the runtime hooks -----------------------------------------------------------------------------
def test_stop_requests_nest_and_pass_signals_outwards():
    before = signal.getsignal(signal.SIGTERM)  # import aquaml's holder of early signals, outside a session
    outer = StopRequest()
    try:
        inner = StopRequest()
        inner.request("pruned")
        assert inner.requested and inner.reason == "pruned" and not outer.requested  # not passed on
        os.kill(os.getpid(), signal.SIGTERM)
        assert inner.signal_name == "SIGTERM" and inner.reason == "pruned"
        assert outer.signal_name == "SIGTERM" and outer.requested
        inner.restore()
        late = StopRequest()  # made after the outer one caught a signal: starts requested
        assert late.requested and late.signal_name == "SIGTERM"
        late.restore()
    finally:
        outer.restore()
    assert signal.getsignal(signal.SIGTERM) == before


def test_on_evaluation_stops_a_run_cleanly(run_root):
    """True from on_evaluation at step 200 stops a 600-step run there, with a checkpoint."""
    calls = []

    def on_evaluation(step, stats):
        calls.append((step, stats["eval/return_mean"]))
        return step >= 200

    starter = RLTaskStarter(env=CountingEnv(horizon=10), model_class_dict={"actor": MLPActor, "qf1": MLPQ, "qf2": MLPQ},
                            algo_hyperparameter=SACParameters(total_steps=600, epoch_length=50, learning_starts=50,
                                                              batch_size=16, eval_interval=100, calculate_episodes=1),
                            run_root=run_root, name="hook", verbose=False, tensorboard=False,
                            on_evaluation=on_evaluation)
    final = starter.run()
    assert [step for step, _ in calls] == [100, 200]
    assert starter.interrupted and starter.stop_reason == EVALUATION_STOP
    assert final["eval/return_mean"] == calls[-1][1]
    assert progress_steps(starter.run_dir)[-1] == 200
    assert sorted(os.listdir(os.path.join(starter.run_dir, "checkpoints")))[-1] == "step_000000000200"


# --- the command, under mpiexec ------------------------------------------------------------------
def test_malformed_space_is_refused_before_any_rank_starts(tmp_path):
    """Under mpiexec every rank refuses at once (one message); with --ranks no rank is launched."""
    bad = write_space(tmp_path / "bad.json", {"search": {"gamm": {"type": "float", "low": 0.9, "high": 0.99}}})
    proc = run_tune(2, ["--env", "CartPole-v1", "--algo", "ppo", "--space", bad, "--trials", 2,
                        "--storage", "study.log"], tmp_path, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.count("aquaml tune: error: search.gamm: unknown parameter 'gamm'") == 1, proc.stderr[-2000:]
    zero = write_space(tmp_path / "zero.json", {"search": {"learning_rate": {"type": "float", "low": 0.0,
                                                                             "high": 0.1, "log": True}}})
    proc = run_tune(0, ["--env", "CartPole-v1", "--space", zero, "--trials", 2, "--storage", "study.log",
                        "--ranks", 4, "--group-size", 2], tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "search.learning_rate: log range through zero" in proc.stderr
    assert not (tmp_path / "study.log").exists() and not (tmp_path / "runs").exists()


def test_two_groups_of_two_ranks_run_six_distinct_trials(tmp_path):
    space = write_space(tmp_path / "space.json", PPO_SPACE)
    proc = run_tune(4, ["--env", "CartPole-v1", "--algo", "ppo", "--space", space, "--trials", 6, "--group-size", 2,
                        "--storage", "study.log", "--steps", 256, "--pruner", "none", "--no-tensorboard",
                        "--seed", 10], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    trials = trials_of(tmp_path / "study.log")
    assert [t.number for t in trials] == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials), [t.state for t in trials]
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 6
    assert {t.user_attrs["group"] for t in trials} == {0, 1}  # both groups ran trials
    for t in trials:
        run_dir = tmp_path / "runs" / "study" / f"trial_{t.number}"
        config = json.loads((run_dir / "config.json").read_text())
        assert config["ranks"] == 2 and config["parameters"]["seed"] == 10 + t.number == t.user_attrs["seed"]
        assert config["tuning"]["trial"] == t.number and config["parameters"]["gamma"] == t.params["gamma"]
        assert config["cli"]["hidden"] == [t.params["hidden_width"]] * 2
        assert progress_steps(run_dir)[-1] == 256 and (run_dir / "policy").is_dir()
    best = json.loads((tmp_path / "runs" / "study" / "best.json").read_text())
    assert best["best"]["value"] == max(t.value for t in trials) and best["trials"]["complete"] == 6
    with open(tmp_path / "runs" / "study" / "trials.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 6
    assert (tmp_path / "runs" / "study" / "history.png").stat().st_size > 0
    assert (tmp_path / "runs" / "study" / "importances.png").stat().st_size > 0


@pytest.fixture(scope="module")
def pruned_and_failed(tmp_path_factory):
    """One group of two ranks, SAC on a task that fails the first evaluation of the trial with
    seed 1: trials 0 (lr 3e-3), 1 (fails), 2 (lr 4e-3), then 3 (lr 1e-8, cannot learn: pruned)."""
    cwd = tmp_path_factory.mktemp("prune")
    space = write_space(cwd / "space.json", SAC_SPACE)
    enqueue = [json.dumps({"learning_rate": lr}) for lr in (3e-3, 3.1e-3, 4e-3, 1e-8)]
    args = ["--env", "tune_envs:AquamlFailingEval-v0", "--algo", "sac", "--space", space, "--trials", 3,
            "--group-size", 2, "--storage", "study.log", "--steps", 150, "--pruner", "median",
            "--pruner-startup", 2, "--no-tensorboard"]
    for item in enqueue:
        args += ["--enqueue", item]
    proc = run_tune(2, args, cwd)
    return proc, cwd


def test_a_trial_that_raises_is_failed_and_the_study_goes_on(pruned_and_failed):
    proc, cwd = pruned_and_failed
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    trials = trials_of(cwd / "study.log")
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE", "PRUNED"], states
    assert "RuntimeError: deliberate failure: evaluation reset with seed 1000004" in trials[1].user_attrs["error"]
    assert "deliberate failure" in proc.stdout  # the console row shows it


def test_the_pruner_prunes_a_bad_configuration(pruned_and_failed):
    proc, cwd = pruned_and_failed
    trials = trials_of(cwd / "study.log")
    bad = trials[3]
    assert bad.state == optuna.trial.TrialState.PRUNED and bad.params["learning_rate"] == 1e-8
    assert bad.user_attrs["pruned_at"] == 100 and list(bad.intermediate_values) == [100]
    good = [trials[0].intermediate_values[100], trials[2].intermediate_values[100]]
    assert bad.intermediate_values[100] < min(good), (bad.intermediate_values, good)
    # both ranks stopped at the evaluation (an MPI run passes a step by a few before it evaluates)
    assert 100 <= progress_steps(cwd / bad.user_attrs["run_dir"])[-1] < 150


def wait_for(predicate, proc, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the job ended (rc {proc.returncode}) before {what}\n{out[-2000:]}\n{err[-3000:]}")
        time.sleep(0.3)
    raise AssertionError(f"no {what} after {timeout} s")


def states(storage):
    try:
        return [t.state.name for t in trials_of(storage)]
    except (KeyError, ValueError, OSError):
        return []


def reported(storage):
    try:
        return [t for t in trials_of(storage) if t.state.name == "RUNNING" and t.intermediate_values]
    except (KeyError, ValueError, OSError):
        return []


def test_preemption_term_then_kill_then_the_same_command_finishes_exactly_n(tmp_path):
    """SIGTERM: the group stops at a clean point, exit 0, the running trial failed and queued.
    SIGKILL of the whole job later: its trial stays RUNNING until its heartbeat is stale. The
    same command then ends with exactly 2 finished trials, each retry run once."""
    space = write_space(tmp_path / "space.json", SAC_SPACE)
    storage = tmp_path / "study.log"
    args = tune_command(2, ["--env", "tune_envs:AquamlTarget-v0", "--algo", "sac", "--space", space, "--trials", 2,
                            "--group-size", 2, "--storage", "study.log", "--steps", 400, "--pruner", "none",
                            "--checkpoint-interval", 100, "--heartbeat", 1, "--grace", 4, "--no-tensorboard"])
    first = subprocess.Popen(args, cwd=tmp_path, env=env_vars(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    wait_for(lambda: reported(storage), first, 180, "a running trial with an evaluation")
    first.send_signal(signal.SIGTERM)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, out[-2000:] + err[-3000:]
    assert "stopped by SIGTERM" in out
    trials = trials_of(storage)
    stopped = [t for t in trials if t.state.name == "FAIL"]
    assert len(stopped) == 1 and stopped[0].user_attrs["stopped_by"] == "SIGTERM"
    assert [t.state.name for t in trials if t.system_attrs.get("failed_trial") == stopped[0].number] == ["WAITING"]

    second = subprocess.Popen(args, cwd=tmp_path, env=env_vars(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    wait_for(lambda: "COMPLETE" in states(storage) and reported(storage), second, 240,
             "a completed trial and a running one")
    os.killpg(second.pid, signal.SIGKILL)  # the whole job, launcher and ranks
    second.communicate(timeout=30)
    assert "RUNNING" in states(storage)

    third = subprocess.run(args, cwd=tmp_path, env=env_vars(), capture_output=True, text=True, timeout=240)
    assert third.returncode == 0, third.stdout[-2000:] + third.stderr[-3000:]
    trials = trials_of(storage)
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 2, [(t.number, t.state.name) for t in trials]
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    originals = [t.system_attrs.get("failed_trial", t.number) for t in finished]
    assert len(set(originals)) == 2  # no trial finished twice (a retry counts as its original)
    for t in trials:
        if t.state.name == "FAIL":  # each stopped or killed trial was queued once and finished then
            retries = [r for r in trials if t.number in r.system_attrs.get("retry_history", [])]
            assert retries and retries[-1].state.name == "COMPLETE", (t.number, [r.number for r in retries])
    for t in finished:
        steps = progress_steps(tmp_path / t.user_attrs["run_dir"])
        assert steps[-1] == 400 and all(a < b for a, b in zip(steps, steps[1:])), f"trial {t.number}: {steps}"
    retried = [t for t in finished if "failed_trial" in t.system_attrs]
    assert retried and all(t.user_attrs["run_dir"].endswith(f"trial_{t.system_attrs['failed_trial']}") for t in retried)
    assert np.isfinite([t.value for t in finished]).all()


def test_failing_set_up_stops_at_max_failures_and_a_changed_command_is_refused(tmp_path):
    """Every trial's pair (burn_in 40, sequence_length 32) is refused when its task is built: each
    trial fails with that message, and the study stops after max_failures of them. The same study
    continued with another step budget is refused."""
    import aquaml
    space = {"search": {"burn_in": {"type": "categorical", "choices": [40]},
                        "sequence_length": {"type": "categorical", "choices": [32]}}}
    storage = str(tmp_path / "broken.log")
    summary = aquaml.tune("Pendulum-v1", "sac", space, trials=5, storage=storage, steps=100, max_failures=2,
                          run_root=str(tmp_path / "runs"), pruner="none", report=False, verbose=False)
    assert summary["trials"]["fail"] == 2 and summary["trials"]["complete"] == 0
    errors = [t.user_attrs["error"] for t in trials_of(storage, "broken")]
    assert len(errors) == 2 and all("burn_in must be below sequence_length=32" in e for e in errors), errors
    with pytest.raises(ValueError, match=r"was started with other settings(.|\n)*steps: study 100, now 200"):
        aquaml.tune("Pendulum-v1", "sac", space, trials=5, storage=storage, steps=200, max_failures=2,
                    run_root=str(tmp_path / "runs"), pruner="none", report=False, verbose=False)
