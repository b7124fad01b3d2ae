"""NatsEnv: an RLBaseEnv whose state, reward, done and actions come from a system over NATS.

Two protocols (both in docs/remote.md):

- ``protocol="aquaml"``: a ``serve_nats`` server (or any system speaking the same frames). One
  request per step for every environment of a session: the NatsEnv copies of one process that
  come from the same original share a session, and a worker's ``send_step``/``receive_step``
  round sends all their actions in one STEP frame.
- ``protocol="gym-nats"``: gym-nats' subjects (``rl.update``, ``rl.reward``, ``rl.action``,
  ``rl.reset``, ``rl.actions``, ``r.done``) and its encoding (base64 of raw float64 arrays), four
  round trips per step, so a system written for gym-nats trains unchanged. Such a system is one
  environment: a task may hold one copy of it (``max_copies`` is 1).

A NatsEnv connects when made (to read the spec) and its copies (``copy.deepcopy``, as
RLTaskStarter makes them) start unconnected and join the session at their first reset. A NatsEnv
cannot be pickled: its episode lives on the far side, so a checkpoint records no environment state
and a resumed run starts new episodes.
"""
from __future__ import annotations

import asyncio
import atexit
import base64
import os
import secrets
import socket
import time
import weakref
from typing import Any, Mapping

import numpy as np

from aquaml.data import DataInfo, SpecError
from aquaml.envs.base import RLBaseEnv, StepResult
from aquaml.envs.nats_link import Link, NatsOptions, RemoteEnvError, runner
from aquaml.envs.wire import EnvCodec, Frame, Kind, WireError, frame, stack_rows

PROTOCOLS = ("aquaml", "gym-nats")
PROTOCOL = "aquaml-env/1"

#: gym-nats' subjects (gym_nats.utils.Channels), in the order a step uses them
GYM_NATS_SUBJECTS = {"update": "rl.update", "reward": "rl.reward", "action": "rl.action", "reset": "rl.reset",
                     "actions": "rl.actions", "done": "r.done"}


def _far_side_error(received: Frame, subject: str) -> RemoteEnvError:
    meta = received.meta or {}
    slot = meta.get("slot")
    where = f"{subject}" + (f", environment slot {slot}" if slot is not None else "")
    text = f"the far side ({where}) reported {meta.get('type', 'an error')}: {meta.get('error', '')}"
    if meta.get("traceback"):
        text += "\n--- far-side traceback ---\n" + meta["traceback"].rstrip()
    return RemoteEnvError(text)


def _checked(data: bytes, subject: str, expected: Kind) -> Frame:
    try:
        received = Frame(data)
    except WireError as exc:
        raise RemoteEnvError(f"the reply on {subject!r} is not an aquaml frame ({exc}); is a serve_nats "
                             "server on this subject?") from None
    if received.kind == Kind.ERROR:
        raise _far_side_error(received, subject)
    if received.kind != expected:
        raise RemoteEnvError(f"the reply on {subject!r} is a {received.kind.name} frame, expected {expected.name}")
    return received


