"""NATS environments against a real nats-server: aquaml's protocol, gym-nats compatibility, failures.

Every test that talks NATS starts nats-server on a free loopback port (the ``nats_server``
fixture) and the far sides as real processes (``aquaml serve-nats``, examples/gym_nats_ring.py).
"""
import asyncio
import copy
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time

import gymnasium as gym
import nats
import numpy as np
import pytest

from remote_envs import ALL_SPACES, AllSpacesEnv, DiscreteAllSpacesEnv
from remote_servers import ROOT, NatsServer, Process, gym_nats_ring, serve_nats

from aquaml.data import DataInfo
from aquaml.envs.nats_env import NatsEnv, _b64, _b64_floats
from aquaml.envs.nats_link import NatsOptions, RemoteEnvError, RemoteEnvTimeout
from aquaml.envs.wire import EnvCodec, Frame, Kind, WireError, frame


# --- the binary codec, without a network ----------------------------------------------------------
def test_frames_round_trip_every_dtype_for_several_environments():
    codec = EnvCodec(ALL_SPACES, DataInfo("action", (2,), np.float32))
    rng = np.random.default_rng(0)
    k = 5
    obs = {n: rng.integers(0, 2, (k,) + ALL_SPACES.shape(n)).astype(ALL_SPACES.dtype(n)) for n in ALL_SPACES.names}
    slots = np.array([4, 0, 7, 2, 9], np.uint32)
    mask = np.array([0, 1, 0, 0, 1], bool)
    reset_obs = {n: (v[mask] + 1).astype(v.dtype) for n, v in obs.items()}
    data = codec.step_reply(slots, obs, np.arange(k) * 0.5, [0, 1, 0, 0, 0], [0, 0, 0, 0, 1], reset_obs, mask,
                            {1: {"x": float("nan")}}, {4: {"bonus": 2.0}})
    batch = codec.read_step_reply(Frame(data))
    for n in ALL_SPACES.names:
        assert batch.obs[n].dtype == ALL_SPACES.dtype(n) and np.array_equal(batch.obs[n], obs[n])
        assert np.array_equal(batch.reset_obs[n], reset_obs[n])
    assert batch.reward.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert batch.terminated.tolist() == [False, True, False, False, False]
    assert batch.truncated.tolist() == [False, False, False, False, True]
    assert batch.reset_rows.tolist() == [-1, 0, -1, -1, 1]
    assert batch.infos == {1: {"x": None}} and batch.rewards == {4: {"bonus": 2.0}}
    actions = {"action": rng.normal(size=(k, 2)).astype(np.float32)}
    assert np.array_equal(codec.read_step_request(Frame(codec.step_request(slots, actions)))["action"],
                          actions["action"])
    assert EnvCodec.read_reset_request(Frame(EnvCodec.reset_request(slots[:3], [None, 7, -2]))) == [None, 7, -2]


def test_a_one_environment_step_reply_has_the_general_layout_and_reads_the_same_both_ways():
    codec = EnvCodec(ALL_SPACES, DataInfo("action", (2,), np.float32))
    rng = np.random.default_rng(1)
    obs = {n: rng.integers(0, 2, (1,) + ALL_SPACES.shape(n)).astype(ALL_SPACES.dtype(n)) for n in ALL_SPACES.names}
    reset_obs = {n: (v + 1).astype(v.dtype) for n, v in obs.items()}
    slots = np.array([3], np.uint32)
    data = codec.step_reply(slots, obs, np.array([-1.25]), [True], [False], reset_obs, np.array([True]),
                            {0: {"x": 1}}, {0: {"bonus": 2.0}})
    columns = lambda cols: [np.ascontiguousarray(cols[n], ALL_SPACES.dtype(n)).tobytes() for n in ALL_SPACES.names]
    expected = frame(Kind.STEP_REPLY, slots, columns(obs) + [np.array([-1.25], "<f8").tobytes(), bytes([1, 0, 1])]
                     + columns(reset_obs), {"info": {"0": {"x": 1}}, "reward": {"0": {"bonus": 2.0}}})
    assert data == expected
    batch = codec.read_step_reply(Frame(data))
    one_obs, reward, terminated, truncated, one_reset, info, components = codec.read_one_step_reply(Frame(data))
    assert (reward, terminated, truncated, info, components) == (-1.25, True, False, {"x": 1}, {"bonus": 2.0})
    assert (batch.reward.tolist(), batch.terminated.tolist(), batch.truncated.tolist()) == ([-1.25], [True], [False])
    for n in ALL_SPACES.names:
        assert np.array_equal(one_obs[n], batch.obs[n][0]) and np.array_equal(one_reset[n], batch.reset_obs[n][0])
    plain = codec.step_reply(slots, obs, [0.5], [0], [0], None, np.array([False]), {}, {})
    assert codec.read_one_step_reply(Frame(plain))[1:] == (0.5, False, False, None, {}, None)
    with pytest.raises(WireError, match="too short"):
        codec.read_one_step_reply(Frame(plain[:-2]))


