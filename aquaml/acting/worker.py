"""Worker: steps environments with the current policy and writes transitions into a buffer slice.

The same code runs in a single process (interleaved with training) and on worker ranks.
A worker holds ``n`` environment copies and acts for all of them with one batched policy call,
which is what keeps TensorFlow's per-call overhead from dominating cheap environments.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import pickle
import warnings
from typing import Callable, Mapping, Sequence

import numpy as np

from aquaml.data import EMPTY_INFO, DataInfo, NonFiniteError
from aquaml.envs import RLBaseEnv, normalize_step

Policy = Callable[[Mapping[str, np.ndarray], bool], dict]
#: Up to this many values per step, a finiteness check sums Python floats (cheaper than a numpy
#: call for a handful of values, measured: 0.5 against 2.4 us for Pendulum's 3).
SMALL_CHECK = 64


@dataclasses.dataclass
class EpisodeStats:
    """What one finished episode reports: summed reward components and its length."""
    rewards: dict[str, float]
    length: int
    terminated: bool

    @property
    def ret(self) -> float:
        return self.rewards["total_reward"]


def _env_part(env: RLBaseEnv, obs_info: DataInfo) -> tuple[DataInfo, DataInfo]:
    """``obs_info`` split into what the environment produces and the recurrent state entries
    (declared with ``env.set_recurrent_info``), which the caller fills in."""
    recurrent = getattr(env, "_recurrent_info", None)
    if recurrent is None or not len(recurrent):
        return obs_info, EMPTY_INFO
    return obs_info.select([n for n in obs_info.names if n not in recurrent]), recurrent


def reset_env(env: RLBaseEnv, obs_info: DataInfo, seed: int | None) -> dict[str, np.ndarray]:
    """Reset ``env`` (passing ``seed`` when its ``reset`` accepts one) and validate the observation.

    Recurrent state entries start at zero whether or not the environment adds them itself.
    """
    if seed is not None and "seed" in inspect.signature(env.reset).parameters:
        obs = env.reset(seed=seed)
    else:
        obs = env.reset()
    if isinstance(obs, tuple) and len(obs) == 2 and isinstance(obs[1], dict):
        obs = obs[0]  # a gymnasium-style (obs, info) reset
    own, recurrent = _env_part(env, obs_info)
    obs = own.validate(obs, what=f"{type(env).__name__}.reset() observation", allow_extra=True,
                       squeeze_leading_one=True)
    return {**obs, **recurrent.zeros()} if len(recurrent) else obs


def step_env(env: RLBaseEnv, obs_info: DataInfo, action_dict: dict, sent: bool = False):
    """Step ``env`` and validate what it returns; accepts the legacy 4-tuple once-warned.

    ``sent``: ``action_dict`` was already given to ``env.send_step``; only receive the result.
    Recurrent state entries of the next observation are the state the actor returned (in
    ``action_dict``), whether or not the environment copies them itself.
    """
    result = normalize_step(env.receive_step() if sent else env.step(action_dict), type(env).__name__)
    own, recurrent = _env_part(env, obs_info)
    obs = own.validate(result.obs, what=f"{type(env).__name__}.step() observation", allow_extra=True,
                       squeeze_leading_one=True)
    if len(recurrent):
        obs.update(recurrent.validate(action_dict, what="the actor's returned recurrent state", allow_extra=True))
    return result._replace(obs=obs)


class Worker:
    """Steps ``envs`` together and appends every transition to ``buffer`` slice ``slice_index``.

    Args:
        envs: environment copies stepped in lock-step (each resets on its own).
        obs_info: the observation spec.
        action_info: the action spec (continuous actions are sampled in [-1, 1] during warm-up).
        policy: ``policy(obs_batch, deterministic) -> {'action': (n, *shape), ...}``.
        buffer: anything with ``write_batch(slice_index, columns)``.
        slice_index: this worker's slice.
        seed: seeds the environments (``seed + i``) and the warm-up action stream.
    """

    def __init__(self, envs: Sequence[RLBaseEnv], obs_info: DataInfo, action_info: DataInfo, policy: Policy,
                 buffer, slice_index: int = 0, seed: int = 0) -> None:
        self.envs = list(envs)
        self.obs_info, self.action_info = obs_info, action_info
        self.policy, self.buffer, self.slice_index = policy, buffer, slice_index
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.obs: dict[str, np.ndarray] | None = None
        self._returns: list[dict[str, float]] = []
        self._lengths = np.zeros(len(self.envs), np.int64)
        self.steps = 0
        self.recurrent = any(len(getattr(e, "_recurrent_info", ())) for e in self.envs)
        own = _env_part(self.envs[0], obs_info)[0] if self.envs else obs_info
        #: the float observations the environments produce (recurrent state comes from the actor),
        #: each with whether a step's values of it are few (checked in Python, see check_step)
        self._float_obs = tuple((n, len(self.envs) * int(np.prod(own.shape(n))) <= SMALL_CHECK)
                                for n in own.names if own.dtype(n).kind == "f")

    def state_dict(self) -> dict:
        """Everything needed to continue stepping exactly from here: counters, RNG state, current
        observations and episode sums, and the environments themselves (pickled mid-episode).

        An environment that cannot be pickled is recorded as None, with a warning: a run resumed
        from this state restarts those episodes instead of continuing them.
        """
        try:
            envs = pickle.dumps(self.envs, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001  (any pickling failure means the same thing here)
            warnings.warn(f"{type(self.envs[0]).__name__} cannot be pickled ({exc}); a resumed run restarts "
                          "its episodes instead of continuing them", stacklevel=2)
            envs = None
        return {"steps": self.steps, "rng": self.rng.bit_generator.state, "envs": envs,
                "obs": None if self.obs is None else {k: v.copy() for k, v in self.obs.items()},
                "returns": [dict(r) for r in self._returns], "lengths": self._lengths.copy()}

    def load_state_dict(self, state: Mapping) -> None:
        """Continue from ``state_dict()``'s result."""
        self.steps = int(state["steps"])
        self.rng.bit_generator.state = state["rng"]
        if state["envs"] is None or state["obs"] is None:
            if state["obs"] is not None:
                warnings.warn(f"the checkpoint holds no state of the {type(self.envs[0]).__name__} environments "
                              "(they could not be pickled); they reconnect or restart and begin new episodes",
                              stacklevel=2)
            self.obs = None  # the next step resets every environment
            return
        envs = pickle.loads(state["envs"])
        if len(envs) != len(self.envs):
            raise ValueError(f"the checkpoint holds {len(envs)} environments per worker, this run has "
                             f"{len(self.envs)} (envs_per_worker changed?)")
        self.envs[:] = envs
        self.obs = {k: v.copy() for k, v in state["obs"].items()}
        self._returns = [dict(r) for r in state["returns"]]
        self._lengths[:] = state["lengths"]

    def check_step(self, next_obs: Mapping[str, np.ndarray], reward: np.ndarray | None,
                   what: str = "observation") -> None:
        """Raise NonFiniteError if a step's rewards ``(n,)`` or a float observation ``(n, ...)`` of
        any of the ``n`` environments holds a NaN or an infinity (before it reaches the buffer).

        One sum over them all is the test (NaN and infinities survive a sum; it is taken in Python
        floats for the rewards and the few values of a small observation, where numpy's per-call
        cost would be most of a step's checking); only a non-finite sum is looked at value by
        value, so that a sum that merely overflowed is not mistaken for one.
        """
        total = 0.0 if reward is None else sum(reward.tolist())
        for name, small in self._float_obs:
            values = next_obs[name]
            total += sum(values.ravel().tolist()) if small else float(np.add.reduce(values, axis=None))
        if not math.isfinite(total):
            if reward is not None:
                self._locate(reward, "reward 'total_reward'")
            for name, _ in self._float_obs:
                self._locate(next_obs[name], f"{what} {name!r}")

    def _locate(self, values: np.ndarray, field: str) -> None:
        bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise self._non_finite(i, field, values[i])

    def _non_finite(self, env_index: int, field: str, value) -> NonFiniteError:
        return NonFiniteError(f"environment {env_index} of worker {self.slice_index} ({type(self.envs[env_index]).__name__}) "
                              f"returned a non-finite {field} at step {self.steps + 1} of this worker: {value!r}. "
                              "Stopped before it reached the replay buffer or the weights: no checkpoint holds it")

    def reset(self) -> None:
        first = [reset_env(env, self.obs_info, self.seed + i) for i, env in enumerate(self.envs)]
        self.obs = {n: np.stack([o[n] for o in first]) for n in self.obs_info.names}
        self.check_step(self.obs, None, "reset() observation")
        self._returns = [{} for _ in self.envs]
        self._lengths[:] = 0

    def random_actions(self) -> dict[str, np.ndarray]:
        """Uniform actions in [-1, 1] (continuous) or over the choices (discrete, per component for
        MultiDiscrete and MultiBinary) for every env."""
        shape = (len(self.envs),) + self.action_info.shape("action")
        meta = self.action_info.meta("action")
        if "n" in meta:
            return {"action": self.rng.integers(0, meta["n"], size=shape)}
        if "nvec" in meta or meta.get("binary"):
            high = np.asarray(meta["nvec"]) if "nvec" in meta else 2
            return {"action": self.rng.integers(0, high, size=shape)}
        return {"action": self.rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)}

    def step(self, random: bool = False, actions: dict | None = None) -> list[EpisodeStats]:
        """One step of every environment; returns the episodes that ended in it.

        ``actions`` (the policy's output for the current observations, computed by the caller)
        replaces the policy call; ``random`` takes uniform actions instead.
        """
        if self.obs is None:
            self.reset()
        if random and self.recurrent:  # the actor still runs, so the state it carries is its own
            out = {**self.policy(self.obs, False), **self.random_actions()}
        elif random:
            out = self.random_actions()
        else:
            out = self.policy(self.obs, False) if actions is None else actions
        n = len(self.envs)
        next_obs = {name: np.empty_like(a) for name, a in self.obs.items()}
        reward = np.empty(n, np.float32)
        terminated = np.empty(n, np.float32)
        truncated = np.empty(n, np.float32)
        finished = []
        reset_obs = {}
        # copies, so an environment that scales its action in place cannot alter what is stored
        sent = [{k: np.array(v[i]) for k, v in out.items()} for i in range(n)]
        for env, action in zip(self.envs, sent):  # all actions out first: remote ones travel together
            env.send_step(action)
        for i, env in enumerate(self.envs):
            result = step_env(env, self.obs_info, sent[i], sent=True)
            for name in self.obs_info.names:
                next_obs[name][i] = result.obs[name]
            reward[i] = result.reward["total_reward"]
            terminated[i], truncated[i] = result.terminated, result.truncated
            sums = self._returns[i]
            for k, v in result.reward.items():
                sums[k] = sums.get(k, 0.0) + v
            self._lengths[i] += 1
            if result.terminated or result.truncated:
                finished.append(EpisodeStats(sums, int(self._lengths[i]), result.terminated))
                self._returns[i], self._lengths[i] = {}, 0
                reset_obs[i] = reset_env(env, self.obs_info, None)
        self.check_step(next_obs, reward)
        # the policy's outputs (action, and e.g. PPO's sample and log_prob): the buffer keeps its
        # columns. The observation comes after them: a recurrent entry stores the state that was
        # the actor's input at this step; the one it returned is in the next_ columns.
        columns = {**out, **self.obs, **{"next_" + k: v for k, v in next_obs.items()},
                   "reward": reward, "terminated": terminated, "truncated": truncated}
        self.buffer.write_batch(self.slice_index, columns)
        for i, obs in reset_obs.items():
            for name in self.obs_info.names:
                next_obs[name][i] = obs[name]
        if reset_obs:
            self.check_step(next_obs, None, "reset() observation")
        self.obs = next_obs
        self.steps += n
        return finished


