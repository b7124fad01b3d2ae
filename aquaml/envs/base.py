"""The environment interface: RLBaseEnv and the five-part step result.

An environment speaks in dicts of named arrays, described by DataInfo specs:

- ``reset() -> obs_dict``
- ``step(action_dict) -> (obs_dict, reward_dict, terminated, truncated, info)``

``reward_dict`` holds ``total_reward`` (what is optimised) plus any named components, which are
logged separately. ``terminated`` (a true end: no bootstrapping) and ``truncated`` (a time limit:
the value of the final observation is bootstrapped) stay distinct all the way to the loss.
"""
from __future__ import annotations

import abc
import warnings
from typing import Any, Mapping, NamedTuple

import numpy as np

from aquaml.data import EMPTY_INFO, DataInfo, SpecError

_LEGACY_WARNED: set[str] = set()


class StepResult(NamedTuple):
    """One environment transition in the five-part form."""
    obs: dict
    reward: dict
    terminated: bool
    truncated: bool
    info: dict


def normalize_reward(reward: Any, source: str) -> dict[str, float]:
    """Turn a scalar or a dict reward into ``{'total_reward': float, ...components}``."""
    if isinstance(reward, Mapping):
        if "total_reward" not in reward:
            raise SpecError(f"{source}: reward dict must contain 'total_reward', got keys {sorted(reward)}")
        return {k: float(np.asarray(v).reshape(())) for k, v in reward.items()}
    return {"total_reward": float(np.asarray(reward).reshape(()))}


def normalize_step(result: Any, source: str) -> StepResult:
    """Accept a 5-tuple step result, or a legacy 4-tuple with a one-time warning.

    A legacy ``(obs, reward, done, info)`` is split with ``info['TimeLimit.truncated']``: a done
    episode that hit the time limit is truncated, any other done episode is terminated.

    Raises:
        SpecError: the result is neither a 5-tuple nor a 4-tuple.
    """
    if not isinstance(result, tuple) or len(result) not in (4, 5):
        raise SpecError(f"{source}.step() must return (obs, reward, terminated, truncated, info); "
                        f"got {type(result).__name__} of length {len(result) if isinstance(result, tuple) else '-'}")
    if len(result) == 5:
        obs, reward, terminated, truncated, info = result
    else:
        obs, reward, done, info = result
        if source not in _LEGACY_WARNED:
            _LEGACY_WARNED.add(source)
            warnings.warn(f"{source}.step() returns the old 4-tuple (obs, reward, done, info); "
                          "reading info['TimeLimit.truncated'] to tell truncation from termination. "
                          "Return (obs, reward, terminated, truncated, info) instead.", stacklevel=3)
        info = dict(info or {})
        truncated = bool(done) and bool(info.get("TimeLimit.truncated", False))
        terminated = bool(done) and not truncated
    return StepResult(obs, normalize_reward(reward, source), bool(terminated), bool(truncated),
                      dict(info or {}))


class RLBaseEnv(abc.ABC):
    """Base class of aquaml environments (the reference AquaML's interface, on gymnasium semantics).

    A subclass sets ``self._obs_info`` (a DataInfo of the observation entries) in ``__init__`` and
    implements ``reset`` and ``step``. It may set ``self._action_info`` to have the actor's
    ``action`` output checked against it at start-up.

    Recurrent state (for recurrent actors) travels as observation entries: ``initial_obs`` adds
    zeros for them after a reset and ``check_obs`` copies the actor's returned state after a step.
    The starter declares them (``set_recurrent_info``) once it has seen the actor; an environment
    may call the two hooks in ``reset``/``step`` as the reference AquaML's do, but need not: the
    worker fills the entries in the same way either way.
    """

    def __init__(self) -> None:
        self._obs_info: DataInfo | None = None
        self._action_info: DataInfo | None = None
        self._recurrent_info: DataInfo = EMPTY_INFO

    @property
    def obs_info(self) -> DataInfo:
        """The observation spec, recurrent-state entries included."""
        info = getattr(self, "_obs_info", None)
        if not isinstance(info, DataInfo):
            raise SpecError(f"{type(self).__name__} must set self._obs_info = DataInfo(names=..., "
                            f"shapes=..., dtypes=...) in __init__; got {info!r}")
        recurrent = getattr(self, "_recurrent_info", EMPTY_INFO)
        if not len(recurrent):
            return info
        return info.merge(recurrent.select([n for n in recurrent.names if n not in info]))

    @property
    def action_info(self) -> DataInfo | None:
        """The action spec if the environment declares one (GymnasiumEnv always does)."""
        return getattr(self, "_action_info", None)

    def set_recurrent_info(self, info: DataInfo) -> None:
        """Declare the recurrent-state entries that ``initial_obs``/``check_obs`` maintain."""
        self._recurrent_info = info

    def initial_obs(self, obs: dict) -> dict:
        """Add zero recurrent state to a freshly reset observation."""
        recurrent = getattr(self, "_recurrent_info", EMPTY_INFO)
        if len(recurrent):
            obs = {**obs, **recurrent.zeros()}
        return obs

    def check_obs(self, obs: dict, action_dict: Mapping[str, Any]) -> dict:
        """Copy the actor's returned recurrent state into the next observation."""
        recurrent = getattr(self, "_recurrent_info", EMPTY_INFO)
        if len(recurrent):
            obs = {**obs, **{n: np.asarray(action_dict[n]) for n in recurrent.names}}
        return obs

    #: How many copies of this environment a task may step (worker copies and evaluation copies
    #: together); None: any number. An environment that stands for one physical system says 1.
    max_copies: int | None = None

    @abc.abstractmethod
    def reset(self) -> dict:
        """Start an episode; return the first observation dict."""

    @abc.abstractmethod
    def step(self, action_dict: dict) -> tuple:
        """Apply ``action_dict``; return ``(obs, reward_dict, terminated, truncated, info)``."""

    def send_step(self, action_dict: dict) -> None:
        """First half of a step: hand over the action; ``receive_step`` returns the result.

        A worker sends every environment's action before it receives any result, so remote
        environments can send them in one message or overlap their round trips (as
        Stable-Baselines3's ``step_async``/``step_wait``). The default keeps the action and steps
        in ``receive_step``, which is ``step`` for a local environment.
        """
        self.__dict__["_sent_action"] = action_dict

    def receive_step(self) -> tuple:
        """Second half of a step: the result of the action given to ``send_step``.

        Raises:
            RuntimeError: no action was sent since the last ``receive_step``.
        """
        if "_sent_action" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.receive_step() without send_step()")
        return self.step(self.__dict__.pop("_sent_action"))

    def close(self) -> None:
        """Release resources (default: nothing)."""
