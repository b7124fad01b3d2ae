"""Nothing read from a run directory runs code unless its owner signed it or the user trusts it.

The attacker here can write the run directory (a group-writable scratch directory) but cannot read
the user's key: they plant pickles and rewrite the manifest's checksums, replace a SavedModel, or
hand over a run of their own.
"""
import json
import os
import pickle
import shutil
import stat

import numpy as np
import pytest
import tensorflow as tf

from aquaml import load_policy
from aquaml.cli import main
from aquaml.run.checkpoint import Checkpointer
from aquaml.storage import file_sha256
from aquaml.run import signing
from conftest import resume_cli_run

@pytest.fixture
def runs(cli_runs):
    return cli_runs


def code_that_writes(marker):
    """A pickle that, when loaded, creates the file ``marker``."""
    class Payload:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').write('ran')",)
    return pickle.dumps(Payload())


def plant_pickles(checkpoint, marker):
    """Replace every pickle of a checkpoint by code and rewrite the manifest's sizes and checksums."""
    path = os.path.join(checkpoint, "MANIFEST.json")
    manifest = json.load(open(path))
    planted = [name for name in manifest["files"] if name.endswith(".pkl")]
    for name in planted:
        with open(os.path.join(checkpoint, name), "wb") as f:
            f.write(code_that_writes(marker))
        manifest["files"][name] = {"bytes": os.path.getsize(os.path.join(checkpoint, name)),
                                   "sha256": file_sha256(os.path.join(checkpoint, name))}
    json.dump(manifest, open(path, "w"))
    assert planted
    Checkpointer.verify(checkpoint)  # the checksums check out: only a signature can tell


def resume(root, *extra):
    return resume_cli_run(root, 300, *extra)


def steps_logged(run_dir):
    with open(os.path.join(run_dir, "progress.csv")) as f:
        return [int(line.split(",")[0]) for line in f.read().splitlines()[1:]]


def test_planted_pickles_do_not_run_on_resume(runs, tmp_path, capsys):
    marker = tmp_path / "ran"
    plant_pickles(Checkpointer(str(runs / "run")).latest(), marker)
    with pytest.raises(SystemExit) as exit_info:
        resume(runs)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--trust-checkpoint" in err and "trust_checkpoint=True" in err, err
    assert not marker.exists()


def test_export_reads_no_pickle(runs, tmp_path):
    marker = tmp_path / "ran"
    plant_pickles(Checkpointer(str(runs / "run")).latest(), marker)
    out = tmp_path / "exported"
    assert main(["export", str(runs / "run"), "-o", str(out)]) == 0
    assert not marker.exists()
    obs = {"obs": np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)}
    np.testing.assert_array_equal(load_policy(str(out)).act(obs)["action"],
                                  load_policy(str(runs / "run")).act(obs)["action"])


