"""An "existing system" that speaks gym-nats' protocol: a walker on a ring of cells, over NATS.

It knows nothing of aquaml. It answers gym-nats' six request subjects exactly as a system written
for gym-nats must (every array is base64 of raw float64 values):

    rl.update   -> the state: one-hot position of the walker on the ring, size N
    rl.reward   -> [reward of the last action]: +1 on reaching the goal cell, else -0.1
    rl.action   <- [a]: 0 stay, 1 step left, 2 step right; answers b''
    rl.reset    -> b''; the walker starts on a random cell other than the goal
    rl.actions  -> an array with one entry per action (3)
    r.done      -> [1.0] once the walker stands on the goal cell, else [0.0]

Train against it with aquaml (a real NATS server must run, e.g. nats-server -a 127.0.0.1):

    python examples/gym_nats_ring.py --url nats://127.0.0.1:4222 &
    python examples/gym_nats_ring.py --url nats://127.0.0.1:4222 --prefix eval &
    python -m aquaml.cli train --algo ppo --steps 6000 \\
        --env "nats://127.0.0.1:4222/?protocol=gym-nats&max_episode_steps=30" \\
        --eval-env "nats://127.0.0.1:4222/eval?protocol=gym-nats&max_episode_steps=30"

``--prefix P`` answers on ``P.rl.update``... instead, so one NATS server carries several systems.
"""
import argparse
import asyncio
import base64
import signal

import nats
import numpy as np


def encode(values) -> bytes:
    """gym-nats' encoding: base64 of the raw float64 bytes."""
    return base64.b64encode(np.asarray(values, dtype="<f8").tobytes())


def decode(data: bytes) -> np.ndarray:
    return np.frombuffer(base64.b64decode(data), dtype="<f8")


class Ring:
    """The simulated system: the walker's cell, the goal cell, and what the last action earned."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.goal = size, size // 2
        self.rng = np.random.default_rng(seed)
        self.cell = 0
        self.last_reward = 0.0
        self.reset()

    def reset(self) -> None:
        self.cell = int(self.rng.choice([c for c in range(self.size) if c != self.goal]))
        self.last_reward = 0.0

    def act(self, action: int) -> None:
        self.cell = (self.cell + {0: 0, 1: -1, 2: 1}.get(action, 0)) % self.size
        self.last_reward = 1.0 if self.cell == self.goal else -0.1

    def state(self) -> np.ndarray:
        one_hot = np.zeros(self.size)
        one_hot[self.cell] = 1.0
        return one_hot


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="nats://127.0.0.1:4222", help="NATS server (default: %(default)s)")
    parser.add_argument("--prefix", default="", help="prefix of the six subjects (default: none)")
    parser.add_argument("--size", type=int, default=9, help="cells on the ring (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the start cells (default: %(default)s)")
    args = parser.parse_args()
    ring = Ring(args.size, args.seed)
    nc = await nats.connect(args.url)

    def subject(name: str) -> str:
        return f"{args.prefix}.{name}" if args.prefix else name

    async def update(msg):
        await nc.publish(msg.reply, encode(ring.state()))

    async def reward(msg):
        await nc.publish(msg.reply, encode([ring.last_reward]))

    async def action(msg):
        ring.act(int(decode(msg.data)[0]))
        await nc.publish(msg.reply, b"")

    async def reset(msg):
        ring.reset()
        await nc.publish(msg.reply, b"")

    async def actions(msg):
        await nc.publish(msg.reply, encode(np.zeros(3)))

    async def done(msg):
        await nc.publish(msg.reply, encode([1.0 if ring.cell == ring.goal else 0.0]))

    for name, handler in (("rl.update", update), ("rl.reward", reward), ("rl.action", action),
                          ("rl.reset", reset), ("rl.actions", actions), ("r.done", done)):
        await nc.subscribe(subject(name), cb=handler)
    await nc.flush()
    print(f"ring of {args.size} cells answering on {subject('rl.*')} and {subject('r.done')}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await nc.drain()


if __name__ == "__main__":
    asyncio.run(main())