def test_malformed_frames_are_refused_with_the_reason():
    codec = EnvCodec(ALL_SPACES, DataInfo("action", (2,), np.float32))
    good = codec.step_request(np.array([0], np.uint32), {"action": np.zeros((1, 2), np.float32)})
    with pytest.raises(WireError, match="not an aquaml frame"):
        Frame(b"XX" + good[2:])
    with pytest.raises(WireError, match="version 9"):
        Frame(good[:2] + bytes([9]) + good[3:])
    with pytest.raises(WireError, match="unknown frame kind 77"):
        Frame(good[:3] + bytes([77]) + good[4:])
    with pytest.raises(WireError, match="disagree on the DataInfo"):
        codec.read_step_request(Frame(good + b"\0\0\0\0"))
    with pytest.raises(WireError, match="too short"):
        codec.read_step_request(Frame(good[:-4]))
    with pytest.raises(WireError, match="shorter than the 12-byte header"):
        Frame(b"AQ")
    assert Frame(frame(Kind.CONTROL, meta={"inf": float("inf")})).meta == {"inf": None}


def test_gym_nats_encoding_is_base64_of_raw_float64():
    # the vector and its encoding from gym-nats' own tests (tests/test_utils.py)
    values = np.array([1, 3, -1000, 3.211])
    assert _b64(values) == b"AAAAAAAA8D8AAAAAAAAIQAAAAAAAQI/A46WbxCCwCUA="
    assert np.array_equal(_b64_floats(b"AAAAAAAA8D8AAAAAAAAIQAAAAAAAQI/A46WbxCCwCUA=", "rl.update"), values)
    with pytest.raises(RemoteEnvError, match="'rl.update' is not base64"):
        _b64_floats(b"not base64!", "rl.update")


# --- aquaml's protocol against serve-nats ----------------------------------------------------------
def _actions(env, rng):
    if env.action_info.meta("action").get("n"):
        return {"action": np.array(rng.integers(0, 3))}
    return {"action": rng.uniform(-1, 1, 2).astype(np.float32)}


def _same_step(remote, local):
    assert remote.obs.keys() == local.obs.keys()
    for n in ALL_SPACES.names:
        assert remote.obs[n].dtype == ALL_SPACES.dtype(n) and np.array_equal(remote.obs[n], local.obs[n]), n
    assert remote.reward == local.reward
    assert (remote.terminated, remote.truncated) == (local.terminated, local.truncated)
    assert remote.info == {**local.info, "limit": None}  # strict JSON: infinity travels as null


@pytest.mark.parametrize("cls", [AllSpacesEnv, DiscreteAllSpacesEnv])
def test_every_space_type_round_trips_through_serve_nats(nats_server, cls):
    server = serve_nats(f"remote_envs:{cls.__name__}", nats_server.url, "spaces")
    try:
        remote, local = NatsEnv(nats_server.url, "spaces"), cls()
        assert remote.obs_info == ALL_SPACES and remote.action_info == local.action_info
        rng = np.random.default_rng(1)
        for seed in (3, 4):  # odd seeds terminate at step 7, even ones truncate at step 9
            obs = remote.reset(seed=seed)
            expected = local.reset(seed=seed)
            assert all(np.array_equal(obs[n], expected[n]) for n in ALL_SPACES.names)
            while True:
                action = _actions(remote, rng)
                got = remote.step(action)
                from aquaml.envs import normalize_step
                _same_step(got, normalize_step(local.step(action), "local"))
                if got.terminated or got.truncated:
                    break
        remote.close()
    finally:
        server.stop()


async def _count_frames(url, subject_prefix, kinds, stop):
    """Count STEP and RESET frames on ``subject_prefix.*`` until ``stop`` is set."""
    nc = await nats.connect(url)

    async def seen(msg):
        try:
            kinds.append(Frame(msg.data).kind)
        except WireError:
            pass
    await nc.subscribe(subject_prefix + ".*", cb=seen)
    await nc.flush()
    while not stop.is_set():
        await asyncio.sleep(0.02)
    await nc.close()