class _Session:
    """The client side of one serve_nats session, shared by the NatsEnv copies of one original.

    Steps sent (``send``) wait in ``pending`` until one of them is received; then one STEP frame
    carries them all and the replies wait in ``results`` for their environments.
    """

    def __init__(self, link: Link, subject: str, timeout: float, autoreset: bool) -> None:
        self.link, self.subject, self.timeout, self.autoreset = link, subject, timeout, autoreset
        self.sid: str | None = None
        self.epoch = 0            # counts sessions opened; a slot of an older one is gone
        self.lost: str | None = None
        self.codec: EnvCodec | None = None
        self.pending: dict[int, Mapping[str, np.ndarray]] = {}
        self.results: dict[int, StepResult] = {}
        self.autoreset_obs: dict[int, dict[str, np.ndarray]] = {}
        self.slots = 0
        self._heartbeat_task: Any = None

    @property
    def data_subject(self) -> str:
        return f"{self.subject}.{self.sid}"

    def _request(self, subject: str, payload: bytes, expected: Kind) -> Frame:
        # patient: a session's subject can lack its subscriber for a moment after a NATS restart
        return _checked(self.link.sync_request(subject, payload, self.timeout, patient=True), subject, expected)

    def control(self, op: str, **fields: Any) -> dict:
        return self._request(self.data_subject, frame(Kind.CONTROL, meta={"op": op, **fields}), Kind.CONTROL).meta

    def open(self, obs_info: DataInfo, action_info: DataInfo) -> None:
        """Open a new session on the server (again after one was lost)."""
        client = f"{socket.gethostname()}/pid {os.getpid()}"
        reply = self._request(f"{self.subject}.open", frame(Kind.CONTROL, meta={
            "protocol": PROTOCOL, "client": client, "autoreset": self.autoreset}), Kind.CONTROL).meta
        served = DataInfo.from_dict(reply["obs_info"]), DataInfo.from_dict(reply["action_info"])
        if served != (obs_info, action_info):
            raise RemoteEnvError(f"the environment on {self.subject!r} changed since this NatsEnv was made: now "
                                 f"observations {served[0]}, actions {served[1]}; was {obs_info}, {action_info}")
        self.codec = EnvCodec(obs_info, action_info)
        self.sid, self.lost = reply["session"], None
        self.epoch += 1
        self.pending.clear()
        self.results.clear()
        self.autoreset_obs.clear()
        interval = float(reply.get("heartbeat", 1.0))
        expiry = float(reply.get("session_timeout", 10.0))
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
        self._heartbeat_task = self.link.owner.run(self._start_heartbeat(interval, expiry))

    async def _start_heartbeat(self, interval: float, expiry: float) -> Any:
        task = asyncio.get_running_loop().create_task(self._heartbeat(interval, expiry, self.sid))
        self.link.tasks.append(task)
        return task

    async def _heartbeat(self, interval: float, expiry: float, sid: str) -> None:
        """Ping every ``interval`` s; the session is lost once nobody has answered for ``expiry`` s
        (the server's session timeout: by then it has closed the session itself)."""
        subject = f"{self.subject}.{sid}"
        answered = time.monotonic()
        while self.sid == sid:
            await asyncio.sleep(interval)
            try:
                data = await self.link.request(subject, frame(Kind.CONTROL, meta={"op": "ping"}),
                                               max(interval * 4, 2.0), patient=True)
                _checked(data, subject, Kind.CONTROL)
                answered = time.monotonic()
            except RemoteEnvError as exc:  # timeouts included: a NATS restart, or a server gone
                if time.monotonic() - answered > expiry and self.sid == sid:
                    self.lost = f"session {sid} on {self.subject!r} is gone ({exc})"
                    return

    def add(self) -> int:
        self.slots += 1
        return int(self.control("add")["slot"])

    def remove(self, slot: int) -> None:
        self.slots -= 1
        self.pending.pop(slot, None)
        self.results.pop(slot, None)
        self.autoreset_obs.pop(slot, None)
        if self.lost is None and self.sid is not None:
            self.control("close", slot=slot)
            if self.slots == 0:
                self.end()

    def end(self) -> None:
        sid, self.sid = self.sid, None
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            self._heartbeat_task = None
        if sid is not None and self.lost is None:
            try:
                self._request(f"{self.subject}.{sid}", frame(Kind.CONTROL, meta={"op": "end"}), Kind.CONTROL)
            except RemoteEnvError:
                pass  # the server is gone or ended it already: nothing is left to close

    def check(self) -> None:
        if self.lost is not None:
            raise RemoteEnvError(self.lost + "; the episode cannot continue (a reset opens a new session)")

    def reset(self, slot: int, seed: int | None) -> dict[str, np.ndarray]:
        self.check()
        if seed is None and slot in self.autoreset_obs:
            return self.autoreset_obs.pop(slot)
        self.autoreset_obs.pop(slot, None)
        received = self._request(self.data_subject, self.codec.reset_request(np.array([slot]), [seed]),
                                 Kind.RESET_REPLY)
        obs = self.codec.read_reset_reply(received)
        return {n: v[0] for n, v in obs.items()}

    def flush(self) -> None:
        """Send every pending action in one STEP frame and keep the results for their environments."""
        self.check()
        order = list(self.pending)
        if len(order) == 1:
            self._flush_one(order[0])
            return
        rows = [self.pending[s] for s in order]
        actions = {n: stack_rows([row[n] for row in rows]) for n in self.codec.action.names}
        self.pending.clear()
        slots = np.array(order, np.uint32)
        received = self._request(self.data_subject, self.codec.step_request(slots, actions), Kind.STEP_REPLY)
        batch = self.codec.read_step_reply(received)
        names = self.codec.obs.names
        rewards, terminated, truncated = batch.reward.tolist(), batch.terminated.tolist(), batch.truncated.tolist()
        reset_rows = batch.reset_rows.tolist()
        for j, slot in enumerate(order):
            reward = {"total_reward": rewards[j], **batch.rewards[j]} if j in batch.rewards else \
                {"total_reward": rewards[j]}
            self.results[slot] = StepResult({n: batch.obs[n][j] for n in names}, reward, terminated[j],
                                            truncated[j], batch.infos.get(j, {}))
            if reset_rows[j] >= 0:
                self.autoreset_obs[slot] = {n: batch.reset_obs[n][reset_rows[j]] for n in names}

    def _flush_one(self, slot: int) -> None:
        """``flush`` of one environment: the same frames, read into plain values (a third of the
        client's framing time goes to one-element arrays otherwise)."""
        row = self.pending.pop(slot)
        actions = {n: row[n][None] for n in self.codec.action.names}
        request = self.codec.step_request(np.array([slot], np.uint32), actions)
        received = self._request(self.data_subject, request, Kind.STEP_REPLY)
        obs, total, terminated, truncated, reset_obs, info, components = self.codec.read_one_step_reply(received)
        reward = {"total_reward": total, **components} if components else {"total_reward": total}
        self.results[slot] = StepResult(obs, reward, terminated, truncated, info)
        if reset_obs is not None:
            self.autoreset_obs[slot] = reset_obs


