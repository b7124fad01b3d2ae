"""WebSocket environments: aquaml serve speaks Gymie's API, GymieEnv trains on it, hostile input.

The server is always a real ``aquaml serve`` process on a free loopback port, the clients real
WebSocket connections (``websockets``), as an existing Gymie client would open them.
"""
import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import gymnasium as gym
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from remote_servers import ROOT, Process, child_env, free_port, serve_gymie

from aquaml.envs.gymie_env import GymieEnv
from aquaml.envs.nats_link import RemoteEnvError


def _strict(text):
    def refuse(name):
        raise ValueError(f"{name} is not RFC 8259 JSON")
    return json.loads(text, parse_constant=refuse)


def _call(ws, method, **params):
    ws.send(json.dumps({"method": method, "params": params}))
    return ws.recv(timeout=10)


def _closed_with(ws, message):
    """Send ``message`` (str or bytes) and return the close code and reason the server answers."""
    ws.send(message)
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=10)
    return info.value.rcvd.code, info.value.rcvd.reason


def _stats(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as reply:
        return json.loads(reply.read())


@pytest.fixture
def gymie_server():
    server, port = serve_gymie("--max-message-bytes", "65536", "--max-instances-per-connection", "4")
    yield port
    server.stop()


def test_gymie_api_message_for_message(gymie_server):
    port = gymie_server
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as reply:
        assert reply.read() == b"Gymie is running...\n"
    with connect(f"ws://127.0.0.1:{port}/gym", legacy=True) as ws:  # an existing Gymie client: no subprotocol
        instance = _call(ws, "make", env_id="CartPole-v1")
        assert re.fullmatch(r"[0-9a-f]{32}", instance)  # the bare id, as Gymie sends it
        state = _strict(_call(ws, "reset", instance_id=instance))
        assert len(state) == 4 and all(isinstance(v, float) for v in state)
        obs, reward, done, info = _strict(_call(ws, "step", instance_id=instance, action=1))
        assert len(obs) == 4 and reward == 1.0 and done is False and info == {}
        space = _strict(_call(ws, "observation_space", instance_id=instance))
        high = gym.make("CartPole-v1").observation_space.high
        assert space["name"] == "Box" and space["shape"] == [4]
        assert space["high"] == [float(h) if np.isfinite(h) else None for h in high]  # Infinity -> null
        assert _strict(_call(ws, "action_space", instance_id=instance)) == {"name": "Discrete", "n": 2}
        assert _strict(_call(ws, "action_sample", instance_id=instance)) in (0, 1)
        assert _call(ws, "close", instance_id=instance) == "true"
        assert _closed_with(ws, json.dumps({"method": "step", "params": {"instance_id": instance, "action": 1}})) == \
            (1007, f"Instance `{instance}` not found")
    with connect(f"ws://127.0.0.1:{port}/gym", legacy=True) as ws:
        instance = _call(ws, "make", env_id="MountainCarContinuous-v0", seed=3)
        sample = _strict(_call(ws, "action_sample", instance_id=instance))
        assert isinstance(sample, list) and len(sample) == 1
        assert _strict(_call(ws, "action_space", instance_id=instance))["low"] == [-1.0]


def test_four_part_steps_carry_time_limits_and_the_extension_splits_them(gymie_server):
    url = f"ws://127.0.0.1:{gymie_server}/gym"
    classic, extended = GymieEnv(url, "Pendulum-v1", extension=False), GymieEnv(url, "Pendulum-v1")
    assert not classic.extension and extended.extension
    with pytest.warns(UserWarning, match="this Gymie server takes no reset seed"):
        classic.reset(seed=5)
    expected = gym.make("Pendulum-v1").reset(seed=5)[0]
    assert np.allclose(extended.reset(seed=5)["obs"], expected)  # seeded resets are part of the extension
    for env in (classic, extended):
        for t in range(200):
            result = env.step({"action": np.array([0.3], np.float32)})
            assert not result.terminated and result.truncated == (t == 199)
        env.close()
    with connect(url, legacy=True) as ws:  # what the classic client saw at the limit
        instance = _call(ws, "make", env_id="Pendulum-v1")
        _call(ws, "reset", instance_id=instance)
        for _ in range(200):
            reply = _strict(_call(ws, "step", instance_id=instance, action=[0.0]))
        assert reply[2] is True and reply[3] == {"TimeLimit.truncated": True}


def test_hooks_multidiscrete_spaces_and_a_far_side_error(tmp_path):
    port = free_port()
    server = Process([sys.executable, os.path.join(ROOT, "tests", "scripts", "gymie_hooked_server.py"), str(port)])
    server.wait_for("serving")
    try:
        url = f"ws://127.0.0.1:{port}/gym"
        env = GymieEnv(url, "Lattice-v0")
        assert env.obs_info.shape("obs") == (3,) and env.obs_info.meta("obs") == {"nvec": [3, 4, 5]}
        env.reset()
        result = env.step({"action": np.array(1)})
        assert result.obs["obs"].tolist() == [1, 1, 1] and result.info == {"hooked": True}
        with connect(url, legacy=True) as ws:
            instance = _call(ws, "make", env_id="LatticeMD-v0")
            assert _strict(_call(ws, "action_space", instance_id=instance)) == \
                {"name": "MultiDiscrete", "nvec": [2, 3], "shape": [2]}
            _call(ws, "reset", instance_id=instance)
            assert _strict(_call(ws, "step", instance_id=instance, action=[1, 2]))[0] == [1, 1, 3]
            assert _closed_with(ws, json.dumps({"method": "step", "params": {"instance_id": instance,
                                                                            "action": [1, 3]}})) == \
                (1007, "Action `[1, 3]` is wrong")
        failing = GymieEnv(url, "Failing-v0", timeout=30)
        failing.reset()
        failing.step({"action": np.array(0)})
        failing.step({"action": np.array(0)})
        start = time.monotonic()
        with pytest.raises(RemoteEnvError, match="closed the connection during 'step' with code 1007: Unknown error: "
                                                 "RuntimeError: deliberate failure in the served environment"):
            failing.step({"action": np.array(0)})
        assert time.monotonic() - start < 5
        with pytest.raises(RemoteEnvError, match="code 1007: Environment `CartPole-v1` not found"):
            GymieEnv(url, "CartPole-v1")  # this server's get_env knows only its own ids
    finally:
        server.stop()


def _hostile_messages(instance_holder):
    """(category, messages to send, close code) for each kind of malformed or hostile input."""
    return [
        ("bad JSON", ["{\"method\": \"make\", "], 1003),
        ("not an object", ["[1, 2, 3]"], 1003),
        ("no params", [json.dumps({"method": "make"})], 1003),
        ("NaN literal", ['{"method": "make", "params": {"env_id": NaN}}'], 1003),
        ("deep nesting", ["[" * 20_000 + "]" * 20_000], 1003),
        ("not UTF-8", [b"\xff\xfe{\"method\"}"], 1003),
        ("unknown method", [json.dumps({"method": "__import__", "params": {}})], 1007),
        ("params not an object", [json.dumps({"method": "make", "params": [1]})], 1007),
        ("extra parameter", [json.dumps({"method": "make", "params": {"env_id": "CartPole-v1", "x": 1}})], 1007),
        ("env id not a string", [json.dumps({"method": "make", "params": {"env_id": 5}})], 1007),
        ("module import", [json.dumps({"method": "make", "params": {"env_id": "os:system"}})], 1007),
        ("unknown instance", [json.dumps({"method": "step", "params": {"instance_id": "f" * 32, "action": 0}})], 1007),
        ("wrong action type", [json.dumps({"method": "make", "params": {"env_id": "CartPole-v1"}}),
                               {"method": "step", "params": {"action": "left"}}], 1007),
        ("action out of range", [json.dumps({"method": "make", "params": {"env_id": "CartPole-v1"}}),
                                 {"method": "step", "params": {"action": 7}}], 1007),
        ("huge payload", ["[" + "1," * 60_000 + "1]"], 1009),
        ("too many instances", [json.dumps({"method": "make", "params": {"env_id": "CartPole-v1"}})] * 5, 1008),
    ]


def _send_hostile(url, messages):
    with connect(url, legacy=True, max_size=None) as ws:
        instance = None
        for message in messages[:-1]:
            ws.send(message if not isinstance(message, dict) else json.dumps(message))
            instance = ws.recv(timeout=10)
        last = messages[-1]
        if isinstance(last, dict):  # a step on the instance made just before
            last = json.dumps({**last, "params": {**last["params"], "instance_id": instance}})
        return _closed_with(ws, last)


def test_a_thousand_hostile_messages_each_close_their_connection_and_the_server_serves_on(gymie_server):
    url = f"ws://127.0.0.1:{gymie_server}/gym"
    categories = _hostile_messages(None)
    counts = {}
    for i in range(1000):
        name, messages, code = categories[i % len(categories)]
        got, reason = _send_hostile(url, messages)
        assert got == code, f"{name}: closed with {got} {reason!r}, expected {code}"
        counts[name] = counts.get(name, 0) + 1
    assert sum(counts.values()) == 1000 and len(counts) == len(categories)
    env = GymieEnv(url, "CartPole-v1")  # a well-formed client afterwards
    env.reset(seed=0)
    assert env.step({"action": np.array(1)}).obs["obs"].shape == (4,)
    assert _stats(gymie_server) == {"connections": 1, "instances": 1}


def test_tokens_and_binding(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("a-long-shared-secret\n")
    server, port = serve_gymie("--token-file", str(token_file))
    try:
        url = f"ws://127.0.0.1:{port}/gym"
        assert GymieEnv(url, "CartPole-v1", token="a-long-shared-secret").reset()["obs"].shape == (4,)
        assert GymieEnv(url + "?token=a-long-shared-secret", "CartPole-v1").reset()["obs"].shape == (4,)
        for query in ("", "?token=wrong-secret-here"):
            with connect(url + query, legacy=True) as ws:  # closed before any message is read
                with pytest.raises(ConnectionClosed) as info:
                    ws.recv(timeout=10)
                assert (info.value.rcvd.code, info.value.rcvd.reason) == (1008, "Unauthorized: missing or wrong token")
        with pytest.raises(urllib.error.HTTPError, match="401"):
            _stats(port)
    finally:
        server.stop()
    proc = subprocess.run([sys.executable, "-m", "aquaml.cli", "serve", "--host", "0.0.0.0", "--port", "0"],
                          capture_output=True, text=True, timeout=60, env=child_env())
    assert proc.returncode == 2 and "binding 0.0.0.0 (not a loopback address)" in proc.stderr


CLIENT = """
import copy, sys, numpy as np
from aquaml.envs.gymie_env import GymieEnv
env = GymieEnv(sys.argv[1], "CartPole-v1")
copies = [copy.deepcopy(env) for _ in range(3)]
for c in copies:
    c.reset(seed=1)
    c.step({"action": np.array(1)})
print("mid-episode", flush=True)
import time; time.sleep(600)
"""


def test_a_killed_client_leaves_no_instance(gymie_server):
    client = Process([sys.executable, "-c", CLIENT, f"ws://127.0.0.1:{gymie_server}/gym"])
    try:
        client.wait_for("mid-episode")
        assert _stats(gymie_server) == {"connections": 1, "instances": 3}
        client.stop(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _stats(gymie_server)["instances"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _stats(gymie_server) == {"connections": 0, "instances": 0}
    finally:
        client.stop(signal.SIGKILL)


def test_copies_share_one_connection_and_overlap_their_steps(gymie_server):
    url = f"ws://127.0.0.1:{gymie_server}/gym"
    original = GymieEnv(url, "CartPole-v1")
    copies = [copy.deepcopy(original) for _ in range(4)]
    local = [gym.make("CartPole-v1") for _ in range(4)]
    for i, (env, ref) in enumerate(zip(copies, local)):
        assert np.allclose(env.reset(seed=i)["obs"], ref.reset(seed=i)[0])
    assert _stats(gymie_server) == {"connections": 1, "instances": 4}
    for t in range(30):
        actions = [(t + i) % 2 for i in range(4)]
        for env, a in zip(copies, actions):
            env.send_step({"action": np.array(a)})
        for env, ref, a in zip(copies, local, actions):
            got, want = env.receive_step(), ref.step(a)
            assert np.allclose(got.obs["obs"], want[0]) and got.terminated == want[2]
            if got.terminated or got.truncated:
                env.reset(seed=100 + t)
                ref.reset(seed=100 + t)


# --- learning through aquaml serve --------------------------------------------------------------------
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")


def _learn(gymie_port, ranks, steps, run_root):
    url = f"ws://127.0.0.1:{gymie_port}/gym?env=CartPole-v1"
    cmd = [sys.executable, os.path.join(ROOT, "tests", "scripts", "remote_learning.py"), "ppo", url,
           "--steps", str(steps), "--run-root", run_root]
    if ranks > 1:
        cmd = [MPIEXEC, "-n", str(ranks)] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=child_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return float(re.search(r"final evaluation return: (-?[\d.]+)", proc.stdout).group(1)), proc


@pytest.mark.parametrize("ranks,steps", [(1, 24_000), (3, 16_000)])
def test_ppo_learns_cartpole_through_gymie_env(run_root, ranks, steps):
    """Tutorial 3's PPO, 8 GymieEnv copies per worker on one connection each: random play scores
    about 22, a solved CartPole at least 195."""
    server, port = serve_gymie("--quiet")
    try:
        final, proc = _learn(port, ranks, steps, run_root)
        assert final >= 195, proc.stdout[-2000:]
        assert _stats(port)["instances"] == 0  # every worker's and the evaluation's copies closed
    finally:
        server.stop()


def test_environment_urls_are_checked_before_connecting(tmp_path):
    from aquaml.envs.urls import env_from_url, is_env_url, url_name
    assert is_env_url("ws://h:1/gym?env=CartPole-v1") and is_env_url("nats://h:4222/s") and not is_env_url("CartPole-v1")
    with pytest.raises(ValueError, match="needs env=ID"):
        env_from_url("ws://127.0.0.1:1/gym")
    with pytest.raises(ValueError, match=r"unknown parameter 'bogus'; accepted: connect_timeout, env, extension"):
        env_from_url("ws://127.0.0.1:1/gym?env=CartPole-v1&bogus=1")
    with pytest.raises(ValueError, match="timeout='soon' is not a float"):
        env_from_url("ws://127.0.0.1:1/gym?env=CartPole-v1&timeout=soon")
    with pytest.raises(FileNotFoundError, match="token_file: no such file"):
        env_from_url(f"ws://127.0.0.1:1/gym?env=CartPole-v1&token_file={tmp_path}/none")
    with pytest.raises(ValueError, match="not a boolean"):
        env_from_url("nats://127.0.0.1:1/s?autoreset=maybe")
    assert url_name("ws://127.0.0.1:5000/gym?env=CartPole-v1&token=x") == "ws-127.0.0.1-5000-CartPole-v1"
    assert url_name("nats://user:pw@host:4222/lab.arm") == "nats-host-4222-lab.arm"


PINGING_ECHO = """
import asyncio, sys
from websockets.asyncio.server import serve
async def echo(ws):
    async for message in ws:
        await ws.send(message)
async def main():
    # pings every 0.5 s, and closes a connection whose pong is 1.5 s late
    async with serve(echo, "127.0.0.1", int(sys.argv[1]), ping_interval=0.5, ping_timeout=1.5):
        print("answering on", flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


def test_an_idle_connection_answers_the_servers_pings_and_stays_open():
    """GymieEnv reads its replies in the calling thread; while nobody calls (a learner training),
    the keepalive thread must answer the server's pings, or the server closes the connection."""
    from aquaml.envs.gymie_env import KEEPALIVE_TICK, _Channel
    port = free_port()
    server = Process([sys.executable, "-c", PINGING_ECHO, str(port)])
    try:
        server.wait_for("answering on")
        channel = _Channel(f"ws://127.0.0.1:{port}", None, 5.0, 5.0, False)
        assert json.loads(channel.call("step", instance_id="a", action=1)) == \
            {"method": "step", "params": {"instance_id": "a", "action": 1}}
        time.sleep(3 * KEEPALIVE_TICK + 1.5)  # past the server's ping timeout several times over
        sent, received = channel.send("reset", {"instance_id": "b"}), channel.send("reset", {"instance_id": "c"})
        assert [json.loads(channel.receive(t, "reset"))["params"] for t in (sent, received)] == \
            [{"instance_id": "b"}, {"instance_id": "c"}]
        channel.close()
        with pytest.raises(RemoteEnvError, match="is closed"):
            channel.call("step", instance_id="a", action=1)
    finally:
        server.stop()


def test_a_silent_server_times_out_naming_the_method():
    """A reply that never comes raises RemoteEnvTimeout after ``timeout`` seconds, naming the call."""
    from aquaml.envs.gymie_env import _Channel
    from aquaml.envs.nats_link import RemoteEnvTimeout
    port = free_port()
    server = Process([sys.executable, "-c", PINGING_ECHO.replace("await ws.send(message)", "pass"), str(port)])
    try:
        server.wait_for("answering on")
        channel = _Channel(f"ws://127.0.0.1:{port}", None, 0.5, 5.0, False)
        start = time.monotonic()
        with pytest.raises(RemoteEnvTimeout, match=r"no reply to 'step' .* within 0.5 s"):
            channel.call("step", instance_id="a", action=1)
        assert 0.4 < time.monotonic() - start < 3
        channel.close()
    finally:
        server.stop()
    with pytest.raises(ConnectionError, match="cannot open a WebSocket"):
        _Channel(f"ws://127.0.0.1:{port}", None, 1.0, 1.0, False)


def test_fragmented_pipelined_and_unread_requests_are_answered_in_order(gymie_server):
    """Messages are answered as they arrive: a fragmented one once whole, tens of thousands sent
    ahead of their replies in order (the server stops reading while its replies are not read,
    and goes on when they are), and a text frame that is not UTF-8 closes with 1007 as
    websockets' reader closes it."""
    import asyncio
    import socket
    from websockets.asyncio.client import connect as connect_async

    url = f"ws://127.0.0.1:{gymie_server}/gym"
    methods = ["observation_space" if i % 3 == 0 else "action_space" for i in range(60_000)]

    async def pipelined():
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # unread replies fill the server's buffer
        sock.connect(("127.0.0.1", gymie_server))
        async with connect_async(url, sock=sock) as ws:
            await ws.send(['{"method": "make", ', '"params": {"env_id": ', '"CartPole-v1"}}'])  # three frames
            instance = await asyncio.wait_for(ws.recv(), 10)
            assert re.fullmatch(r"[0-9a-f]{32}", instance)

            async def send_all():
                for m in methods:
                    await ws.send(json.dumps({"method": m, "params": {"instance_id": instance}}))
            sender = asyncio.get_running_loop().create_task(send_all())
            await asyncio.sleep(1.0)  # replies pile up unread meanwhile
            names = [json.loads(await asyncio.wait_for(ws.recv(), 30))["name"] for _ in methods]
            await asyncio.wait_for(sender, 30)
            return names

    assert asyncio.run(pipelined()) == ["Box" if m == "observation_space" else "Discrete" for m in methods]
    with connect(url, legacy=True) as ws:
        ws.send(b'{"method": "\xff"}', text=True)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
        assert info.value.rcvd.code == 1007


def test_observations_become_json_with_non_finite_floats_as_null():
    """RFC 8259 has no NaN or Infinity: such entries go out as null, on the one-row fast path too."""
    from aquaml.envs.gymie_serve import _json_value
    assert _json_value(np.array([1.5, np.nan, -np.inf], np.float32)) == [1.5, None, None]
    assert _json_value(np.array([0.25, 2.0])) == [0.25, 2.0]
    assert _json_value(np.array([[1.0, np.nan]])) == [[1.0, None]]
    assert _json_value(np.array([3, 4], np.int64)) == [3, 4]
