"""serve_nats: expose any RLBaseEnv (or gymnasium id) to NatsEnv clients over NATS.

Subjects under the base subject ``S`` (the protocol is in docs/remote.md):

- ``S.spec``, ``S.open``, ``S.stats``: JSON control requests, answered by one server of the
  queue group ``aquaml`` (several servers on one subject share the sessions);
- ``S.<session>``: the session's frames (STEP, RESET, and CONTROL ops add/close/ping/end),
  subscribed by the server that opened it and unsubscribed when it ends.

Each session holds its own environment instances (one per client environment). A session that
sends nothing for ``session_timeout`` seconds (clients ping every ``heartbeat`` seconds, also
while idle) is taken for a client that disappeared: its instances are closed.
"""
from __future__ import annotations

import asyncio
import copy
import inspect
import os
import secrets
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable

import numpy as np

from aquaml.data import DataInfo
from aquaml.envs.base import RLBaseEnv, normalize_step
from aquaml.envs.nats_link import NatsOptions, connect, run_async
from aquaml.envs.wire import EnvCodec, Frame, Kind, WireError, frame, stack_rows

PROTOCOL = "aquaml-env/1"
QUEUE = "aquaml"


def env_factory(env: Any) -> Callable[[], RLBaseEnv]:
    """Fresh environment instances from an RLBaseEnv (deep copies), a gymnasium id, or a factory.

    Raises:
        TypeError: ``env`` is none of these.
    """
    if isinstance(env, str):
        from aquaml.envs.gymnasium_env import GymnasiumEnv
        return lambda: GymnasiumEnv(env)
    if isinstance(env, RLBaseEnv):
        return lambda: copy.deepcopy(env)
    if callable(env):
        return env
    raise TypeError(f"env must be an RLBaseEnv, a gymnasium id or a zero-argument factory, got {type(env).__name__}")


class _Session:
    """One client's environments: slot -> instance, and when the client was last heard of."""

    def __init__(self, sid: str, client: str, autoreset: bool) -> None:
        self.sid, self.client, self.autoreset = sid, client, autoreset
        self.envs: dict[int, RLBaseEnv] = {}
        self.next_slot = 0
        self.last_seen = time.monotonic()
        self.subscription: Any = None


