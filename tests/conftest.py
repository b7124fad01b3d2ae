"""Shared test set-up: quiet TensorFlow, one thread per test process, small helper environments, and a
checkpoint signing key of the test session's own (subprocesses inherit it), never the user's."""
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["AQUAML_KEY_FILE"] = os.path.join(tempfile.mkdtemp(prefix="aquaml-test-key-"), "checkpoint.key")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from aquaml.parallel.devices import limit_tf_threads  # noqa: E402

limit_tf_threads(1, 1)


#: ``aquaml train`` of a small finished SAC run: checkpoints at 100 and 200 steps, a row every 100.
CLI_RUN = ["train", "--env", "Pendulum-v1", "--algo", "sac", "--steps", "200", "--seed", "2", "--hidden", "16,16",
           "--set", "learning_starts=100", "--set", "batch_size=32", "--set", "epoch_length=100",
           "--eval-interval", "0", "--eval-episodes", "1", "--checkpoint-interval", "100", "--quiet", "--name", "run"]


@pytest.fixture(scope="session")
def trained_cli_run(tmp_path_factory):
    """The run root of one ``CLI_RUN`` (TensorBoard events, checkpoints, policy/), trained once."""
    from aquaml.cli import main
    root = tmp_path_factory.mktemp("trained") / "runs"
    assert main(CLI_RUN + ["--run-root", str(root)]) == 0
    return root


@pytest.fixture
def cli_runs(trained_cli_run, tmp_path):
    """A copy of ``trained_cli_run`` for one test to change."""
    import shutil
    root = tmp_path / "runs"
    shutil.copytree(trained_cli_run, root)
    return root


def resume_cli_run(root, steps, *extra, **changed):
    """``CLI_RUN`` resumed in ``root`` up to ``steps``, with the flags in ``changed`` (``hidden="32,32"``
    for ``--hidden 32,32``) given other values; ``main``'s return code."""
    from aquaml.cli import main
    argv = list(CLI_RUN)
    for flag, value in {"steps": steps, **changed}.items():
        argv[argv.index("--" + flag.replace("_", "-")) + 1] = str(value)
    return main(argv + ["--run-root", str(root), "--resume", *extra])


@pytest.fixture
def run_root(tmp_path):
    """A fresh directory for runs/ (tests never write into the working tree)."""
    return str(tmp_path / "runs")


def pytest_configure(config):
    np.set_printoptions(precision=5, suppress=True)


@pytest.fixture
def nats_server():
    """A real nats-server on a free loopback port, stopped after the test."""
    from remote_servers import NatsServer
    server = NatsServer()
    yield server
    server.stop()
