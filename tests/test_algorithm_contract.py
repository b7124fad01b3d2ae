"""The algorithm contract and the registry: a user's own algorithm, written outside aquaml, runs in
one process and under mpiexec through the same schedule code, and the layers keep to themselves."""
import os
import re
import subprocess
import sys

import pytest

import aquaml
from aquaml import GymnasiumEnv, OffPolicyAlgorithm, OnPolicyAlgorithm, PPO, RLTaskStarter, SAC

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_DIR = os.path.join(ROOT, "tests", "user_algorithms")
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")
sys.path.insert(0, USER_DIR)
import reinforce  # noqa: E402  (registers "reinforce", as a user's module would)


def user_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    env["PYTHONPATH"] = os.pathsep.join([USER_DIR] + [p for p in (env.get("PYTHONPATH"),) if p])
    env.update(extra)
    return env


def test_algorithms_are_found_by_name_and_a_users_algorithm_by_its_own():
    assert aquaml.algorithm("sac") is SAC and aquaml.algorithm("PPO") is PPO
    assert aquaml.algorithm("reinforce") is reinforce.Reinforce
    assert {"sac", "ppo", "reinforce"} <= set(aquaml.algorithm_names())
    assert issubclass(SAC, OffPolicyAlgorithm) and issubclass(PPO, OnPolicyAlgorithm)
    with pytest.raises(ValueError, match=r"unknown algorithm 'dqn2'; registered: .*ppo.*sac"):
        aquaml.algorithm("dqn2")
    with pytest.raises(TypeError, match="subclass of aquaml.algos.base.OffPolicyAlgorithm or OnPolicyAlgorithm"):
        aquaml.register_algorithm("plain", object)
    with pytest.raises(ValueError, match="already taken by SAC"):
        aquaml.register_algorithm("sac", reinforce.Reinforce)
    with pytest.raises(ValueError, match="lowercase letters"):
        aquaml.register_algorithm("Bad Name", reinforce.Reinforce)
    with pytest.raises(TypeError, match="abstract"):
        type("Half", (OnPolicyAlgorithm,), {})(None, None, None, None)


def test_a_users_algorithm_learns_in_one_process(run_root):
    env = GymnasiumEnv("CartPole-v1")
    starter = RLTaskStarter("CartPole-v1", aquaml.default_models("reinforce", env.obs_info, env.action_info),
                            algo="reinforce", run_root=run_root, name="rf", verbose=False, tensorboard=False,
                            algo_hyperparameter=reinforce.ReinforceParameters(
                                total_steps=24_000, envs_per_worker=4, eval_interval=0, calculate_episodes=10))
    final = starter.run()
    assert final["eval/return_mean"] > 100, final  # a random policy scores about 22
    assert sorted(os.listdir(os.path.join(starter.run_dir, "models"))) == ["actor.weights.h5", "reinforce_state.npz"]
    policy = aquaml.load_policy(starter.run_dir)
    assert policy.act({"obs": env.reset(seed=0)["obs"]})["action"] in (0, 1)


def test_the_same_algorithm_runs_under_mpiexec_from_the_command_line(tmp_path):
    """Two workers of four environments each, through ``aquaml train --import``; no aquaml file knows it."""
    proc = subprocess.run([MPIEXEC, "-n", "3", sys.executable, "-m", "aquaml.cli", "train", "--import", "reinforce",
                           "--algo", "reinforce", "--env", "CartPole-v1", "--steps", "24000", "--set",
                           "envs_per_worker=4", "--eval-interval", "0", "--eval-episodes", "10", "--name", "rf",
                           "--run-root", str(tmp_path), "--no-tensorboard"],
                          capture_output=True, text=True, timeout=400, env=user_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = float(re.search(r"final evaluation return (-?[\d.]+)", proc.stdout).group(1))
    assert final > 100, proc.stdout[-2000:]
    assert '"ranks": 3' in open(tmp_path / "rf" / "config.json").read()


def _python_files(folder):
    for name in sorted(os.listdir(os.path.join(ROOT, "aquaml", folder))):
        if name.endswith(".py"):
            with open(os.path.join(ROOT, "aquaml", folder, name), encoding="utf-8") as f:
                yield name, f.read()


def test_transport_names_no_algorithm_and_algorithms_import_no_mpi():
    algorithm_words = re.compile(r"\b(SAC|PPO|DQN|GAIL|AMP|REINFORCE|sac|ppo|dqn)\b|\bparams\b|\.params\.")
    for name, text in _python_files("parallel"):
        assert not algorithm_words.search(text), f"aquaml/parallel/{name}: {algorithm_words.search(text).group(0)!r}"
    for name, text in _python_files("algos"):
        assert "mpi4py" not in text and "aquaml.parallel" not in text, f"aquaml/algos/{name} uses MPI"
    for name, text in _python_files("schedules"):
        assert not re.search(r"\b(SAC|PPO|DQN|sac|ppo|dqn)\b", text), f"aquaml/schedules/{name} names an algorithm"
        assert "mpi4py" not in text, f"aquaml/schedules/{name} imports MPI (transport belongs in aquaml/parallel)"