class NatsEnvServer:
    """Serve environments on ``subject``: see ``serve_nats`` for the arguments."""

    def __init__(self, env: Any, subject: str = "aquaml.env", options: NatsOptions | None = None,
                 session_timeout: float = 10.0, heartbeat: float = 1.0, max_instances: int = 256,
                 verbose: bool = True) -> None:
        if not isinstance(subject, str) or not subject or any(c in subject for c in " \t\r\n*>"):
            raise ValueError(f"subject must be a NATS subject without spaces or wildcards, got {subject!r}")
        for name, value in (("session_timeout", session_timeout), ("heartbeat", heartbeat)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if heartbeat * 2 > session_timeout:
            raise ValueError(f"heartbeat ({heartbeat} s) must be at most half of session_timeout "
                             f"({session_timeout} s), so that one late ping does not end a session")
        if isinstance(max_instances, bool) or not isinstance(max_instances, int) or max_instances < 1:
            raise ValueError(f"max_instances must be an int >= 1, got {max_instances!r}")
        self.factory = env_factory(env)
        probe = self.factory()
        if not isinstance(probe, RLBaseEnv):
            raise TypeError(f"the env factory returned a {type(probe).__name__}, not an RLBaseEnv")
        self.obs_info: DataInfo = probe.obs_info
        self.action_info: DataInfo | None = probe.action_info
        if self.action_info is None:
            raise ValueError(f"{type(probe).__name__} declares no action spec (self._action_info); a served "
                             "environment must, so that clients know what to send")
        self.description = repr(probe)
        probe.close()
        self.codec = EnvCodec(self.obs_info, self.action_info)
        self._entries = [(n, self.obs_info.shape(n), self.obs_info.dtype(n)) for n in self.obs_info.names]
        self.subject, self.options = subject, options or NatsOptions()
        self.session_timeout, self.heartbeat, self.max_instances = float(session_timeout), float(heartbeat), max_instances
        self.verbose = verbose
        self.sessions: dict[str, _Session] = {}
        self.steps = 0
        self.nc: Any = None
        self._stop: asyncio.Event | None = None

    # --- running -------------------------------------------------------------------------------
    async def run(self, ready: threading.Event | None = None) -> None:
        """Connect, serve until ``stop()`` (or SIGINT/SIGTERM via ``serve_nats``), then close everything."""
        self._stop = asyncio.Event()
        self.nc = await connect(self.options)
        handlers = {"spec": self._on_spec, "open": self._on_open, "stats": self._on_stats}
        for name, handler in handlers.items():
            await self.nc.subscribe(f"{self.subject}.{name}", queue=QUEUE, cb=handler)
        await self.nc.flush()
        sweeper = asyncio.get_running_loop().create_task(self._sweep())
        # printed even when quiet: it says where the server is, and that it is ready
        print(f"[serve-nats {self.subject}] serving {self.description} on {self.subject}.* at "
              f"{self.options.url.split('@')[-1]} (session timeout {self.session_timeout:g} s)", file=sys.stderr,
              flush=True)
        if ready is not None:
            ready.set()
        try:
            await self._stop.wait()
        finally:
            sweeper.cancel()
            for sid in list(self.sessions):
                await self._end(sid, "server stopping")
            await self.nc.drain()

    def stop(self) -> None:
        """Ask ``run`` to finish (call from the loop's thread, or through ``call_soon_threadsafe``)."""
        if self._stop is not None:
            self._stop.set()

    def _log(self, text: str) -> None:
        if self.verbose:
            print(f"[serve-nats {self.subject}] {text}", file=sys.stderr, flush=True)

    def _spec(self) -> dict[str, Any]:
        return {"protocol": PROTOCOL, "obs_info": self.obs_info.to_dict(), "action_info": self.action_info.to_dict(),
                "env": self.description, "heartbeat": self.heartbeat, "session_timeout": self.session_timeout,
                "max_instances": self.max_instances}

    async def _reply(self, msg: Any, payload: bytes) -> None:
        if msg.reply:
            await self.nc.publish(msg.reply, payload)

    async def _error(self, msg: Any, exc: BaseException, slot: int | None = None) -> None:
        detail = "".join(traceback.format_exception(exc)) if not isinstance(exc, (WireError, LookupError)) else ""
        await self._reply(msg, frame(Kind.ERROR, meta={"error": str(exc), "type": type(exc).__name__,
                                                       "traceback": detail, "slot": slot}))

    # --- control subjects ----------------------------------------------------------------------
    async def _on_spec(self, msg: Any) -> None:
        await self._reply(msg, frame(Kind.CONTROL, meta=self._spec()))

    async def _on_stats(self, msg: Any) -> None:
        await self._reply(msg, frame(Kind.CONTROL, meta={
            "sessions": len(self.sessions), "instances": sum(len(s.envs) for s in self.sessions.values()),
            "steps": self.steps}))

    async def _on_open(self, msg: Any) -> None:
        try:
            request = Frame(msg.data).meta or {}
            if request.get("protocol") != PROTOCOL:
                raise WireError(f"the client speaks {request.get('protocol')!r}, this server {PROTOCOL!r}")
            sid = secrets.token_hex(8)
            session = _Session(sid, str(request.get("client", "?")), bool(request.get("autoreset", True)))
            session.subscription = await self.nc.subscribe(f"{self.subject}.{sid}", cb=self._session_handler(session))
            self.sessions[sid] = session
            self._log(f"session {sid} opened by {session.client}")
            await self._reply(msg, frame(Kind.CONTROL, meta={**self._spec(), "session": sid}))
        except Exception as exc:  # noqa: BLE001  (any failure is reported to the client, the server goes on)
            await self._error(msg, exc)

    def _session_handler(self, session: _Session) -> Callable[[Any], Any]:
        async def handle(msg: Any) -> None:
            session.last_seen = time.monotonic()
            try:
                received = Frame(msg.data)
                if received.kind == Kind.STEP:
                    await self._reply(msg, self._step(session, received))
                elif received.kind == Kind.RESET:
                    await self._reply(msg, self._reset(session, received))
                elif received.kind == Kind.CONTROL:
                    await self._control(session, received.meta or {}, msg)
                else:
                    raise WireError(f"a session takes STEP, RESET or CONTROL frames, got {received.kind.name}")
            except _EnvFailure as failure:
                await self._error(msg, failure.exc, failure.slot)
            except Exception as exc:  # noqa: BLE001  (a bad request must not stop the server)
                await self._error(msg, exc)
        return handle

    async def _control(self, session: _Session, request: dict, msg: Any) -> None:
        op = request.get("op")
        if op == "ping":
            await self._reply(msg, frame(Kind.CONTROL, meta={"ok": True}))
        elif op == "add":
            if sum(len(s.envs) for s in self.sessions.values()) >= self.max_instances:
                raise RuntimeError(f"this server's instance limit ({self.max_instances}) is reached")
            env = self.factory()
            slot = session.next_slot
            session.next_slot += 1
            session.envs[slot] = env
            await self._reply(msg, frame(Kind.CONTROL, meta={"slot": slot}))
        elif op == "close":
            env = session.envs.pop(int(request.get("slot", -1)), None)
            if env is not None:
                _close_env(env)
            await self._reply(msg, frame(Kind.CONTROL, meta={"ok": env is not None}))
        elif op == "end":
            await self._end(session.sid, "closed by the client")
            await self._reply(msg, frame(Kind.CONTROL, meta={"ok": True}))
        else:
            raise WireError(f"unknown control op {op!r}; known: add, close, ping, end")

    # --- stepping ------------------------------------------------------------------------------
    def _env(self, session: _Session, slot: int) -> RLBaseEnv:
        env = session.envs.get(int(slot))
        if env is None:
            raise LookupError(f"session {session.sid} has no environment in slot {int(slot)}")
        return env

    def _obs(self, env: RLBaseEnv, obs: Any, what: str) -> dict[str, np.ndarray]:
        if isinstance(obs, tuple) and len(obs) == 2 and isinstance(obs[1], dict):
            obs = obs[0]  # a gymnasium-style (obs, info) reset
        if isinstance(obs, dict) and all(isinstance(obs.get(n), np.ndarray) and obs[n].dtype == d and obs[n].shape == s
                                         for n, s, d in self._entries):
            return obs  # already what the spec says: skip validate's conversions (a third of a step here)
        return self.obs_info.validate(obs, what=f"{type(env).__name__}.{what} observation", allow_extra=True,
                                      squeeze_leading_one=True)

    def _reset(self, session: _Session, received: Frame) -> bytes:
        seeds = self.codec.read_reset_request(received)
        slots = received.slots
        out = self.obs_info.zeros((len(slots),))
        for j, (slot, seed) in enumerate(zip(slots, seeds)):
            env = self._env(session, slot)
            try:
                takes_seed = seed is not None and "seed" in inspect.signature(env.reset).parameters
                obs = self._obs(env, env.reset(seed=seed) if takes_seed else env.reset(), "reset()")
            except Exception as exc:  # noqa: BLE001  (the environment's own error, reported to the client)
                raise _EnvFailure(exc, int(slot)) from None
            for name in self.obs_info.names:
                out[name][j] = obs[name]
        return self.codec.reset_reply(slots, out)

    def _step(self, session: _Session, received: Frame) -> bytes:
        actions = self.codec.read_step_request(received)
        slots = received.slots
        k = len(slots)
        rows, reward, terminated, truncated = [], [], [], []
        reset_mask = np.zeros(k, bool)
        reset_rows, infos, rewards = [], {}, {}
        for j, slot in enumerate(slots.tolist()):
            env = self._env(session, slot)
            try:
                result = normalize_step(env.step({n: np.array(a[j]) for n, a in actions.items()}), type(env).__name__)
                rows.append(self._obs(env, result.obs, "step()"))
                total = result.reward["total_reward"]
                if session.autoreset and (result.terminated or result.truncated):
                    reset_rows.append(self._obs(env, env.reset(), "reset()"))
                    reset_mask[j] = True
            except Exception as exc:  # noqa: BLE001  (the environment's own error, reported to the client)
                raise _EnvFailure(exc, slot) from None
            reward.append(total)
            terminated.append(result.terminated)
            truncated.append(result.truncated)
            if result.info:
                infos[j] = result.info
            if len(result.reward) > 1:
                rewards[j] = {n: v for n, v in result.reward.items() if n != "total_reward"}
        self.steps += k
        names = self.obs_info.names
        obs = {n: stack_rows([row[n] for row in rows]) for n in names}
        reset_obs = {n: stack_rows([row[n] for row in reset_rows]) for n in names} if reset_rows else None
        return self.codec.step_reply(slots, obs, reward, terminated, truncated, reset_obs, reset_mask, infos, rewards)

    # --- ending sessions -----------------------------------------------------------------------
    async def _end(self, sid: str, why: str) -> None:
        session = self.sessions.pop(sid, None)
        if session is None:
            return
        for env in session.envs.values():
            _close_env(env)
        try:
            await session.subscription.unsubscribe()
        except Exception:  # noqa: BLE001  (the connection may be gone already; the session is ended anyway)
            pass
        self._log(f"session {sid} of {session.client} ended ({why}); {len(session.envs)} instance(s) closed")

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.session_timeout / 4))
            cutoff = time.monotonic() - self.session_timeout
            for sid, session in list(self.sessions.items()):
                if session.last_seen < cutoff:
                    await self._end(sid, f"client gone: nothing heard for {self.session_timeout:g} s")


