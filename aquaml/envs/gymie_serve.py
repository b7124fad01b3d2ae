"""``aquaml serve``: gymnasium environments over WebSocket, speaking Gymie's JSON API.

Existing Gymie clients work unchanged: the same path (``/gym``), methods, parameters, replies
and close codes (1003 for a message that is not JSON or lacks ``method``/``params``, 1007 for an
unknown method, wrong parameters, an unknown instance or environment, a wrong action or an
environment error). Beyond Gymie (docs/remote.md has the full protocol):

- binds 127.0.0.1 unless told otherwise; a shared token (``?token=`` in the URL or an
  ``Authorization: Bearer`` header) is required whenever the address is not loopback, and a
  missing or wrong one closes the connection with 1008;
- instances belong to the connection that made them: at most ``max_instances_per_connection``
  (1008 when exceeded), all closed when it ends;
- strict RFC 8259 JSON both ways: non-finite numbers (infinite Box bounds...) are sent as ``null``,
  ``NaN``/``Infinity`` in a request is a malformed message;
- messages over ``max_message_bytes`` close the connection with 1009;
- MultiDiscrete (and Dict) spaces; ``reset`` takes an optional ``seed``;
- the opt-in extension (WebSocket subprotocol ``aquaml.gymie.v1``): ``step`` answers the five-part
  ``[obs, reward, terminated, truncated, info]``. Without it ``step`` answers Gymie's
  ``[obs, reward, done, info]``, with ``info["TimeLimit.truncated"]`` set when a time limit ended it.

A malformed message closes only its own connection; the server goes on serving everyone else.
"""
from __future__ import annotations

import asyncio
import hmac
import http
import ipaddress
import json
import math
import signal
import sys
import threading
import urllib.parse
import uuid
from typing import Any, Callable, Iterable

import numpy as np

from aquaml.envs.wire import json_safe

EXTENSION = "aquaml.gymie.v1"
PATH = "/gym"
#: close codes (RFC 6455 numbers; Gymie uses 1003 and 1007)
INVALID_MESSAGE, WRONG_REQUEST, UNAUTHORIZED, TOO_BIG = 1003, 1007, 1008, 1009
_REASON_BYTES = 123  # RFC 6455: a close reason fits in 123 bytes of UTF-8


class EnvironmentNotFound(Exception):
    """No environment is registered under the id (Gymie's exception of the same name)."""


class EnvironmentMalformed(Exception):
    """The environment id is not a valid id (Gymie's exception of the same name)."""


class InstanceNotFound(Exception):
    """No instance of this connection has the id."""


class WrongAction(Exception):
    """The action does not fit the instance's action space."""