def test_one_step_frame_carries_every_copy_and_autoreset_needs_no_round_trip(nats_server):
    import threading
    server = serve_nats("remote_envs:AllSpacesEnv", nats_server.url, "batch")
    kinds, stop = [], threading.Event()
    spy = threading.Thread(target=asyncio.run, args=(_count_frames(nats_server.url, "batch", kinds, stop),))
    spy.start()
    time.sleep(0.5)
    try:
        original = NatsEnv(nats_server.url, "batch")
        copies = [copy.deepcopy(original) for _ in range(5)]
        local = [AllSpacesEnv() for _ in range(5)]
        for i, (env, ref) in enumerate(zip(copies, local)):
            env.reset(seed=i)
            ref.reset(seed=i)
        time.sleep(0.3)
        before = list(kinds)
        rng = np.random.default_rng(0)
        from aquaml.envs import normalize_step
        for _ in range(12):  # crosses the episode ends at steps 7 and 9
            actions = [_actions(e, rng) for e in copies]
            for env, action in zip(copies, actions):
                env.send_step(action)
            for env, ref, action in zip(copies, local, actions):
                got = env.receive_step()
                _same_step(got, normalize_step(ref.step(action), "local"))
                if got.terminated or got.truncated:
                    first = env.reset()  # the server reset it already: the observation came with the step
                    assert all(np.array_equal(first[n], v) for n, v in ref.reset(seed=0).items())
        time.sleep(0.3)
        during = [k for k in kinds[len(before):] if k in (Kind.STEP, Kind.RESET)]
        assert during == [Kind.STEP] * 12, during
    finally:
        stop.set()
        spy.join(10)
        server.stop()


def test_copies_connect_lazily_and_a_natsenv_cannot_be_pickled(nats_server):
    server = serve_nats("Pendulum-v1", nats_server.url, "lazy")
    try:
        original = NatsEnv(nats_server.url, "lazy")
        twin = copy.deepcopy(original)
        assert twin._session is None and twin._slot is None and twin.obs_info == original.obs_info
        with pytest.raises(TypeError, match="cannot be pickled: its episode lives on the far side"):
            pickle.dumps(twin)
        with pytest.raises(RemoteEnvError, match=r"step\(\) before reset\(\)"):
            twin.step({"action": np.zeros(1, np.float32)})
        twin.reset(seed=0)
        assert twin._slot is not None
    finally:
        server.stop()


def _stats(url, subject):
    from aquaml.envs.nats_link import runner
    link = runner().link(NatsOptions(url=url))
    return Frame(link.sync_request(f"{subject}.stats", frame(Kind.CONTROL, meta={}), 5.0)).meta


CLIENT = """
import sys, time, numpy as np
from aquaml.envs.nats_env import NatsEnv
import copy
env = NatsEnv(sys.argv[1], "gone")
copies = [copy.deepcopy(env) for _ in range(3)]
for c in copies:
    c.reset(seed=1)
    c.step({"action": np.zeros(1, np.float32)})
print("mid-episode", flush=True)
time.sleep(600)
"""


