"""The aquaml command line and policy export: every subcommand runs, bad flags are refused."""
import argparse
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from aquaml import load_policy
from aquaml.cli import build_parser, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def aquaml(*args, cwd, timeout=300):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    return subprocess.run([sys.executable, "-m", "aquaml.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)


def test_every_flag_of_every_subcommand_documents_its_default():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == {"train", "eval", "plot", "export", "serve", "serve-nats", "tune"}
    for name, sub in subparsers.choices.items():
        text = sub.format_help()
        assert "--help" in text
        for action in sub._actions:
            if not action.option_strings or action.required or isinstance(
                    action, (argparse._HelpAction, argparse._StoreTrueAction)):
                continue
            helptext = sub._get_formatter()._get_help_string(action)
            assert "(default" in helptext, f"aquaml {name} {action.option_strings[0]}: {helptext!r}"


@pytest.mark.parametrize("argv,message", [
    (["train", "--env", "Pendulum-v1", "--bogus"], "unrecognized arguments: --bogus"),
    (["train", "--env", "Pendulum-v1", "--steps", "-5"], "--steps: expected a positive integer, got -5"),
    (["train", "--env", "Pendulum-v1", "--algo", "nosuch"], "--algo nosuch: unknown algorithm 'nosuch'; registered: "),
    (["train", "--env", "Pendulum-v1", "--import", "no_such_module"], "--import no_such_module: No module named"),
    (["train", "--env", "Pendulum-v1", "--resume"], "--resume needs --name"),
    (["train", "--env", "Pendulum-v1", "--set", "gama=0.9"], "has no field 'gama'"),
    (["train", "--env", "Pendulum-v1", "--set", "seed=3"], "--set seed conflicts"),
    (["train", "--env", "Pendulum-v1", "--set", "gamma=fast"], "--set gamma: expected a number"),
    (["train", "--env", "Pendulum-v1", "--hidden", "64,x"], "comma-separated layer widths"),
    (["train", "--env", "Pendulum-v1", "--env", "CartPole-v1"],
     "argument --env: given twice (--env Pendulum-v1 and --env CartPole-v1); give it once"),
    (["train", "--env", "Pendulum-v1", "--set", "buffer_size=100"],
     "--set buffer_size=100: buffer_size must be >= batch_size=256"),
    (["train", "--env", "Pendulum-v1", "--set", "batch_size=0"], "--set batch_size=0: batch_size must be a positive int"),
    (["train", "--env", "CartPole-v1", "--algo", "ppo", "--set", "rollout_steps=1.5"],
     "--set rollout_steps=1.5: rollout_steps must be a positive int, got 1.5"),
    (["train", "--env", "CartPole-v1", "--algo", "ppo", "--set", "target_kl=high"],
     "--set target_kl: expected a number or none, got 'high'"),
    (["train", "--env", "Pendulum-v1", "--steps", "100", "--eval-interval", "50", "--set", "epoch_length=30",
      "--set", "eval_interval=10"], "--set eval_interval conflicts"),
    (["train", "--env", "CartPole-v1", "--algo", "sac", "--steps", "100"], "SAC needs a continuous"),
    (["train", "--env", "NoSuchEnv-v0", "--steps", "100"], "--env NoSuchEnv-v0: cannot make"),
    (["train"], "the following arguments are required: --env"),
    (["plot", "runs", "-o", "curves.gif"], "curves.gif"),
    (["eval", "no/such/run"], "no/such/run: no such directory"),
    (["export", "no/such/run", "-o", "x"], "not a run directory"),
    (["fly"], "invalid choice: 'fly'"),
])
def test_bad_flags_are_refused_with_a_message(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not os.path.exists(tmp_path / "runs"), "nothing may be written before the flags are checked"


def test_train_eval_export_plot_end_to_end(tmp_path):
    """PPO on CartPole twice (two seeds), then eval, export (from the newest checkpoint) and plot."""
    cwd = str(tmp_path)
    for seed in ("1", "2"):
        proc = aquaml("train", "--env", "CartPole-v1", "--algo", "ppo", "--steps", "1024", "--seed", seed,
                      "--eval-interval", "512", "--eval-episodes", "2", "--set", "rollout_steps=256",
                      "--set", "batch_size=64", "--quiet", cwd=cwd)
        assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(os.listdir(tmp_path / "runs"))
    assert runs == ["CartPole-v1_ppo", "CartPole-v1_ppo-2"]
    run = os.path.join(cwd, "runs", runs[0])
    config = json.load(open(os.path.join(run, "config.json")))
    assert config["parameters"]["rollout_steps"] == 256 and config["parameters"]["seed"] == 1
    assert config["cli"]["algo"] == "ppo" and config["env_id"] == "CartPole-v1"
    assert {"progress.csv", "policy", "models", "checkpoints"} <= set(os.listdir(run))

    proc = aquaml("eval", run, "--episodes", "3", "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert stats["eval/length_min"] >= 8 and stats["eval/return_mean"] == stats["eval/length_mean"]

    out = os.path.join(cwd, "exported")
    proc = aquaml("export", run, "-o", out, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step 1024" in proc.stdout
    exported, final = load_policy(out), load_policy(run)  # final: the run's own policy/ at the end
    obs = {"obs": np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)}
    assert np.array_equal(exported.act(obs)["action"], final.act(obs)["action"])

    png = os.path.join(cwd, "curves.png")
    proc = aquaml("plot", os.path.join(cwd, "runs"), "-o", png, "--points", "10", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_train_with_ranks_launches_the_mpi_runtime(tmp_path):
    proc = aquaml("train", "--env", "CartPole-v1", "--algo", "ppo", "--steps", "512", "--ranks", "3",
                  "--set", "rollout_steps=128", "--eval-episodes", "1", "--name", "mpi", "--quiet", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "mpi"
    assert json.load(open(run / "config.json"))["ranks"] == 3
    with open(run / "progress.csv") as f:
        assert [r["global_step"] for r in csv.DictReader(f)][-1] == "512"


def test_exported_policy_needs_only_tensorflow_and_matches_the_algorithm(run_root):
    """The SavedModel runs in a process that never imports aquaml or the model classes."""
    from helpers import MLPActor, MLPQ

    from aquaml import RLTaskStarter, SACParameters
    starter = RLTaskStarter(env="Pendulum-v1", model_class_dict={"actor": MLPActor, "qf1": MLPQ, "qf2": MLPQ},
                            algo_hyperparameter=SACParameters(total_steps=200, learning_starts=100,
                                                              calculate_episodes=1),
                            run_root=run_root, verbose=False, tensorboard=False)
    starter.run()
    policy_dir = os.path.join(starter.run_dir, "policy")
    obs = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    expected = starter.algo.act({"obs": obs}, deterministic=True)["action"]
    policy = load_policy(starter.run_dir)
    assert np.array_equal(policy.act({"obs": obs})["action"], expected)
    assert np.array_equal(policy.act({"obs": obs[0]})["action"], expected[0])  # one observation, no batch
    with pytest.raises(KeyError, match="missing \\['obs'\\]"):
        policy.act({"position": obs})
    code = ("import sys, numpy as np, tensorflow as tf; m = tf.saved_model.load(sys.argv[1]); "
            "x = np.load(sys.argv[2]); print(repr(m.act({'obs': x})['action'].numpy().tolist())); "
            "assert 'aquaml' not in sys.modules")
    np.save(os.path.join(run_root, "obs.npy"), obs)
    proc = subprocess.run([sys.executable, "-c", code, policy_dir, os.path.join(run_root, "obs.npy")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert np.array_equal(np.array(eval(proc.stdout.strip().splitlines()[-1]), np.float32), expected)


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../elsewhere"])
def test_a_run_name_that_is_not_one_plain_directory_name_is_refused_and_nothing_moves(name, tmp_path, monkeypatch,
                                                                                       capsys):
    """``--name ..`` with ``--resume`` in a project folder once moved the folder's files into previous-1/."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "important.txt").write_text("keep me")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "model.py").write_text("x = 1")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--env", "Pendulum-v1", "--steps", "100", "--name", name, "--resume"])
    assert exit_info.value.code == 2
    assert "--name: expected one plain directory name" in capsys.readouterr().err
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


def test_resume_with_other_hidden_widths_is_refused_before_anything_changes(cli_runs, capsys):
    from conftest import resume_cli_run
    config = (cli_runs / "run" / "config.json").read_text()
    with pytest.raises(SystemExit) as exit_info:
        resume_cli_run(cli_runs, 300, hidden="32,32")
    assert exit_info.value.code == 2
    assert "--hidden: checkpoint [16, 16], now [32, 32]" in capsys.readouterr().err
    assert (cli_runs / "run" / "config.json").read_text() == config