class _Close(Exception):
    """Close the connection with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(json_safe(value))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _reason(text: str) -> str:
    data = text.encode()[:_REASON_BYTES]
    return data.decode(errors="ignore")


# --- the two documented extension points (Gymie's @override) ------------------------------------
def default_get_env(env_id: str, seed: int | None = None) -> Any:
    """Make the gymnasium environment ``env_id`` (``seed`` seeds its first reset).

    Raises:
        EnvironmentNotFound: the id is not registered (ids that would import a module,
            ``module:Env-v0``, count as not found: a client must not make the server import code).
        EnvironmentMalformed: the id is not a valid id.
    """
    import gymnasium as gym
    if not isinstance(env_id, str) or ":" in env_id:
        raise EnvironmentNotFound(env_id)
    try:
        env = gym.make(env_id)
    except (gym.error.NameNotFound, gym.error.NamespaceNotFound, gym.error.VersionNotFound,
            gym.error.DeprecatedEnv, gym.error.UnregisteredEnv):
        raise EnvironmentNotFound(env_id) from None
    except gym.error.Error:
        raise EnvironmentMalformed(env_id) from None
    return env


def default_process_step(step: tuple) -> tuple:
    """``env.step()``'s result as JSON-ready ``(obs, reward, terminated, truncated, info)``
    (a legacy four-part result is split with ``info['TimeLimit.truncated']``)."""
    if len(step) == 4:
        obs, reward, done, info = step
        info = dict(info or {})
        truncated = bool(done) and bool(info.get("TimeLimit.truncated", False))
        terminated = bool(done) and not truncated
    else:
        obs, reward, terminated, truncated, info = step
    return _json_value(obs), _json_number(reward), bool(terminated), bool(truncated), json_safe(info) if info else {}


HOOKS: dict[str, Callable] = {"get_env": default_get_env, "process_step": default_process_step}


def override(func_name: str) -> Callable[[Callable], Callable]:
    """Replace ``get_env`` or ``process_step`` for servers started afterwards (Gymie's decorator).

    ``get_env(env_id, seed=None)`` returns an environment with gymnasium's ``reset``, ``step``,
    ``observation_space`` and ``action_space``; ``process_step(step)`` turns what its ``step``
    returned into JSON-ready ``(obs, reward, done, info)`` or ``(obs, reward, terminated,
    truncated, info)``.

    Raises:
        ValueError: ``func_name`` is not one of the two.
    """
    if func_name not in HOOKS:
        raise ValueError(f"cannot override {func_name!r}; functions available: {', '.join(HOOKS)}")

    def register(fn: Callable) -> Callable:
        HOOKS[func_name] = fn
        return fn
    return register


# --- JSON of spaces and values ------------------------------------------------------------------
def _json_number(value: Any) -> float | None:
    number = float(value) if isinstance(value, float) else float(np.asarray(value).reshape(()))
    return number if math.isfinite(number) else None


def _json_value(value: Any) -> Any:
    """An observation or action as JSON data; non-finite floats become None."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f" and value.ndim == 1:
            # checked as Python floats: np.isfinite(...).all() costs more than the list for a few entries
            values = value.tolist()
            return values if all(map(math.isfinite, values)) else json_safe(value)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            return json_safe(value)
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return json_safe(value)


def space_info(space: Any) -> dict[str, Any]:
    """Gymie's description of a space (Discrete, Box, MultiBinary), plus MultiDiscrete and Dict."""
    from gymnasium import spaces
    name = type(space).__name__
    info: dict[str, Any] = {"name": name}
    if isinstance(space, spaces.Discrete):
        info["n"] = int(space.n)
        if int(space.start):
            info["start"] = int(space.start)
    elif isinstance(space, spaces.Box):
        info.update(shape=list(space.shape), low=json_safe(space.low.astype(np.float64)),
                    high=json_safe(space.high.astype(np.float64)), dtype=space.dtype.name)
    elif isinstance(space, spaces.MultiBinary):
        info.update(n=json_safe(space.n), shape=list(space.shape))
    elif isinstance(space, spaces.MultiDiscrete):
        info.update(nvec=space.nvec.tolist(), shape=list(space.shape))
        if np.any(space.start):
            info["start"] = space.start.tolist()
    elif isinstance(space, spaces.Dict):
        info["spaces"] = {k: space_info(v) for k, v in space.spaces.items()}
    return info


def _spaces() -> Any:
    """gymnasium.spaces, imported on first use (a module-level import would load gymnasium with aquaml)."""
    global _SPACES
    if _SPACES is None:
        from gymnasium import spaces
        _SPACES = spaces
    return _SPACES


_SPACES = None


def _action(space: Any, action: Any) -> Any:
    """The client's JSON action as the space's type.

    Raises:
        WrongAction: it has the wrong type or shape, or lies outside a discrete space.
    """
    spaces = _spaces()
    if isinstance(space, spaces.Discrete):  # a range check: the environment checks again
        if isinstance(action, bool) or not isinstance(action, int) or not \
                int(space.start) <= action < int(space.start) + int(space.n):
            raise WrongAction(action)
        return np.int64(action)
    if isinstance(space, (spaces.Box, spaces.MultiBinary, spaces.MultiDiscrete)):
        try:
            arr = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            raise WrongAction(action) from None
        if arr.shape != space.shape or not np.isfinite(arr).all():
            raise WrongAction(action)
        if isinstance(space, spaces.Box):
            return arr.astype(space.dtype)
        if not np.array_equal(arr, np.round(arr)):
            raise WrongAction(action)
        out = arr.astype(space.dtype)
        if not space.contains(out):
            raise WrongAction(action)
        return out
    return action


class _Instance:
    __slots__ = ("env", "seed")

    def __init__(self, env: Any, seed: int | None) -> None:
        self.env, self.seed = env, seed


#: method -> (required parameters, optional parameters); anything else is "Parameters are wrong"
_SIGNATURES = {"make": ({"env_id"}, {"seed"}), "step": ({"instance_id", "action"}, {"render"}),
               "reset": ({"instance_id"}, {"seed"}), "close": ({"instance_id"}, set()),
               "observation_space": ({"instance_id"}, set()), "action_space": ({"instance_id"}, set()),
               "action_sample": ({"instance_id"}, set())}


#: method -> (required parameters, every parameter it takes)
_PARAMETERS = {method: (frozenset(required), frozenset(required | optional))
               for method, (required, optional) in _SIGNATURES.items()}


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON (RFC 8259)")


# made once: json.loads/json.dumps with options build a new decoder/encoder per call (~10 us each)
_STRICT_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_STRICT_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


class _Connection:
    """One client's instances and the dispatch of its messages (synchronous: env calls are inline)."""

    def __init__(self, server: "GymieServer", extension: bool) -> None:
        self.server, self.extension = server, extension
        self.instances: dict[str, _Instance] = {}
        self.methods: dict[str, Callable[..., str]] = {
            "make": self.do_make, "step": self.do_step, "reset": self.do_reset, "close": self.do_close,
            "observation_space": self.do_observation_space, "action_space": self.do_action_space,
            "action_sample": self.do_action_sample}

    def handle(self, message: str | bytes) -> str:
        """The reply to one message.

        Raises:
            _Close: the message is malformed or cannot be carried out (code and reason as Gymie's).
        """
        if isinstance(message, bytes):
            try:
                message = message.decode()
            except UnicodeDecodeError:
                raise _Close(INVALID_MESSAGE, "Message is invalid (not UTF-8)") from None
        try:
            data = _STRICT_DECODER.decode(message)
        except (ValueError, RecursionError):
            raise _Close(INVALID_MESSAGE, f"Message `{_short(message)}` is invalid") from None
        if not isinstance(data, dict) or "method" not in data or "params" not in data:
            keys = list(data.keys()) if isinstance(data, dict) else []
            raise _Close(INVALID_MESSAGE, f"Message keys {_short(str(keys))} are missing or invalid")
        method, params = data["method"], data["params"]
        if not isinstance(method, str) or method not in _SIGNATURES:
            raise _Close(WRONG_REQUEST, f"Method `{_short(method)}` not found")
        required, allowed = _PARAMETERS[method]
        if not isinstance(params, dict) or not required <= params.keys() <= allowed:
            raise _Close(WRONG_REQUEST, f"Parameters `{_short(params)}` are wrong")
        try:
            return self.methods[method](**params)
        except InstanceNotFound as exc:
            raise _Close(WRONG_REQUEST, f"Instance `{_short(str(exc))}` not found") from None
        except EnvironmentMalformed as exc:
            raise _Close(WRONG_REQUEST, f"Environment `{_short(str(exc))}` is malformed") from None
        except EnvironmentNotFound as exc:
            raise _Close(WRONG_REQUEST, f"Environment `{_short(str(exc))}` not found") from None
        except WrongAction as exc:
            raise _Close(WRONG_REQUEST, f"Action `{_short(exc.args[0] if exc.args else '')}` is wrong") from None
        except _Close:
            raise
        except Exception as exc:  # noqa: BLE001  (the environment's own failure: reported, the server goes on)
            raise _Close(WRONG_REQUEST, f"Unknown error: {type(exc).__name__}: {exc}") from None

    def _lookup(self, instance_id: Any) -> _Instance:
        instance = self.instances.get(instance_id) if isinstance(instance_id, str) else None
        if instance is None:
            raise InstanceNotFound(instance_id if isinstance(instance_id, str) else _short(instance_id))
        return instance

    def do_make(self, env_id: Any, seed: Any = None) -> str:
        if not isinstance(env_id, str) or (seed is not None and (isinstance(seed, bool) or not isinstance(seed, int))):
            raise _Close(WRONG_REQUEST, f"Parameters `{_short({'env_id': env_id, 'seed': seed})}` are wrong")
        server = self.server
        if len(self.instances) >= server.max_instances_per_connection:
            raise _Close(UNAUTHORIZED, f"Instance limit {server.max_instances_per_connection} per connection reached")
        if server.instance_count() >= server.max_instances:
            raise _Close(UNAUTHORIZED, f"Server instance limit {server.max_instances} reached")
        if server.allowed_envs is not None and env_id not in server.allowed_envs:
            raise EnvironmentNotFound(env_id)
        env = server.get_env(env_id, seed)
        instance_id = uuid.uuid4().hex
        self.instances[instance_id] = _Instance(env, seed)
        return instance_id  # Gymie sends the bare id, not JSON, and its clients read it so

    def do_step(self, instance_id: Any, action: Any, render: Any = False) -> str:
        instance = self._lookup(instance_id)
        value = _action(instance.env.action_space, action)
        obs, reward, terminated, truncated, info = self._processed(instance.env.step(value))
        if self.extension:
            return _dumps([obs, reward, terminated, truncated, info])
        if truncated and not terminated:
            info = {**info, "TimeLimit.truncated": True}
        return _dumps([obs, reward, terminated or truncated, info])

    def _processed(self, step: Any) -> tuple:
        out = self.server.process_step(step)
        if len(out) == 4:  # a Gymie-style hook: (obs, reward, done, info)
            obs, reward, done, info = out
            info = dict(info or {})
            truncated = bool(done) and bool(info.get("TimeLimit.truncated", False))
            return obs, reward, bool(done) and not truncated, truncated, info
        return out

    def do_reset(self, instance_id: Any, seed: Any = None) -> str:
        instance = self._lookup(instance_id)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise _Close(WRONG_REQUEST, f"Parameters `{_short({'instance_id': instance_id, 'seed': seed})}` are wrong")
        if seed is None and instance.seed is not None:
            seed, instance.seed = instance.seed, None  # the seed given to make() seeds the first episode
        result = instance.env.reset(seed=seed) if seed is not None else instance.env.reset()
        obs = result[0] if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict) else result
        return _dumps(_json_value(obs))

    def do_close(self, instance_id: Any) -> str:
        self._lookup(instance_id)
        self.server.close_env(self.instances.pop(instance_id).env)
        return "true"

    def do_observation_space(self, instance_id: Any) -> str:
        return _dumps(space_info(self._lookup(instance_id).env.observation_space))

    def do_action_space(self, instance_id: Any) -> str:
        return _dumps(space_info(self._lookup(instance_id).env.action_space))

    def do_action_sample(self, instance_id: Any) -> str:
        return _dumps(_json_value(self._lookup(instance_id).env.action_space.sample()))

    def close_all(self) -> int:
        for instance in self.instances.values():
            self.server.close_env(instance.env)
        count = len(self.instances)
        self.instances.clear()
        return count


