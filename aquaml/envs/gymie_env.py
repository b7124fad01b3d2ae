"""GymieEnv: an RLBaseEnv on any server that speaks Gymie's WebSocket API.

That is ``aquaml serve`` or the original Gymie server. The copies of one GymieEnv in a process
(as RLTaskStarter makes them) share one WebSocket connection, each with its own instance on the
server; a worker's ``send_step``/``receive_step`` round writes every step message before it reads
the replies, which come back in order, so the round trips overlap.

With ``aquaml serve`` the connection negotiates the ``aquaml.gymie.v1`` extension: five-part steps
(terminated and truncated apart) and seeded resets. The original server answers Gymie's four-part
step; ``done`` then counts as truncated when ``info['TimeLimit.truncated']`` says so.
"""
from __future__ import annotations

import atexit
import collections
import json
import math
import os
import secrets
import socket
import ssl
import threading
import time
import urllib.parse
import warnings
import weakref
from typing import Any, Mapping

import numpy as np

from aquaml.data import DataInfo, SpecError
from aquaml.envs.base import RLBaseEnv, StepResult
from aquaml.envs.gymie_serve import EXTENSION
from aquaml.envs.nats_link import RemoteEnvError, RemoteEnvTimeout

_SEED_WARNED: set[str] = set()
_ENCODER = json.JSONEncoder(allow_nan=False)  # json.dumps(allow_nan=False) would build one per call


def _websockets() -> Any:
    try:
        import websockets.client
        import websockets.uri
    except ImportError:  # pragma: no cover - the remote extra is part of the normal install
        raise ImportError("GymieEnv needs websockets: pip install 'aquaml[remote]' (or pip install websockets)") from None
    global _TEXT, _BINARY, _PONG, _CLOSED
    # compared by identity per frame: an enum's .name is a descriptor lookup (~1 us each here)
    _TEXT, _BINARY, _PONG = websockets.frames.Opcode.TEXT, websockets.frames.Opcode.BINARY, websockets.frames.Opcode.PONG
    _CLOSED = websockets.protocol.State.CLOSED
    return websockets


_TEXT = _BINARY = _PONG = _CLOSED = None  # websockets' opcodes and closed state, set by _websockets()