def test_a_run_signed_by_someone_else_resumes_only_when_trusted(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(signing.KEY_ENV, str(tmp_path / "other-user" / "checkpoint.key"))
    with pytest.raises(SystemExit):
        resume(runs)
    assert "signature does not match your key" in capsys.readouterr().err
    assert resume(runs, "--trust-checkpoint") == 0
    assert steps_logged(runs / "run") == [100, 200, 300]
    newest = Checkpointer(str(runs / "run")).latest()
    assert newest.endswith("step_000000000300")
    assert signing.signature_problem(Checkpointer.verify(newest)) is None  # signed with the new key


def test_a_format_1_checkpoint_resumes_only_when_trusted(runs, capsys):
    """A checkpoint of the earlier layout (all state in one state.pkl, no signature)."""
    path = Checkpointer(str(runs / "run")).latest()
    _, state = Checkpointer.load(path)
    for name in os.listdir(path):
        if name not in ("algo.npz", "replay.h5"):
            os.remove(os.path.join(path, name))
    with open(os.path.join(path, "state.pkl"), "wb") as f:
        pickle.dump(state, f)
    files = {n: {"bytes": os.path.getsize(os.path.join(path, n)), "sha256": file_sha256(os.path.join(path, n))}
             for n in sorted(os.listdir(path))}
    json.dump({"format": 1, "step": 200, "files": files, "written": 0.0}, open(os.path.join(path, "MANIFEST.json"), "w"))
    with pytest.raises(SystemExit):
        resume(runs)
    assert "checkpoint format 1" in capsys.readouterr().err
    assert resume(runs, "--trust-checkpoint") == 0
    assert steps_logged(runs / "run") == [100, 200, 300]


def test_the_signing_key_is_the_users_alone(tmp_path, monkeypatch):
    path = tmp_path / "config" / "aquaml" / "checkpoint.key"
    monkeypatch.setenv(signing.KEY_ENV, str(path))
    key = signing.user_key()
    assert len(key) == 32 and signing.user_key() == key  # made once, then read
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    manifest = {"files": {"a": {"bytes": 1, "sha256": "0" * 64}}}
    manifest["signature"] = signing.sign(manifest)
    assert signing.signature_problem(manifest) is None
    assert "does not match" in signing.signature_problem({**manifest, "files": {}})
    os.chmod(path, 0o640)
    with pytest.raises(signing.SigningKeyError, match="chmod 600"):
        signing.user_key()


def evil_saved_model(directory, marker):
    """A SavedModel with the policy's signature whose ``act`` writes ``marker``."""
    class Evil(tf.Module):
        @tf.function(input_signature=[{"obs": tf.TensorSpec((None, 3), tf.float32, name="obs")}])
        def act(self, obs):
            tf.io.write_file(str(marker), "ran")
            return {"action": tf.zeros_like(obs["obs"][:, :1])}
    tf.saved_model.save(Evil(), str(directory))


def test_eval_runs_no_savedmodel_it_cannot_trust(runs, tmp_path, capsys):
    marker = tmp_path / "ran"
    policy_dir = runs / "run" / "policy"
    obs = {"obs": np.random.default_rng(1).normal(size=(16, 3)).astype(np.float32)}
    signed = load_policy(str(policy_dir))
    assert signed.source == "saved_model"
    expected = signed.act(obs)["action"]
    evil = tmp_path / "evil"
    evil_saved_model(evil, marker)
    shutil.rmtree(policy_dir / "variables")
    for name in ("saved_model.pb", "variables"):
        shutil.move(str(evil / name), str(policy_dir / name))
    assert main(["eval", str(runs / "run"), "--episodes", "2", "--json"]) == 0
    assert not marker.exists()
    assert "SavedModel was not run" in capsys.readouterr().err
    rebuilt = load_policy(str(policy_dir))
    assert rebuilt.source == "weights"
    np.testing.assert_allclose(rebuilt.act(obs)["action"], expected, atol=1e-6)
    assert main(["eval", str(runs / "run"), "--episodes", "1", "--trust-policy", "--json"]) == 0
    assert marker.exists()  # trusted, the SavedModel runs: the flag means what it says


def test_a_custom_actor_policy_from_someone_else_is_refused_unless_trusted(run_root, tmp_path, monkeypatch):
    from helpers import MLPActor, MLPQ

    from aquaml import RLTaskStarter, SACParameters
    from aquaml.run.export import UntrustedPolicyError, export_policy
    starter = RLTaskStarter(env="Pendulum-v1", model_class_dict={"actor": MLPActor, "qf1": MLPQ, "qf2": MLPQ},
                            algo_hyperparameter=SACParameters(calculate_episodes=1), run_root=run_root,
                            verbose=False, tensorboard=False)
    path = export_policy(starter.algo, str(tmp_path / "policy"), "Pendulum-v1")
    assert load_policy(path).source == "saved_model"
    monkeypatch.setenv(signing.KEY_ENV, str(tmp_path / "other-user" / "checkpoint.key"))
    with pytest.raises(UntrustedPolicyError, match="trust=True"):
        load_policy(path)
    assert load_policy(path, trust=True).source == "saved_model"
