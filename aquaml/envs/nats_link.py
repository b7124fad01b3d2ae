"""The NATS side of remote environments: connection options and authentication, one asyncio loop
per process, and shared connections with request/reply that names the subject when it fails.

nats-py is asynchronous; RLBaseEnv is not. Every NatsEnv of a process shares one event loop,
run by the thread that makes a request (``run_until_complete``: no thread hop per step, which
costs ~0.1 ms here) and, while no request is running, for a moment every ``TICK`` seconds by a
daemon thread, so that heartbeats, server PINGs and reconnects go on while the learner trains.
The two never run the loop at once (a lock hands it over).
"""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import dataclasses
import os
import random
import threading
import time
from typing import Any, Awaitable, Callable, TypeVar

#: seconds between two moments in which the ticker thread runs the loop while no request does
TICK = 0.2

T = TypeVar("T")


class RemoteEnvError(RuntimeError):
    """The far side of a remote environment reported an error, or cannot be used."""


class RemoteEnvTimeout(RemoteEnvError, TimeoutError):
    """No reply within the request timeout."""


def _nats():
    try:
        import nats
    except ImportError:  # pragma: no cover - the remote extra is part of the normal install
        raise ImportError("NATS environments need nats-py: pip install 'aquaml[remote]' (or pip install nats-py)") from None
    return nats