_SESSIONS: "weakref.WeakValueDictionary[tuple, _Session]" = weakref.WeakValueDictionary()
_GYM_NATS_IN_EPISODE: dict[tuple, int] = {}
_EXIT_HOOK = False


def _session(link: Link, subject: str, group: str, timeout: float, autoreset: bool) -> _Session:
    key = (id(link), subject, group, os.getpid())
    session = _SESSIONS.get(key)
    if session is None or session.link is not link:
        global _EXIT_HOOK
        if not _EXIT_HOOK:
            # registered after the loop runner's own exit hook, so it runs first (atexit is LIFO)
            atexit.register(_end_sessions)
            _EXIT_HOOK = True
        session = _Session(link, subject, timeout, autoreset)
        _SESSIONS[key] = session
    return session


def _end_sessions() -> None:
    """At exit: end this process's sessions, so servers close their instances at once."""
    for session in list(_SESSIONS.values()):
        if session.link.owner.pid == os.getpid() and not session.link.closed:
            session.end()


def _b64_floats(data: bytes, subject: str) -> np.ndarray:
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError as exc:
        raise RemoteEnvError(f"the reply on {subject!r} is not base64 ({exc}); gym-nats systems answer with "
                             "base64 of a float64 array") from None
    if len(raw) % 8:
        raise RemoteEnvError(f"the reply on {subject!r} holds {len(raw)} bytes, not a whole number of float64")
    return np.frombuffer(raw, "<f8")


def _b64(values: np.ndarray) -> bytes:
    return base64.b64encode(np.ascontiguousarray(values, "<f8").tobytes())