def test_a_killed_client_leaves_no_instance_but_an_idle_one_keeps_its_session(nats_server):
    server = serve_nats("Pendulum-v1", nats_server.url, "gone", "--session-timeout", "2", "--heartbeat", "0.5")
    client = Process([sys.executable, "-c", CLIENT, nats_server.url])
    try:
        client.wait_for("mid-episode")
        time.sleep(4)  # twice the session timeout: the idle client's heartbeats keep it
        assert _stats(nats_server.url, "gone")["instances"] == 3
        client.stop(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _stats(nats_server.url, "gone")["instances"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _stats(nats_server.url, "gone") == {"sessions": 0, "instances": 0, "steps": 3}
        assert re.search(r"ended \(client gone: nothing heard for 2 s\); 3 instance\(s\) closed", server.output)
    finally:
        client.stop(signal.SIGKILL)
        server.stop()


def test_a_far_side_exception_reaches_the_learner_within_the_timeout(nats_server):
    server = serve_nats("remote_envs:FailingEnv", nats_server.url, "fails")
    try:
        env = NatsEnv(nats_server.url, "fails", timeout=30)
        env.reset(seed=0)
        env.step({"action": np.zeros(2, np.float32)})
        env.step({"action": np.zeros(2, np.float32)})
        start = time.monotonic()
        with pytest.raises(RemoteEnvError) as info:
            env.step({"action": np.zeros(2, np.float32)})
        assert time.monotonic() - start < 5
        text = str(info.value)
        assert "reported ValueError: deliberate far-side failure at step 3" in text
        assert "environment slot 0" in text and "far-side traceback" in text and "remote_envs.py" in text
        env.reset(seed=0)  # the server goes on serving
    finally:
        server.stop()


def test_no_answer_is_a_timeout_naming_the_subject_and_nobody_listening_says_so(nats_server):
    server = serve_nats("remote_envs:SlowEnv", nats_server.url, "slow")
    try:
        env = NatsEnv(nats_server.url, "slow", timeout=1.0)
        env.reset(seed=0)
        start = time.monotonic()
        with pytest.raises(RemoteEnvTimeout, match=r"no reply on NATS subject 'slow\.[0-9a-f]{16}' within 1 s"):
            env.step({"action": np.zeros(2, np.float32)})
        assert time.monotonic() - start < 3
    finally:
        server.stop()
    start = time.monotonic()
    with pytest.raises(RemoteEnvError, match="nobody answers on NATS subject 'nobody.spec'"):
        NatsEnv(nats_server.url, "nobody", timeout=10)
    assert time.monotonic() - start < 3


def test_both_sides_reconnect_when_the_nats_server_restarts():
    nats_server = NatsServer()
    server = serve_nats("Pendulum-v1", nats_server.url, "again")
    try:
        env = NatsEnv(nats_server.url, "again", timeout=15)
        env.reset(seed=0)
        before = env.step({"action": np.zeros(1, np.float32)})
        nats_server.stop()
        time.sleep(1.0)
        nats_server = NatsServer(port=nats_server.port)
        after = env.step({"action": np.zeros(1, np.float32)})  # the same session, the same episode
        local = gym.make("Pendulum-v1")
        local.reset(seed=0)
        local.step(np.zeros(1, np.float32))
        assert np.allclose(after.obs["obs"], local.step(np.zeros(1, np.float32))[0])
        assert not np.allclose(after.obs["obs"], before.obs["obs"])
    finally:
        server.stop()
        nats_server.stop()


def test_an_unreachable_server_is_a_connection_error_after_the_connect_timeout():
    from remote_servers import free_port
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=r"cannot reach the NATS server at nats://127.0.0.1:\d+ within 1 s"):
        NatsEnv(f"nats://127.0.0.1:{free_port()}", "x", connect_timeout=1.0)
    assert time.monotonic() - start < 4


def _nkey_config(tmp_path):
    import nkeys
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    (tmp_path / "user.nk").write_bytes(seed + b"\n")
    (tmp_path / "server.conf").write_text(f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}\n')
    return str(tmp_path / "server.conf"), str(tmp_path / "user.nk")


def _b64url(data):
    import base64
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(claims, signer):
    """A NATS JWT (decentralised authentication): header.claims.signature, signed by an NKey."""
    import base64
    import hashlib
    header = _b64url(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    claims = {**claims, "iat": int(time.time())}
    claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()).decode()
    body = _b64url(json.dumps(claims).encode())
    return f"{header}.{body}.{_b64url(signer.sign(f'{header}.{body}'.encode()))}"


def _creds_config(tmp_path):
    """An operator, an account and a user: the server's config and the user's .creds file."""
    import nkeys

    def keypair(prefix):
        seed = nkeys.encode_seed(os.urandom(32), prefix)
        pair = nkeys.from_seed(bytearray(seed))
        return seed.decode(), pair, pair.public_key.decode()

    _, operator, operator_id = keypair(nkeys.PREFIX_BYTE_OPERATOR)
    _, account, account_id = keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    user_seed, _, user_id = keypair(nkeys.PREFIX_BYTE_USER)
    limits = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True, "conn": -1}
    operator_jwt = _jwt({"iss": operator_id, "sub": operator_id, "name": "op",
                         "nats": {"type": "operator", "version": 2}}, operator)
    account_jwt = _jwt({"iss": operator_id, "sub": account_id, "name": "lab",
                        "nats": {"type": "account", "version": 2, "limits": limits}}, operator)
    user_jwt = _jwt({"iss": account_id, "sub": user_id, "name": "learner",
                     "nats": {"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1,
                              "payload": -1}}, account)
    (tmp_path / "server.conf").write_text(f"operator: {operator_jwt}\nresolver: MEMORY\n"
                                          f"resolver_preload: {{ {account_id}: {account_jwt} }}\n")
    (tmp_path / "user.creds").write_text(f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
                                         f"-----BEGIN USER NKEY SEED-----\n{user_seed}\n------END USER NKEY SEED------\n")
    return str(tmp_path / "server.conf"), str(tmp_path / "user.creds")