@dataclasses.dataclass(frozen=True)
class NatsOptions:
    """How to reach and authenticate with a NATS server (the server's configuration decides which).

    Args:
        url: ``nats://host:port`` (``tls://`` for TLS); user and password may be in it
            (``nats://user:password@host:port``), as may a token (``nats://token@host:port``).
        user, password: user/password authentication.
        token: token authentication.
        nkey_seed: path of an NKey seed file (``SU...``), for NKey authentication.
        credentials: path of a ``.creds`` file (JWT and NKey seed), for decentralised authentication.
        connect_timeout: seconds to keep trying to connect (with backoff) before giving up.
        reconnect_wait: first delay between reconnect attempts after the connection drops; it
            doubles with each failed attempt up to ``reconnect_max_wait``.
        reconnect_max_wait: longest delay between reconnect attempts.
        name: the connection's name in the server's monitoring.

    Raises:
        ValueError: the URL's scheme is not nats:// or tls://, or a number is not positive.
        FileNotFoundError: ``nkey_seed`` or ``credentials`` does not exist.
    """

    url: str = "nats://127.0.0.1:4222"
    user: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    token: str | None = dataclasses.field(default=None, repr=False)
    nkey_seed: str | None = None
    credentials: str | None = None
    connect_timeout: float = 5.0
    reconnect_wait: float = 0.25
    reconnect_max_wait: float = 5.0
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith(("nats://", "tls://")):
            raise ValueError(f"url must be nats://host:port or tls://host:port, got {self.url!r}")
        for field in ("connect_timeout", "reconnect_wait", "reconnect_max_wait"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{field} must be a positive number of seconds, got {value!r}")
        for field in ("nkey_seed", "credentials"):
            path = getattr(self, field)
            if path is not None and not os.path.isfile(path):
                raise FileNotFoundError(f"{field}: no such file {path!r}")
        if (self.user is None) != (self.password is None):
            raise ValueError("user and password go together; got only "
                             f"{'user' if self.user is not None else 'password'}")

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``nats.connect`` for these options."""
        kwargs: dict[str, Any] = {"servers": [self.url], "connect_timeout": max(self.connect_timeout, 0.5),
                                  "allow_reconnect": False, "max_reconnect_attempts": 1, "reconnect_time_wait": 0.05,
                                  "reconnect_to_server_handler": self._backoff, "name": self.name}
        for key in ("user", "password", "token"):
            if getattr(self, key) is not None:
                kwargs[key] = getattr(self, key)
        if self.nkey_seed is not None:
            kwargs["nkeys_seed"] = self.nkey_seed
        if self.credentials is not None:
            kwargs["user_credentials"] = self.credentials
        return kwargs

    def _backoff(self, servers: list, info: dict) -> tuple[Any, float]:
        """nats-py's reconnect hook: the first server, after an exponential delay with jitter."""
        attempts = servers[0].reconnects if servers else 0
        delay = min(self.reconnect_wait * 2 ** min(attempts, 16), self.reconnect_max_wait)
        return (servers[0] if servers else None), delay * random.uniform(0.8, 1.2)


async def connect(options: NatsOptions, error_cb: Callable[[Exception], Awaitable[None]] | None = None) -> Any:
    """A connected nats-py client, retried with backoff for ``options.connect_timeout`` seconds.

    Raises:
        PermissionError: the server refused the credentials.
        ConnectionError: the server could not be reached in time.
    """
    nats = _nats()
    deadline = time.monotonic() + options.connect_timeout
    delay = options.reconnect_wait

    async def quiet(exc: Exception) -> None:
        pass

    while True:
        nc = nats.NATS()
        try:
            remaining = max(deadline - time.monotonic(), 0.5)
            await asyncio.wait_for(nc.connect(**options.connect_kwargs(), error_cb=error_cb or quiet), remaining)
            # an attempt runs without nats-py's own retry loop (which retries a refused password, and
            # an absent server up to 60 times 2 s); once connected, a dropped connection is
            # reconnected for good, with the backoff of reconnect_to_server_handler
            nc.options["allow_reconnect"] = True
            nc.options["max_reconnect_attempts"] = -1
            return nc
        except Exception as exc:  # noqa: BLE001  (nats-py raises several kinds for one failed attempt)
            await _close_quietly(nc)
            text = str(exc) or type(exc).__name__
            if "authorization" in text.lower() or "authentication" in text.lower():
                raise PermissionError(f"the NATS server at {_safe_url(options.url)} refused the credentials "
                                      f"({text}); check user/password, token, nkey_seed or credentials") from None
            if time.monotonic() + delay > deadline:
                raise ConnectionError(f"cannot reach the NATS server at {_safe_url(options.url)} within "
                                      f"{options.connect_timeout:g} s ({type(exc).__name__}: {text})") from None
        await asyncio.sleep(delay)
        delay = min(delay * 2, options.reconnect_max_wait)


async def _close_quietly(nc: Any) -> None:
    try:
        await asyncio.wait_for(nc.close(), 1.0)
    except Exception:  # noqa: BLE001  (closing a half-open client may fail in any way; nothing to keep)
        pass


def _safe_url(url: str) -> str:
    """``url`` without the password or token it may carry."""
    scheme, sep, rest = url.partition("://")
    at = rest.rfind("@")
    return f"{scheme}{sep}***@{rest[at + 1:]}" if at >= 0 else url


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when it is installed (the remote extra installs it), else asyncio's.

    For a loop that runs for good (servers): a request/reply round trip through nats-py takes
    about 7 loop iterations on each side, each cheaper on uvloop.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_async(main: Awaitable[T]) -> T:
    """``asyncio.run(main)`` on ``new_event_loop()``'s loop (servers block in this)."""
    loop = new_event_loop()
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


class LoopRunner:
    """This process's asyncio loop for NATS, run by one thread at a time (see the module doc)."""

    def __init__(self) -> None:
        # asyncio's loop, not uvloop's: this loop is run once per request, and uvloop run from the
        # main thread makes and closes a signal self-pipe at every run (about 10 system calls,
        # 42 us against asyncio's 12 us per run here); a NATS echo round trip measured 301 us
        # against uvloop's 363 us (median of 5 interleaved rounds, loopback)
        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._closed = False
        self._helper: concurrent.futures.ThreadPoolExecutor | None = None
        self.links: dict[NatsOptions, Link] = {}
        self._ticker = threading.Thread(target=self._tick, name="aquaml-nats-loop", daemon=True)
        self._ticker.start()

    def run(self, coro: Awaitable[T]) -> T:
        """Run ``coro`` on the loop from this thread and return its result."""
        if asyncio._get_running_loop() is None:  # (get_running_loop() raises instead: ~1 us a step)
            with self._lock:
                return self.loop.run_until_complete(coro)
        # this thread already runs another loop (a notebook, an async application): use a helper
        if self._helper is None:
            self._helper = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="aquaml-nats")
        return self._helper.submit(self._run_locked, coro).result()

    def _run_locked(self, coro: Awaitable[T]) -> T:
        with self._lock:
            return self.loop.run_until_complete(coro)

    def _tick(self) -> None:
        while not self._closed:
            time.sleep(TICK)
            if self._lock.acquire(blocking=False):
                try:
                    if not self._closed:
                        for _ in range(3):  # timers due, then what they scheduled, then the flush
                            self.loop.call_soon(self.loop.stop)
                            self.loop.run_forever()
                finally:
                    self._lock.release()

    def link(self, options: NatsOptions) -> "Link":
        """The shared connection for ``options``, connected on first use."""
        link = self.links.get(options)
        if link is None or link.closed:
            link = Link(options, self)
            self.run(link.start())
            self.links[options] = link
        return link

    def close(self) -> None:
        """Close every connection (best effort, at exit)."""
        if self._closed:
            return
        try:
            for link in list(self.links.values()):
                self.run(link.stop())
        finally:
            self._closed = True