def _dumps(value: Any) -> str:
    return _STRICT_ENCODER.encode(value)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class GymieServer:
    """The WebSocket server behind ``serve`` (see there for the arguments)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5000, *, token: str | None = None,
                 max_instances_per_connection: int = 64, max_instances: int = 1024,
                 max_message_bytes: int = 1 << 20, allowed_envs: Iterable[str] | None = None,
                 get_env: Callable | None = None, process_step: Callable | None = None, verbose: bool = True) -> None:
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be an address such as 127.0.0.1, got {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int in 0..65535 (0: any free port), got {port!r}")
        if token is not None and (not isinstance(token, str) or len(token) < 8):
            raise ValueError("token must be a string of at least 8 characters")
        if token is None and not is_loopback(host):
            raise ValueError(f"binding {host} (not a loopback address) exposes the server to the network: give a "
                             "token (serve(token=...) or aquaml serve --token-file), which clients send as ?token=")
        for name, value in (("max_instances_per_connection", max_instances_per_connection),
                            ("max_instances", max_instances), ("max_message_bytes", max_message_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.host, self.port, self.token = host, port, token
        self.max_instances_per_connection, self.max_instances = max_instances_per_connection, max_instances
        self.max_message_bytes = max_message_bytes
        self.allowed_envs = None if allowed_envs is None else frozenset(allowed_envs)
        self.get_env = get_env or HOOKS["get_env"]
        self.process_step = process_step or HOOKS["process_step"]
        self.verbose = verbose
        self.connections: set[_Connection] = set()
        self.bound_port: int | None = None
        self._stop: asyncio.Event | None = None

    def instance_count(self) -> int:
        return sum(len(c.instances) for c in self.connections)

    def close_env(self, env: Any) -> None:
        try:
            env.close()
        except Exception as exc:  # noqa: BLE001  (a failing close must not keep other instances open)
            self._log(f"closing an environment failed: {type(exc).__name__}: {exc}")

    def _log(self, text: str) -> None:
        if self.verbose:
            print(f"[aquaml serve] {text}", file=sys.stderr, flush=True)

    def _authorized(self, request: Any) -> bool:
        if self.token is None:
            return True
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query)
        given = query.get("token", [""])[-1]
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            given = given or header[len("Bearer "):]
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _process_request(self, connection: Any, request: Any) -> Any:
        path = urllib.parse.urlsplit(request.path).path
        if path == "/stats":
            if not self._authorized(request):
                return connection.respond(http.HTTPStatus.UNAUTHORIZED, "missing or wrong token\n")
            body = json.dumps({"connections": len(self.connections), "instances": self.instance_count()})
            response = connection.respond(http.HTTPStatus.OK, body + "\n")
            response.headers["Content-Type"] = "application/json"
            return response
        if path != PATH:
            return connection.respond(http.HTTPStatus.OK, "Gymie is running...\n")
        return None

    async def _handler(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed
        if not self._authorized(ws.request):
            await ws.close(UNAUTHORIZED, "Unauthorized: missing or wrong token")
            return
        connection = _Connection(self, ws.subprotocol == EXTENSION)
        self.connections.add(connection)
        try:
            async for message in ws:
                try:
                    reply = connection.handle(message)
                except _Close as close:
                    await ws.close(close.code, _reason(close.reason))
                    break
                await ws.send(reply)
        except ConnectionClosed:
            pass  # the client went away (killed, network gone): its instances are closed below
        except Exception as exc:  # noqa: BLE001  (a broken connection ends only itself)
            self._log(f"connection from {ws.remote_address} failed: {type(exc).__name__}: {exc}")
        finally:
            self.connections.discard(connection)
            closed = connection.close_all()
            if closed:
                self._log(f"connection from {ws.remote_address} ended; {closed} instance(s) closed")

    async def run(self, ready: threading.Event | None = None) -> None:
        """Serve until ``stop()``."""
        from websockets.asyncio.server import serve as ws_serve

        def select(_connection: Any, offered: Any) -> str | None:
            return EXTENSION if EXTENSION in offered else None

        self._stop = asyncio.Event()
        async with ws_serve(self._handler, self.host, self.port, process_request=self._process_request,
                            select_subprotocol=select, max_size=self.max_message_bytes, compression=None,
                            ping_interval=20, ping_timeout=20) as server:
            self.bound_port = server.sockets[0].getsockname()[1]
            # printed even when quiet: it says where the server is, and that it is ready
            print(f"[aquaml serve] serving gymnasium environments on ws://{self.host}:{self.bound_port}{PATH}"
                  f"{' (token required)' if self.token else ''}", file=sys.stderr, flush=True)
            if ready is not None:
                ready.set()
            await self._stop.wait()
        for connection in list(self.connections):
            connection.close_all()

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()


def serve(host: str = "127.0.0.1", port: int = 5000, *, token: str | None = None,
          max_instances_per_connection: int = 64, max_instances: int = 1024, max_message_bytes: int = 1 << 20,
          allowed_envs: Iterable[str] | None = None, get_env: Callable | None = None,
          process_step: Callable | None = None, verbose: bool = True, ready: threading.Event | None = None) -> None:
    """Serve gymnasium environments over WebSocket with Gymie's API until SIGINT/SIGTERM (blocks).

    Clients connect to ``ws://host:port/gym`` (``?token=...`` when a token is set).

    Args:
        host: the address to bind; anything but loopback needs ``token``.
        port: the TCP port (0: any free one).
        token: the shared secret clients must present (at least 8 characters).
        max_instances_per_connection: instances one connection may hold (close code 1008 beyond).
        max_instances: instances alive at once over all connections.
        max_message_bytes: largest message accepted (close code 1009 beyond).
        allowed_envs: the environment ids clients may make (None: any registered gymnasium id).
        get_env, process_step: replace the two hooks for this server (see ``override``).
        verbose: log connections that held instances, and failures, to stderr (the line saying
            where the server listens is printed either way).
        ready: set once the server listens.

    Raises:
        ValueError: a bad argument, or a non-loopback ``host`` without ``token``.
        OSError: the address is in use.
    """
    server = GymieServer(host, port, token=token, max_instances_per_connection=max_instances_per_connection,
                         max_instances=max_instances, max_message_bytes=max_message_bytes, allowed_envs=allowed_envs,
                         get_env=get_env, process_step=process_step, verbose=verbose)

    async def main() -> None:
        if threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, server.stop)
        await server.run(ready)

    from aquaml.envs.nats_link import run_async
    run_async(main())
