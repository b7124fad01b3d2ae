"""Shared test set-up: quiet TensorFlow, one thread per test process, small helper environments."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from aquaml.parallel.devices import limit_tf_threads  # noqa: E402

limit_tf_threads(1, 1)


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