@pytest.mark.parametrize("method", ["user", "token", "nkey", "credentials"])
def test_authentication_as_the_server_is_configured(method, tmp_path):
    if method == "user":
        server, good, bad = NatsServer("--user", "learner", "--pass", "s3cret-pass"), \
            {"user": "learner", "password": "s3cret-pass"}, {"user": "learner", "password": "wrong"}
    elif method == "token":
        server, good, bad = NatsServer("--auth", "t0ken-for-tests"), {"token": "t0ken-for-tests"}, {"token": "nope"}
    else:
        make = _nkey_config if method == "nkey" else _creds_config
        key = "nkey_seed" if method == "nkey" else "credentials"
        config, secret = make(tmp_path)
        other = tmp_path / "other"
        other.mkdir()
        server, good, bad = NatsServer("-c", config), {key: secret}, {key: make(other)[1]}  # another operator's
    try:
        far = {"user": ["--user", "learner", "--password-file", str(tmp_path / "pw")],
               "token": ["--token-file", str(tmp_path / "tk")], "nkey": ["--nkey-seed", good.get("nkey_seed", "")],
               "credentials": ["--credentials", good.get("credentials", "")]}
        (tmp_path / "pw").write_text("s3cret-pass\n")
        (tmp_path / "tk").write_text("t0ken-for-tests\n")
        served = serve_nats("Pendulum-v1", server.url, "auth", *far[method])
        try:
            env = NatsEnv(server.url, "auth", **good)
            assert env.reset(seed=0)["obs"].shape == (3,)
            start = time.monotonic()
            with pytest.raises(PermissionError, match="refused the credentials"):
                NatsEnv(server.url, "auth", **bad)
            assert time.monotonic() - start < 4
        finally:
            served.stop()
    finally:
        server.stop()


# --- gym-nats compatibility against the example system ------------------------------------------------
async def _spy(url, seen, stop):
    nc = await nats.connect(url)

    async def record(msg):
        seen.append((msg.subject, msg.data))
    await nc.subscribe(">", cb=record)
    await nc.flush()
    while not stop.is_set():
        await asyncio.sleep(0.02)
    await nc.close()


def test_gym_nats_mode_uses_exactly_its_subjects_order_and_encoding(nats_server):
    import threading
    ring = gym_nats_ring(nats_server.url)
    seen, stop = [], threading.Event()
    spy = threading.Thread(target=asyncio.run, args=(_spy(nats_server.url, seen, stop),))
    spy.start()
    time.sleep(0.5)
    try:
        env = NatsEnv(nats_server.url, protocol="gym-nats", max_episode_steps=30)
        assert env.obs_info == DataInfo("obs", (9,), np.float32)
        assert env.action_info.meta("action") == {"n": 3, "start": 0}
        obs = env.reset()
        assert obs["obs"].sum() == 1.0 and obs["obs"][4] == 0.0  # one-hot, not on the goal cell
        result = env.step({"action": np.array(2)})
        time.sleep(0.3)
        requests = [(s, d) for s, d in seen if not s.startswith("_INBOX")]
        assert [s for s, _ in requests] == ["rl.update", "rl.actions", "rl.reset", "rl.update",
                                            "rl.action", "rl.reward", "rl.update", "r.done"]
        assert requests[4][1] == b"AAAAAAAAAEA="  # base64 of float64 [2.0]
        assert all(d == b"" for s, d in requests if s != "rl.action")
        replies = {s: d for s, d in seen if s.startswith("_INBOX")}
        assert b"" in replies.values()  # rl.action and rl.reset answer an empty message
        expected_reward = 1.0 if result.obs["obs"][4] == 1.0 else -0.1
        assert result.reward == {"total_reward": pytest.approx(expected_reward)}
        assert result.terminated == (result.obs["obs"][4] == 1.0)
    finally:
        stop.set()
        spy.join(10)
        ring.stop()