def _safe_url(url: str) -> str:
    """``url`` without a token in its query."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.urlencode([(k, "***" if k == "token" else v) for k, v in urllib.parse.parse_qsl(parts.query)])
    return urllib.parse.urlunsplit(parts._replace(query=query))


#: seconds between the moments the keepalive thread answers a server's pings while no call runs
KEEPALIVE_TICK = 1.0
#: seconds between the pings a connection sends while idle, and how long it waits for a pong
PING_INTERVAL, PING_TIMEOUT = 20.0, 60.0


class _Channel:
    """One WebSocket connection; replies are matched to requests by their order.

    The connection is websockets' Sans-I/O protocol over a blocking socket, driven by the thread
    that calls: a reply is read where it is awaited, with no hand-over from a reader thread (that
    hand-over cost a third of a round trip: 9,300 echo round trips/s against 14,000 here). While no
    call runs, a keepalive thread answers the server's pings and pings every ``PING_INTERVAL``
    seconds, so an idle connection (a learner training) stays open.
    """

    def __init__(self, url: str, token: str | None, timeout: float, connect_timeout: float, extension: bool) -> None:
        self.url, self.timeout = url, timeout
        self.lock = threading.Lock()
        self.frames: collections.deque = collections.deque()  # data frames read before their turn
        self.sent = self.received = 0
        self.replies: dict[int, str] = {}
        self.failure: RemoteEnvError | None = None
        self.instances = 0
        self.last_ping = self.last_pong = time.monotonic()
        try:
            self._open(token, connect_timeout, extension)
        except Exception as exc:  # noqa: BLE001  (socket, TLS, handshake and HTTP errors all mean "cannot connect")
            if getattr(self, "sock", None) is not None:
                self.sock.close()
            raise ConnectionError(f"cannot open a WebSocket to {_safe_url(url)} ({type(exc).__name__}: {exc})") from None
        self.extension = self.protocol.subprotocol == EXTENSION
        _keep_alive(self)

    def _open(self, token: str | None, connect_timeout: float, extension: bool) -> None:
        ws = _websockets()
        uri = ws.uri.parse_uri(self.url)
        self.sock = None
        self.sock = socket.create_connection((uri.host, uri.port), timeout=connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if uri.secure:
            self.sock = ssl.create_default_context().wrap_socket(self.sock, server_hostname=uri.host)
        # no extensions offered: permessage-deflate would cost more per message than it saves
        self.protocol = ws.client.ClientProtocol(uri, subprotocols=[EXTENSION] if extension else None,
                                                 max_size=64 << 20)
        request = self.protocol.connect()
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        self.protocol.send_request(request)
        self._write()
        deadline = time.monotonic() + connect_timeout
        while not isinstance(self.protocol.handshake_exc, Exception) and self.protocol.state.name == "CONNECTING":
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            self._read()
        if self.protocol.handshake_exc is not None:
            raise self.protocol.handshake_exc
        self.sock.settimeout(self.timeout)  # for every read and write from now on

    def _write(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)
            else:  # the protocol is done with the connection (after a close)
                self.sock.shutdown(socket.SHUT_WR)

    def _read(self) -> None:
        """Read what the socket has (blocking up to its timeout) and keep the data frames."""
        data = self.sock.recv(1 << 16)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        for event in self.protocol.events_received():
            opcode = getattr(event, "opcode", None)
            if opcode is _TEXT:
                self.frames.append(event.data.decode())
            elif opcode is _BINARY:
                self.frames.append(bytes(event.data))
            elif opcode is _PONG:
                self.last_pong = time.monotonic()
        self._write()  # pongs and the answer to a close, which the protocol prepares itself
        if self.protocol.state is _CLOSED and not self.frames:
            raise self.protocol.close_exc

    def send(self, method: str, params: Mapping[str, Any]) -> int:
        """Send one request; returns its ticket for ``receive``."""
        if self.failure is not None:
            raise self.failure
        with self.lock:
            try:
                self.protocol.send_text(_ENCODER.encode({"method": method, "params": params}).encode())
                self._write()
            except Exception as exc:  # noqa: BLE001  (any failure to write ends this connection)
                raise self._failed(exc, method) from None
        self.sent += 1
        return self.sent

    def receive(self, ticket: int, method: str) -> str:
        """The reply to request ``ticket`` (replies to earlier ones are kept for their owners)."""
        with self.lock:
            while ticket not in self.replies:
                if self.failure is not None:
                    raise self.failure
                if not self.frames:
                    try:
                        self._read()
                    except TimeoutError:
                        raise RemoteEnvTimeout(f"no reply to {method!r} from the Gymie server at "
                                               f"{_safe_url(self.url)} within {self.timeout:g} s (a slower "
                                               "environment needs a longer timeout=)") from None
                    except Exception as exc:  # noqa: BLE001  (closed, reset: the connection is over)
                        raise self._failed(exc, method) from None
                    continue
                self.received += 1
                reply = self.frames.popleft()
                self.replies[self.received] = reply if isinstance(reply, str) else reply.decode()
            return self.replies.pop(ticket)

    def keep_alive(self) -> None:
        """Answer pings, and ping when idle (the keepalive thread, while no call holds the lock)."""
        if self.failure is not None or not self.lock.acquire(blocking=False):
            return
        try:
            now = time.monotonic()
            if self.last_ping > self.last_pong and now - self.last_ping > PING_TIMEOUT:
                self._failed(TimeoutError(f"no pong within {PING_TIMEOUT:g} s"), "keepalive")
                self.sock.close()
                return
            if now - self.last_ping > PING_INTERVAL and self.last_pong >= self.last_ping:
                self.protocol.send_ping(os.urandom(4))
                self.last_ping = now
            self.sock.settimeout(0.0)
            try:
                self._read()
            except (BlockingIOError, ssl.SSLWantReadError):  # nothing to read: the usual case
                self._write()
            finally:
                self.sock.settimeout(self.timeout)
        except Exception as exc:  # noqa: BLE001  (the connection is over; the next call says why)
            self._failed(exc, "keepalive")
        finally:
            self.lock.release()

    def call(self, method: str, **params: Any) -> str:
        return self.receive(self.send(method, params), method)

    def _failed(self, exc: Exception, method: str) -> RemoteEnvError:
        rcvd = getattr(exc, "rcvd", None)
        if rcvd is not None:
            text = (f"the Gymie server at {_safe_url(self.url)} closed the connection during {method!r} with code "
                    f"{rcvd.code}: {rcvd.reason or '(no reason)'}")
        else:
            text = f"the connection to {_safe_url(self.url)} failed during {method!r} ({type(exc).__name__}: {exc})"
        self.failure = RemoteEnvError(text)
        return self.failure

    def close(self) -> None:
        """Close the connection with code 1000 (waiting up to a second for the server's answer)."""
        with self.lock:
            if self.failure is None:
                self.failure = RemoteEnvError(f"the connection to {_safe_url(self.url)} is closed")
            try:
                if self.protocol.state.name == "OPEN":
                    self.protocol.send_close(1000)
                    self._write()
                    self.sock.settimeout(1.0)
                    while self.protocol.state.name != "CLOSED":
                        self._read()
            except Exception:  # noqa: BLE001  (closing a broken connection: nothing left to do)
                pass
            finally:
                self.sock.close()


_CHANNELS: "weakref.WeakValueDictionary[tuple, _Channel]" = weakref.WeakValueDictionary()
_KEPT: "weakref.WeakSet[_Channel]" = weakref.WeakSet()  # the channels the keepalive thread serves
_KEEPER_PID: list = [None]  # the process whose keepalive thread runs (a forked child starts its own)
_KEEPER_LOCK = threading.Lock()


def _keep_alive(channel: _Channel) -> None:
    """Serve ``channel`` from this process's keepalive thread (started on first use)."""
    channel.pid = os.getpid()
    with _KEEPER_LOCK:
        _KEPT.add(channel)
        if _KEEPER_PID[0] != os.getpid():
            _KEEPER_PID[0] = os.getpid()
            threading.Thread(target=_keep_channels_alive, name="aquaml-gymie-keepalive", daemon=True).start()


def _keep_channels_alive() -> None:
    while True:
        time.sleep(KEEPALIVE_TICK)
        with _KEEPER_LOCK:
            channels = list(_KEPT)
        for channel in channels:
            if channel.pid == os.getpid():  # a forked child must not read its parent's sockets
                channel.keep_alive()


@atexit.register
def _close_channels() -> None:
    """At exit: close this process's connections, so servers close their instances at once."""
    for key, channel in list(_CHANNELS.items()):
        if key[-1] == os.getpid():
            channel.close()


def _info_from_space(info: Mapping[str, Any], name: str, what: str) -> DataInfo:
    """The DataInfo of an observation space's JSON description."""
    kind = info.get("name")
    if kind == "Box":
        return DataInfo(name, tuple(info["shape"]), np.float32)
    if kind in ("Discrete", "Discreate"):  # Gymie's README spells it "Discreate"
        return DataInfo(name, (), np.int64, {name: {"n": int(info["n"]), "start": int(info.get("start", 0))}})
    if kind == "MultiBinary":
        return DataInfo(name, tuple(info["shape"]), np.int8, {name: {"binary": True}})
    if kind == "MultiDiscrete":
        return DataInfo(name, tuple(info["shape"]), np.int64, {name: {"nvec": info["nvec"]}})
    if kind == "Dict" and name == "obs":
        parts = [_info_from_space(sub, key, what) for key, sub in info["spaces"].items()]
        out = parts[0]
        for part in parts[1:]:
            out = out.merge(part)
        return out
    raise SpecError(f"{what} space {kind!r} is not supported; use Box, Discrete, MultiBinary, MultiDiscrete or Dict")


def _nan_for_none(value: Any) -> Any:
    if value is None:
        return math.nan
    if isinstance(value, list):
        return [_nan_for_none(v) for v in value]
    return value


def _array(value: Any, dtype: np.dtype) -> np.ndarray:
    try:
        return np.asarray(value, dtype)
    except TypeError:  # strict JSON sends non-finite numbers as null
        return np.asarray(_nan_for_none(value), dtype)


class GymieEnv(RLBaseEnv):
    """An environment served over WebSocket with Gymie's API.

    Args:
        url: the server, ``ws://host:port/gym`` (``wss://`` for TLS).
        env_id: the environment to make on the server, e.g. ``'CartPole-v1'``.
        seed: passed to ``make`` (Gymie seeds the environment with it).
        token: the server's shared token (sent as an ``Authorization: Bearer`` header; a
            ``?token=`` in the URL works too).
        timeout: seconds to wait for each reply before ``RemoteEnvTimeout``.
        connect_timeout: seconds for the WebSocket handshake.
        max_episode_steps: truncate episodes after this many steps (None: the server decides).
        extension: offer the ``aquaml.gymie.v1`` extension (five-part steps, seeded resets); False
            speaks exactly Gymie's protocol, as with the original server.

    Observations: Box as float32, Discrete as an int64 index, MultiBinary as int8, MultiDiscrete as
    int64, Dict as one entry per key. Actions: Box in [-1, 1], rescaled to finite bounds as
    GymnasiumEnv does; Discrete as an index.

    Raises:
        ValueError: a bad argument.
        ConnectionError: the server cannot be reached.
        RemoteEnvError: the server refuses the environment (its close code and reason are in the message).
        SpecError: a space that aquaml cannot take.
    """

    def __init__(self, url: str = "ws://127.0.0.1:5000/gym", env_id: str = "CartPole-v1", *, seed: int | None = None,
                 token: str | None = None, timeout: float = 30.0, connect_timeout: float = 5.0,
                 max_episode_steps: int | None = None, extension: bool = True) -> None:
        super().__init__()
        if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
            raise ValueError(f"url must be ws://host:port/gym or wss://..., got {url!r}")
        if not isinstance(env_id, str) or not env_id:
            raise ValueError(f"env_id must be an environment id such as 'CartPole-v1', got {env_id!r}")
        for name, value in (("timeout", timeout), ("connect_timeout", connect_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if max_episode_steps is not None and (isinstance(max_episode_steps, bool) or
                                              not isinstance(max_episode_steps, int) or max_episode_steps < 1):
            raise ValueError(f"max_episode_steps must be None or an int >= 1, got {max_episode_steps!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be None or an int, got {seed!r}")
        self.url, self.env_id, self.seed, self._token, self._offer = url, env_id, seed, token, bool(extension)
        self.timeout, self.connect_timeout, self.max_episode_steps = float(timeout), float(connect_timeout), max_episode_steps
        self._group = secrets.token_hex(8)
        self._fresh()
        channel = self._attach_channel()
        probe = self._make(channel)
        obs_space = json.loads(channel.call("observation_space", instance_id=probe))
        act_space = json.loads(channel.call("action_space", instance_id=probe))
        channel.call("close", instance_id=probe)
        channel.instances -= 1
        self._set_spaces(obs_space, act_space)

    def _fresh(self) -> None:
        self._channel: _Channel | None = None
        self._instance: str | None = None
        self._ticket: int | None = None
        self._sent: Mapping[str, Any] | None = None
        self._steps = 0

    def _set_spaces(self, obs_space: Mapping[str, Any], act_space: Mapping[str, Any]) -> None:
        self._obs_space, self._act_space = dict(obs_space), dict(act_space)
        self._obs_info = _info_from_space(obs_space, "obs", f"GymieEnv({self.env_id!r}) observation")
        self._dict_obs = obs_space.get("name") == "Dict"
        kind = act_space.get("name")
        if kind == "Box":
            shape = tuple(act_space["shape"])
            low = _array(act_space["low"], np.float64).reshape(shape)
            high = _array(act_space["high"], np.float64).reshape(shape)
            self._low, self._high = low, high
            self._rescale = bool(np.all(np.isfinite(low)) and np.all(np.isfinite(high)))
            self._action_info = DataInfo("action", shape, np.float32,
                                         {"action": {"low": act_space["low"], "high": act_space["high"]}})
            self._discrete = False
        elif kind in ("Discrete", "Discreate"):
            n, start = int(act_space["n"]), int(act_space.get("start", 0))
            self._action_info = DataInfo("action", (), np.int64, {"action": {"n": n, "start": start}})
            self._start, self._discrete = start, True
        else:
            raise SpecError(f"GymieEnv({self.env_id!r}): action space {kind!r} is not supported; use Box or Discrete")

    # --- copies, pickling, display -------------------------------------------------------------
    def __deepcopy__(self, memo: dict) -> "GymieEnv":
        twin = GymieEnv.__new__(GymieEnv)
        twin.__dict__.update({k: v for k, v in self.__dict__.items()
                              if k not in ("_channel", "_instance", "_ticket", "_sent", "_steps")})
        twin._fresh()
        return twin

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(f"{self!r} cannot be pickled: its episode lives on the Gymie server, so a checkpoint holds "
                        "no environment state and a resumed run reconnects and starts new episodes")

    def __repr__(self) -> str:
        return f"GymieEnv({_safe_url(self.url)!r}, {self.env_id!r})"

    @property
    def extension(self) -> bool:
        """True when the server speaks the five-part step (aquaml serve)."""
        return self._attach_channel().extension

    # --- the connection and the instance -------------------------------------------------------
    def _attach_channel(self) -> _Channel:
        channel = self._channel
        if channel is None or channel.failure is not None:
            key = (self.url, self._token, self._group, os.getpid())
            channel = _CHANNELS.get(key)
            if channel is None or channel.failure is not None:
                channel = _Channel(self.url, self._token, self.timeout, self.connect_timeout, self._offer)
                _CHANNELS[key] = channel
            self._channel, self._instance = channel, None
        return channel

    def _make(self, channel: _Channel) -> str:
        params: dict[str, Any] = {"env_id": self.env_id}
        if self.seed is not None:
            params["seed"] = self.seed
        reply = channel.call("make", **params)
        channel.instances += 1
        try:  # Gymie sends the bare id; its README shows {"instance_id": ...}: take either
            parsed = json.loads(reply)
        except ValueError:
            return reply
        return parsed["instance_id"] if isinstance(parsed, dict) else str(parsed)

    def _instance_id(self) -> tuple[_Channel, str]:
        channel = self._attach_channel()
        if self._instance is None:
            self._instance = self._make(channel)
        return channel, self._instance

    # --- RLBaseEnv -----------------------------------------------------------------------------
    def _obs(self, value: Any) -> dict[str, np.ndarray]:
        if self._dict_obs:
            return {n: _array(value[n], self._obs_info.dtype(n)) for n in self._obs_info.names}
        return {"obs": _array(value, self._obs_info.dtype("obs"))}

    def reset(self, seed: int | None = None) -> dict:
        """Start an episode (``seed`` needs aquaml serve; the original Gymie server takes no reset seed)."""
        channel, instance = self._instance_id()
        self._steps = 0
        params: dict[str, Any] = {"instance_id": instance}
        if seed is not None and channel.extension:
            params["seed"] = int(seed)
        elif seed is not None and self.url not in _SEED_WARNED:
            _SEED_WARNED.add(self.url)
            warnings.warn(f"{self!r}: this Gymie server takes no reset seed; episodes start unseeded "
                          "(GymieEnv(seed=...) seeds the environment once, at make)", stacklevel=2)
        return self.initial_obs(self._obs(json.loads(channel.call("reset", **params))))

    def env_action(self, action: Any) -> Any:
        """The policy's action as the JSON the server's environment takes."""
        if self._discrete:
            return int(np.asarray(action).reshape(-1)[0]) + self._start
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(self._action_info.shape("action")), -1.0, 1.0)
        if self._rescale:
            a = self._low + (a + 1.0) * 0.5 * (self._high - self._low)
        return a.tolist()

    def send_step(self, action_dict: Mapping[str, Any]) -> None:
        """Write the step message now; ``receive_step`` reads its reply."""
        if self._instance is None or self._channel is None:
            raise RemoteEnvError(f"{self!r}: step() before reset()")
        if self._ticket is not None:
            raise RemoteEnvError(f"{self!r}: send_step() twice without receive_step()")
        self._ticket = self._channel.send("step", {"instance_id": self._instance,
                                                   "action": self.env_action(action_dict["action"])})
        self._sent = action_dict

    def receive_step(self) -> StepResult:
        if self._ticket is None:
            raise RemoteEnvError(f"{self!r}: receive_step() without send_step()")
        ticket, self._ticket = self._ticket, None
        reply = json.loads(self._channel.receive(ticket, "step"))
        if self._channel.extension:
            obs, reward, terminated, truncated, info = reply
        else:
            obs, reward, done, info = reply
            info = dict(info or {})
            truncated = bool(done) and bool(info.get("TimeLimit.truncated", False))
            terminated = bool(done) and not truncated
        self._steps += 1
        if self.max_episode_steps is not None and self._steps >= self.max_episode_steps and not terminated:
            truncated = True
        sent, self._sent = self._sent, None
        return StepResult(self.check_obs(self._obs(obs), sent),
                          {"total_reward": math.nan if reward is None else float(reward)},
                          bool(terminated), bool(truncated), dict(info or {}))

    def step(self, action_dict: dict) -> StepResult:
        self.send_step(action_dict)
        return self.receive_step()

    def close(self) -> None:
        """Close this copy's instance on the server (the connection closes with its last instance)."""
        channel, instance = self._channel, self._instance
        self._instance = None
        if channel is None or instance is None or channel.failure is not None:
            return
        try:
            channel.call("close", instance_id=instance)
        except RemoteEnvError:
            return
        channel.instances -= 1
        if channel.instances <= 0:
            channel.close()
