"""Environment URLs: a remote environment wherever a gymnasium id is accepted.

- ``nats://[user:password@]host:port/SUBJECT?protocol=aquaml|gym-nats&...`` -> ``NatsEnv``
  (aquaml protocol: SUBJECT is the server's base subject, default ``aquaml.env``; gym-nats: an
  optional prefix of its subjects). ``tls://`` for TLS.
- ``ws://host:port/gym?env=CartPole-v1&...`` -> ``GymieEnv`` (``wss://`` for TLS).

Query parameters: ``timeout``, ``max_episode_steps``, ``token_file`` (a file whose first line is
the token; a ``token=`` works too but lands in logs and config.json), ``connect_timeout``; for
NATS ``protocol``, ``autoreset``, ``nkey_seed``, ``credentials``; for WebSocket ``env``
(required), ``seed`` and ``extension`` (0: exactly Gymie's protocol).
"""
from __future__ import annotations

import re
import urllib.parse
from typing import Any, Callable

from aquaml.envs.base import RLBaseEnv

NATS_SCHEMES = ("nats", "tls")
WS_SCHEMES = ("ws", "wss")
_NATS_PARAMS = {"protocol": str, "timeout": float, "max_episode_steps": int, "autoreset": bool, "token": str,
                "token_file": str, "nkey_seed": str, "credentials": str, "connect_timeout": float}
_WS_PARAMS = {"env": str, "seed": int, "timeout": float, "max_episode_steps": int, "token": str, "token_file": str,
              "connect_timeout": float, "extension": bool}


def is_env_url(text: Any) -> bool:
    """True when ``text`` is a remote environment URL (nats://, tls://, ws://, wss://)."""
    return isinstance(text, str) and urllib.parse.urlsplit(text).scheme in NATS_SCHEMES + WS_SCHEMES


def _value(url: str, key: str, text: str, kind: type) -> Any:
    if kind is bool:
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"{url}: {key}={text!r} is not a boolean (1/0, true/false)")
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{url}: {key}={text!r} is not a {kind.__name__}") from None


def _query(url: str, query: str, accepted: dict[str, type]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, text in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if key not in accepted:
            raise ValueError(f"{_redacted(url)}: unknown parameter {key!r}; accepted: {', '.join(sorted(accepted))}")
        out[key] = _value(_redacted(url), key, text, accepted[key])
    token_file = out.pop("token_file", None)
    if token_file is not None:
        if "token" in out:
            raise ValueError(f"{_redacted(url)}: give token or token_file, not both")
        out["token"] = read_secret(token_file, "token_file")
    return out


def read_secret(path: str, what: str) -> str:
    """The first line of ``path``, stripped.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file's first line is empty.
    """
    try:
        with open(path, encoding="utf-8") as f:
            secret = f.readline().strip()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what}: no such file {path!r}") from None
    if not secret:
        raise ValueError(f"{what}: {path!r} starts with an empty line")
    return secret


def _redacted(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    if "@" in parts.netloc:
        netloc = "***@" + netloc
    query = urllib.parse.urlencode([(k, "***" if k == "token" else v) for k, v in urllib.parse.parse_qsl(parts.query)])
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def env_from_url(url: str) -> RLBaseEnv:
    """The remote environment ``url`` names (connected, its spec read).

    Raises:
        ValueError: an unknown scheme or parameter, or a value of the wrong type.
        ConnectionError, PermissionError, aquaml.envs.nats_link.RemoteEnvError: the far side
            cannot be reached, refuses the credentials, or does not answer.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in NATS_SCHEMES:
        from aquaml.envs.nats_env import NatsEnv
        kwargs = _query(url, parts.query, _NATS_PARAMS)
        protocol = kwargs.pop("protocol", "aquaml")
        subject = parts.path.strip("/") or None
        server = urllib.parse.urlunsplit((parts.scheme, parts.netloc, "", "", ""))
        return NatsEnv(server, subject, protocol=protocol, **kwargs)
    if parts.scheme in WS_SCHEMES:
        from aquaml.envs.gymie_env import GymieEnv
        kwargs = _query(url, parts.query, _WS_PARAMS)
        env_id = kwargs.pop("env", None)
        if not env_id:
            raise ValueError(f"{_redacted(url)}: a WebSocket environment URL needs env=ID, "
                             "e.g. ws://host:5000/gym?env=CartPole-v1")
        server = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path or "/gym", "", ""))
        return GymieEnv(server, env_id, **kwargs)
    raise ValueError(f"{url!r} is not an environment URL; schemes: nats://, tls://, ws://, wss://")


def url_name(url: str) -> str:
    """A run name for ``url``: scheme, host, and subject or environment id, filesystem-safe."""
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    what = query.get("env") if parts.scheme in WS_SCHEMES else (parts.path.strip("/") or query.get("protocol", "aquaml.env"))
    host = parts.netloc.rpartition("@")[2]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{parts.scheme}-{host}-{what}").strip("-")


def make_env(spec: str) -> RLBaseEnv:
    """A gymnasium id or an environment URL as an RLBaseEnv (an Atari id preprocessed, see
    ``aquaml.envs.atari``)."""
    if is_env_url(spec):
        return env_from_url(spec)
    from aquaml.envs.atari import make_env as make_gymnasium_env
    return make_gymnasium_env(spec)


def url_factory(url: str) -> Callable[[], RLBaseEnv]:
    """Fresh copies of the environment ``url`` names (connected once, for its spec)."""
    import copy
    original = env_from_url(url)
    return lambda: copy.deepcopy(original)