def test_gym_nats_system_is_one_environment(nats_server):
    from aquaml import PPO, PPOParameters, RLTaskStarter
    from helpers import MLPActor, MLPV
    ring = gym_nats_ring(nats_server.url)
    try:
        url = f"{nats_server.url}/?protocol=gym-nats&max_episode_steps=30"
        with pytest.raises(ValueError, match="evaluation needs its own: pass eval_env"):
            RLTaskStarter(url, {"actor": MLPActor, "critic": MLPV}, PPO, PPOParameters(total_steps=64))
        with pytest.raises(ValueError, match="allows 1 copy per task, this task steps 2"):
            RLTaskStarter(url, {"actor": MLPActor, "critic": MLPV}, PPO,
                          PPOParameters(total_steps=64, envs_per_worker=2), eval_env=url)
        first, second = NatsEnv(nats_server.url, protocol="gym-nats"), NatsEnv(nats_server.url, protocol="gym-nats")
        first.reset()
        with pytest.raises(RemoteEnvError, match="in an episode of another NatsEnv of this process"):
            second.reset()
    finally:
        ring.stop()


def test_ppo_learns_the_gym_nats_example_system_unchanged(nats_server, run_root):
    """The ring's walker must learn to walk the short way to the goal: random play returns about
    -0.8 in 30 steps, always walking one way 0.65, the shortest walks 0.85."""
    train = gym_nats_ring(nats_server.url, "--seed", "1")
    evaluation = gym_nats_ring(nats_server.url, "--prefix", "eval", "--seed", "2")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "aquaml.cli", "train", "--algo", "ppo", "--steps", "4096", "--hidden", "32,32",
             "--env", f"{nats_server.url}/?protocol=gym-nats&max_episode_steps=30",
             "--eval-env", f"{nats_server.url}/eval?protocol=gym-nats&max_episode_steps=30",
             "--set", "rollout_steps=512", "--eval-episodes", "10", "--eval-interval", "0", "--seed", "0",
             "--run-root", run_root, "--name", "ring", "--no-tensorboard"],
            capture_output=True, text=True, timeout=600, cwd=ROOT, env=_env())
        assert proc.returncode == 0, proc.stderr[-3000:]
        import csv
        with open(os.path.join(run_root, "ring", "progress.csv")) as f:
            final = float(list(csv.DictReader(f))[-1]["eval/return_mean"])
        assert final > 0.7, proc.stdout[-2000:]
    finally:
        train.stop()
        evaluation.stop()


def _env():
    from remote_servers import child_env
    return child_env()


# --- learning through serve-nats --------------------------------------------------------------------
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")


def _learn(url, ranks, steps, run_root, *extra):
    cmd = [sys.executable, os.path.join(ROOT, "tests", "scripts", "remote_learning.py"), "sac", url,
           "--steps", str(steps), "--run-root", run_root, *extra]
    if ranks > 1:
        cmd = [MPIEXEC, "-n", str(ranks)] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("ranks,steps", [(1, 8000), (3, 6000)])
def test_sac_learns_pendulum_through_nats_env(nats_server, run_root, ranks, steps):
    """Tutorial 1's SAC (64 units) on Pendulum-v1 served by serve-nats: random play scores about
    -1200, a policy that swings up and holds above -400."""
    server = serve_nats("Pendulum-v1", nats_server.url, "pendulum", "--quiet")
    try:
        proc = _learn(f"{nats_server.url}/pendulum", ranks, steps, run_root)
        final = float(re.search(r"final evaluation return: (-?[\d.]+)", proc.stdout).group(1))
        assert final > -400, proc.stdout[-2000:]
        assert _stats(nats_server.url, "pendulum")["instances"] == 0  # every copy closed at exit
    finally:
        server.stop()


def test_a_resumed_run_reconnects_and_says_its_episodes_restart(nats_server, run_root):
    server = serve_nats("Pendulum-v1", nats_server.url, "resume", "--quiet")
    try:
        url = f"{nats_server.url}/resume"
        first = _learn(url, 1, 400, run_root, "--name", "again", "--checkpoint-interval", "200")
        assert "NatsEnv cannot be pickled" in first.stderr and "a resumed run restarts its episodes" in first.stderr
        second = _learn(url, 1, 600, run_root, "--name", "again", "--resume", "--checkpoint-interval", "200")
        assert "resuming from step 400" in second.stdout
        assert "they reconnect or restart and begin new episodes" in second.stderr
        assert "final evaluation return" in second.stdout
    finally:
        server.stop()