def evaluate(envs: Sequence[RLBaseEnv], obs_info: DataInfo, policy: Policy, episodes: int, seed: int,
             max_steps: int = 1_000_000) -> dict[str, float]:
    """Run ``episodes`` deterministic episodes; return mean/std/min/max of return and of length.

    The episodes run in waves of ``len(envs)``, every live environment of a wave acting through
    one batched policy call per step; episode ``k`` is reset with ``seed + k``.
    """
    returns, lengths = [], []
    for first in range(0, episodes, len(envs)):
        wave = list(range(first, min(first + len(envs), episodes)))
        obs = {k: reset_env(envs[k - first], obs_info, seed + k) for k in wave}
        total = dict.fromkeys(wave, 0.0)
        length = dict.fromkeys(wave, 0)
        while obs:
            live = list(obs)
            out = policy({n: np.stack([obs[k][n] for k in live]) for n in obs_info.names}, True)
            sent = [{a: np.array(v[i]) for a, v in out.items()} for i in range(len(live))]
            for i, k in enumerate(live):
                envs[k - first].send_step(sent[i])
            for i, k in enumerate(live):
                result = step_env(envs[k - first], obs_info, sent[i], sent=True)
                total[k] += result.reward["total_reward"]
                length[k] += 1
                obs[k] = result.obs
                if result.terminated or result.truncated or length[k] >= max_steps:
                    del obs[k]
        returns += [total[k] for k in wave]
        lengths += [length[k] for k in wave]
    r, n = np.asarray(returns, np.float64), np.asarray(lengths, np.float64)
    return {"eval/return_mean": float(r.mean()), "eval/return_std": float(r.std()),
            "eval/return_min": float(r.min()), "eval/return_max": float(r.max()),
            "eval/length_mean": float(n.mean()), "eval/length_std": float(n.std()),
            "eval/length_min": float(n.min()), "eval/length_max": float(n.max())}