class NatsEnv(RLBaseEnv):
    """An environment on the far side of a NATS server.

    Args:
        url: the NATS server, ``nats://host:port`` (``tls://`` for TLS).
        subject: aquaml protocol: the server's base subject (default ``aquaml.env``). gym-nats:
            a prefix of the six subjects (default none: exactly gym-nats' subjects), so that one
            NATS server can carry several systems (``sim2`` -> ``sim2.rl.update``...).
        protocol: ``"aquaml"`` (a serve_nats server) or ``"gym-nats"`` (a system written for gym-nats).
        timeout: seconds to wait for each reply before ``RemoteEnvTimeout`` names the subject.
        autoreset: aquaml protocol: the server resets an environment as soon as its episode ends and
            sends the first observation with the step, so the next ``reset()`` needs no round trip.
        max_episode_steps: truncate episodes after this many steps (gym-nats systems have no time
            limit of their own; None: the system decides).
        user, password, token, nkey_seed, credentials, connect_timeout: authentication and
            connection, as NatsOptions documents.

    Observations and actions (gym-nats): ``obs`` is the state vector as float32 (gym-nats calls it
    MultiBinary; its values are passed on as sent), ``action`` a Discrete index over the entries of
    ``rl.actions``, the reward the sum of ``rl.reward``'s entries, and ``r.done`` summing above zero
    terminates the episode.

    Raises:
        ValueError: an unknown protocol or a bad option.
        ConnectionError, PermissionError: the server cannot be reached or refuses the credentials.
        RemoteEnvError: nothing answers on the subjects, or it answers something else.
    """

    def __init__(self, url: str = "nats://127.0.0.1:4222", subject: str | None = None, *, protocol: str = "aquaml",
                 timeout: float = 10.0, autoreset: bool = True, max_episode_steps: int | None = None,
                 user: str | None = None, password: str | None = None, token: str | None = None,
                 nkey_seed: str | None = None, credentials: str | None = None, connect_timeout: float = 5.0) -> None:
        super().__init__()
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if max_episode_steps is not None and (isinstance(max_episode_steps, bool) or
                                              not isinstance(max_episode_steps, int) or max_episode_steps < 1):
            raise ValueError(f"max_episode_steps must be None or an int >= 1, got {max_episode_steps!r}")
        if subject is None:
            subject = "aquaml.env" if protocol == "aquaml" else ""
        if not isinstance(subject, str) or any(c in subject for c in " \t\r\n*>") or (protocol == "aquaml" and not subject):
            raise ValueError(f"subject must be a NATS subject without spaces or wildcards, got {subject!r}")
        self.options = NatsOptions(url=url, user=user, password=password, token=token, nkey_seed=nkey_seed,
                                   credentials=credentials, connect_timeout=connect_timeout)
        self.subject, self.protocol, self.timeout = subject, protocol, float(timeout)
        self.autoreset, self.max_episode_steps = bool(autoreset), max_episode_steps
        self._group = secrets.token_hex(8)  # copies of this instance share one session
        self._fresh()
        if protocol == "aquaml":
            self._read_spec()
        else:
            self._read_gym_nats_spec()

    def _fresh(self) -> None:
        """The per-copy state: not yet in a session, no episode."""
        self._session: _Session | None = None
        self._slot: int | None = None
        self._epoch = 0
        self._steps = 0
        self._sent: Mapping[str, np.ndarray] | None = None

    # --- copies, pickling, display -------------------------------------------------------------
    def __deepcopy__(self, memo: dict) -> "NatsEnv":
        twin = NatsEnv.__new__(NatsEnv)
        twin.__dict__.update({k: v for k, v in self.__dict__.items()
                              if k not in ("_session", "_slot", "_epoch", "_steps", "_sent")})
        twin._fresh()
        return twin

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(f"{self!r} cannot be pickled: its episode lives on the far side of NATS, so a checkpoint "
                        "holds no environment state and a resumed run reconnects and starts new episodes")

    def __repr__(self) -> str:
        where = self.options.url.split("@")[-1]
        return f"NatsEnv({where!r}, {self.subject!r}, protocol={self.protocol!r})"

    @property
    def max_copies(self) -> int | None:
        """A gym-nats system is one environment: 1. A serve_nats server makes instances: no limit."""
        return 1 if self.protocol == "gym-nats" else None

    def _link(self) -> Link:
        return runner().link(self.options)

    # --- aquaml protocol -----------------------------------------------------------------------
    def _read_spec(self) -> None:
        subject = f"{self.subject}.spec"
        reply = _checked(self._link().sync_request(subject, frame(Kind.CONTROL, meta={"protocol": PROTOCOL}),
                                                   self.timeout), subject, Kind.CONTROL).meta
        if reply.get("protocol") != PROTOCOL:
            raise RemoteEnvError(f"{subject!r} speaks {reply.get('protocol')!r}, this client {PROTOCOL!r}")
        self._obs_info = DataInfo.from_dict(reply["obs_info"])
        self._action_info = DataInfo.from_dict(reply["action_info"])
        self.served = reply.get("env", "?")

    def _attach(self) -> _Session:
        """This copy's session, opened (or reopened after it was lost) and its slot added."""
        session = self._session
        if session is None:
            session = self._session = _session(self._link(), self.subject, self._group, self.timeout, self.autoreset)
        if session.sid is None or session.lost is not None:
            session.open(self._obs_info, self._action_info)
            session.slots = 0
        if self._slot is None or self._epoch != session.epoch:
            self._slot, self._epoch = session.add(), session.epoch
        return session

    def _current(self) -> _Session:
        session = self._session
        if session is None or self._slot is None:
            raise RemoteEnvError(f"{self!r}: step() before reset()")
        if self._epoch != session.epoch:
            raise RemoteEnvError(f"{self!r}: the session of this episode was lost and replaced; reset() first")
        return session

    # --- RLBaseEnv -----------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> dict:
        """Start an episode on the far side; ``seed`` is passed on (gym-nats systems ignore it)."""
        self._steps = 0
        if self.protocol == "gym-nats":
            return self.initial_obs(self._gym_nats_reset())
        return self.initial_obs(self._attach().reset(self._slot, seed))

    def send_step(self, action_dict: Mapping[str, Any]) -> None:
        """Queue this step's action; sessions send every queued action at the first ``receive_step``."""
        if self.protocol == "gym-nats":
            return super().send_step(action_dict)
        session = self._current()
        if self._slot in session.pending or self._slot in session.results:
            raise RemoteEnvError(f"{self!r}: send_step() twice without receive_step()")
        session.pending[self._slot] = {n: np.asarray(action_dict[n]) for n in self._action_info.names}
        self._sent = action_dict

    def receive_step(self) -> StepResult:
        """The result of the step sent last (one round trip for all environments of the session)."""
        if self.protocol == "gym-nats":
            return super().receive_step()
        session = self._current()
        if self._slot not in session.results:
            if self._slot not in session.pending:
                raise RemoteEnvError(f"{self!r}: receive_step() without send_step()")
            session.flush()
        result = session.results.pop(self._slot)
        sent, self._sent = self._sent, None
        return self._finish(result, sent)

    def step(self, action_dict: dict) -> StepResult:
        if self.protocol == "gym-nats":
            return self._finish(self._gym_nats_step(action_dict), action_dict)
        self.send_step(action_dict)
        return self.receive_step()

    def _finish(self, result: StepResult, action_dict: Mapping[str, Any]) -> StepResult:
        self._steps += 1
        if self.max_episode_steps is not None and self._steps >= self.max_episode_steps and not result.terminated:
            result = result._replace(truncated=True)
        if self.protocol == "gym-nats" and (result.terminated or result.truncated):
            _GYM_NATS_IN_EPISODE.pop(self._system_key(), None)
        obs = self.check_obs(result.obs, action_dict)
        return result if obs is result.obs else result._replace(obs=obs)

    def close(self) -> None:
        """Give this copy's instance back to the server (the session ends with its last copy)."""
        if self.protocol == "gym-nats":
            _GYM_NATS_IN_EPISODE.pop(self._system_key(), None)
            return
        session, slot = self._session, self._slot
        self._slot = None
        if session is not None and slot is not None and self._epoch == session.epoch:
            try:
                session.remove(slot)
            except RemoteEnvError:
                pass  # the server is gone: it has nothing left to close for us

    # --- gym-nats protocol ---------------------------------------------------------------------
    def _subject(self, name: str) -> str:
        base = GYM_NATS_SUBJECTS[name]
        return f"{self.subject}.{base}" if self.subject else base

    async def _ask(self, link: Link, name: str, payload: bytes = b"") -> bytes:
        return await link.request(self._subject(name), payload, self.timeout)

    def _read_gym_nats_spec(self) -> None:
        link = self._link()

        async def spec() -> tuple[np.ndarray, np.ndarray]:
            state = _b64_floats(await self._ask(link, "update"), self._subject("update"))
            actions = _b64_floats(await self._ask(link, "actions"), self._subject("actions"))
            return state, actions

        state, actions = link.owner.run(spec())
        if len(actions) < 1:
            raise RemoteEnvError(f"{self._subject('actions')!r} answered an empty array: the system offers no action")
        self._obs_info = DataInfo("obs", (len(state),), np.float32)
        self._action_info = DataInfo("action", (), np.int64, {"action": {"n": len(actions), "start": 0}})
        self.served = f"gym-nats system ({len(state)} state entries, {len(actions)} actions)"

    def _system_key(self) -> tuple:
        return (self.options, self.subject)

    def _claim_system(self) -> None:
        holder = _GYM_NATS_IN_EPISODE.get(self._system_key())
        if holder is not None and holder != id(self):
            raise RemoteEnvError(
                f"{self!r}: this gym-nats system is in an episode of another NatsEnv of this process; a gym-nats "
                "system is one environment that runs one episode at a time. Give evaluation its own system "
                "(eval_env=NatsEnv(..., subject='<prefix>', protocol='gym-nats')) and use envs_per_worker=1")
        _GYM_NATS_IN_EPISODE[self._system_key()] = id(self)

    def _gym_nats_reset(self) -> dict:
        self._claim_system()
        link = self._link()

        async def reset() -> np.ndarray:
            await self._ask(link, "reset")
            return _b64_floats(await self._ask(link, "update"), self._subject("update"))

        return {"obs": self._gym_nats_state(link.owner.run(reset()))}

    def _gym_nats_state(self, state: np.ndarray) -> np.ndarray:
        if state.shape != self._obs_info.shape("obs"):
            raise SpecError(f"{self._subject('update')!r} answered {len(state)} state entries, the system started "
                            f"with {self._obs_info.shape('obs')[0]}")
        return state.astype(np.float32)

    def _gym_nats_step(self, action_dict: Mapping[str, Any]) -> StepResult:
        if _GYM_NATS_IN_EPISODE.get(self._system_key()) != id(self):
            raise RemoteEnvError(f"{self!r}: step() before reset()")
        action = int(np.asarray(action_dict["action"]).reshape(-1)[0])
        n = self._action_info.meta("action")["n"]
        if not 0 <= action < n:
            raise SpecError(f"{self!r}: action {action} is outside the system's {n} actions 0..{n - 1}")
        link = self._link()

        async def step() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            await self._ask(link, "action", _b64(np.array([action], np.float64)))
            reward = _b64_floats(await self._ask(link, "reward"), self._subject("reward"))
            state = _b64_floats(await self._ask(link, "update"), self._subject("update"))
            done = _b64_floats(await self._ask(link, "done"), self._subject("done"))
            return reward, state, done

        reward, state, done = link.owner.run(step())
        return StepResult({"obs": self._gym_nats_state(state)}, {"total_reward": float(reward.sum())},
                          bool(done.sum() > 0), False, {})