class _EnvFailure(Exception):
    """An environment raised while serving a request (carries the slot for the client's message)."""

    def __init__(self, exc: BaseException, slot: int) -> None:
        super().__init__(str(exc))
        self.exc, self.slot = exc, slot


def _close_env(env: RLBaseEnv) -> None:
    try:
        env.close()
    except Exception as exc:  # noqa: BLE001  (a failing close must not keep the other instances open)
        print(f"[serve-nats] closing {type(env).__name__} failed: {exc}", file=sys.stderr, flush=True)


def serve_nats(env: Any, subject: str = "aquaml.env", url: str = "nats://127.0.0.1:4222", *,
               session_timeout: float = 10.0, heartbeat: float = 1.0, max_instances: int = 256,
               verbose: bool = True, ready: threading.Event | None = None, **auth: Any) -> None:
    """Serve ``env`` to NatsEnv clients on ``subject`` until SIGINT or SIGTERM (blocks).

    Args:
        env: an RLBaseEnv (each client environment gets a deep copy), a gymnasium id such as
            ``'Pendulum-v1'``, or a zero-argument factory of RLBaseEnv instances.
        subject: the base subject; clients use ``NatsEnv(url, subject)``.
        url: the NATS server.
        session_timeout: seconds without a message (clients ping every ``heartbeat`` seconds)
            after which a client counts as gone and its instances are closed.
        heartbeat: the ping interval the server asks clients for.
        max_instances: most environment instances alive at once over all sessions.
        verbose: log sessions opening and ending to stderr (the line saying where the server
            serves is printed either way).
        ready: set once the server is subscribed and answering.
        **auth: NatsOptions fields: ``user``, ``password``, ``token``, ``nkey_seed``,
            ``credentials``, ``connect_timeout``, ``reconnect_wait``, ``reconnect_max_wait``.

    Raises:
        ValueError, TypeError: a bad argument (before connecting).
        ConnectionError, PermissionError: the NATS server cannot be reached or refuses the credentials.
    """
    server = NatsEnvServer(env, subject, NatsOptions(url=url, **auth), session_timeout, heartbeat, max_instances,
                           verbose)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, server.stop)
        await server.run(ready)

    run_async(main())
    if verbose:
        print(f"[serve-nats {subject}] stopped after {server.steps} steps (pid {os.getpid()})", file=sys.stderr,
              flush=True)