_RUNNER: LoopRunner | None = None
_RUNNER_LOCK = threading.Lock()


def runner() -> LoopRunner:
    """This process's LoopRunner (a forked child gets its own)."""
    global _RUNNER
    with _RUNNER_LOCK:
        if _RUNNER is None or _RUNNER.pid != os.getpid():
            _RUNNER = LoopRunner()
            atexit.register(_RUNNER.close)
        return _RUNNER


class Link:
    """One connection to one NATS server, shared by the remote environments of a process.

    Requests use one reply subscription (``<inbox>.*``) and a future per request, so a request is
    one publish and one delivery, and ``request`` names the subject when there is no answer.
    """

    def __init__(self, options: NatsOptions, owner: LoopRunner) -> None:
        self.options, self.owner = options, owner
        self.nc: Any = None
        self.closed = False
        self._inbox = ""
        self._serial = 0
        self._waiting: dict[str, asyncio.Future] = {}
        self.tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        self.nc = await connect(self.options)
        self._inbox = self.nc.new_inbox()
        await self.nc.subscribe(self._inbox + ".*", cb=self._deliver)

    async def stop(self) -> None:
        self.closed = True
        for task in self.tasks:
            task.cancel()
        if self.nc is not None:
            await _close_quietly(self.nc)

    async def _deliver(self, msg: Any) -> None:
        future = self._waiting.pop(msg.subject, None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def request(self, subject: str, payload: bytes, timeout: float, patient: bool = False) -> bytes:
        """Publish ``payload`` on ``subject`` and return the reply's data.

        ``patient``: when nobody subscribes to ``subject``, ask again (with backoff) until
        ``timeout``: after the NATS server restarts, the far side may resubscribe a moment after
        this side reconnected.

        Raises:
            RemoteEnvTimeout: no reply within ``timeout`` seconds.
            RemoteEnvError: nobody subscribes to ``subject``, or the connection is closed.
        """
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            try:
                return await self._request_once(subject, payload, max(deadline - time.monotonic(), 0.001), timeout)
            except _NoResponders as exc:
                if not patient or time.monotonic() + delay >= deadline:
                    raise RemoteEnvError(str(exc)) from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _request_once(self, subject: str, payload: bytes, timeout: float, stated: float) -> bytes:
        """One request, waiting ``timeout`` seconds (what is left of the ``stated`` timeout a
        timeout error names)."""
        self._serial += 1
        reply = f"{self._inbox}.{self._serial}"
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting[reply] = future
        timer = loop.call_later(timeout, _expire, future)
        try:
            await self.nc.publish(subject, payload, reply=reply)
            msg = await future
        except asyncio.TimeoutError:
            raise RemoteEnvTimeout(f"no reply on NATS subject {subject!r} within {stated:g} s (is the far side "
                                   f"running and its environment responsive? a slower one needs a longer "
                                   f"timeout=)") from None
        except _nats().errors.ConnectionClosedError:
            raise RemoteEnvError(f"the connection to {_safe_url(self.options.url)} is closed; cannot send to "
                                 f"{subject!r}") from None
        finally:
            timer.cancel()
            self._waiting.pop(reply, None)
        if not msg.data and msg.headers and msg.headers.get("Status") == "503":
            raise _NoResponders(f"nobody answers on NATS subject {subject!r} at {_safe_url(self.options.url)} "
                                "(is the far side running, on this subject and account?)")
        return msg.data

    def sync_request(self, subject: str, payload: bytes, timeout: float, patient: bool = False) -> bytes:
        """``request`` from synchronous code."""
        return self.owner.run(self.request(subject, payload, timeout, patient))


class _NoResponders(Exception):
    """The NATS server says nobody subscribes to the subject (status 503)."""


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(asyncio.TimeoutError())
