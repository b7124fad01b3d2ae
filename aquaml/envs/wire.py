"""Binary frames of aquaml's remote-environment protocol: a small header, then raw arrays.

Every message is one frame::

    header   12 bytes  b"AQ", version (u8), kind (u8), count (u32 LE), json_len (u32 LE)
    slots    count x u32 LE             which environments of the session the frame is about
    body     raw little-endian arrays, C order, back to back, in the order their DataInfo lists
    json     json_len bytes of UTF-8 JSON (strict RFC 8259), only when there is something to say

A DataInfo exchanged at connect time says what the body holds, so the arrays need no
per-message description and are read back as numpy views of the received bytes (never pickle).
``ArrayCodec`` encodes and decodes the columns of one DataInfo for ``count`` environments.
"""
from __future__ import annotations

import enum
import json
import math
import struct
from typing import Any, Mapping, Sequence

import numpy as np

from aquaml.data import DataInfo

MAGIC = b"AQ"
VERSION = 1
HEADER = struct.Struct("<2sBBII")
SLOT_DTYPE = np.dtype("<u4")
SEED_DTYPE = np.dtype("<i8")
FLAG_DTYPE = np.dtype("u1")
REWARD_DTYPE = np.dtype("<f8")


class Kind(enum.IntEnum):
    """What a frame is. Requests are answered by a reply of the next kind, or by ERROR."""
    CONTROL = 1        # JSON only: spec, open, add, close, ping, stats and their replies
    STEP = 2           # actions of ``count`` environments
    STEP_REPLY = 3     # their observations, rewards, terminated, truncated, autoreset observations
    RESET = 4          # optional seeds of ``count`` environments
    RESET_REPLY = 5    # their first observations
    ERROR = 6          # JSON {"error", "type", "traceback", "slot"}


_KINDS = {int(k): k for k in Kind}


class WireError(ValueError):
    """A frame is malformed: wrong magic, version or kind, or lengths that do not add up."""


class ArrayCodec:
    """Encode and decode the columns of one DataInfo for a batch of environments.

    Column ``name`` of a batch of ``k`` is an array of shape ``(k, *info.shape(name))``, sent as
    the info's dtype in little-endian byte order.
    """

    def __init__(self, info: DataInfo) -> None:
        self.info = info
        self.names = info.names
        self._dtypes = [info.dtype(n).newbyteorder("<") if info.dtype(n).itemsize > 1 else info.dtype(n)
                        for n in info.names]
        self._shapes = [info.shape(n) for n in info.names]
        self._row_items = [math.prod(s) for s in self._shapes]
        self.row_bytes = sum(d.itemsize * r for d, r in zip(self._dtypes, self._row_items))

    def encode(self, columns: Mapping[str, Any], count: int) -> list[memoryview]:
        """The byte sections of ``columns`` (each ``(count, *shape)``), ready to be joined.

        Raises:
            WireError: a column is missing or does not hold ``count`` rows of the spec's shape.
        """
        parts = []
        for name, dtype, shape in zip(self.names, self._dtypes, self._shapes):
            if name not in columns:
                raise WireError(f"column {name!r} is missing; expected {list(self.names)}")
            arr = np.ascontiguousarray(columns[name], dtype=dtype)
            if arr.shape != (count,) + shape:
                raise WireError(f"column {name!r}: expected shape {(count,) + shape}, got {arr.shape}")
            parts.append(memoryview(arr).cast("B"))
        return parts

    def decode(self, buffer: bytes | memoryview, offset: int, count: int) -> tuple[dict[str, np.ndarray], int]:
        """Read ``count`` rows of every column from ``buffer`` at ``offset``.

        Returns the columns (read-only views into ``buffer``) and the offset after them.

        Raises:
            WireError: ``buffer`` ends before the columns do.
        """
        end = offset + count * self.row_bytes
        if end > len(buffer):
            raise WireError(f"frame too short: {self.info} for {count} environments needs "
                            f"{count * self.row_bytes} bytes at offset {offset}, the frame has {len(buffer)}")
        out = {}
        for name, dtype, shape, items in zip(self.names, self._dtypes, self._shapes, self._row_items):
            out[name] = np.frombuffer(buffer, dtype, count * items, offset).reshape((count,) + shape)
            offset += count * items * dtype.itemsize
        return out, offset


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON data: numpy scalars and arrays become numbers and lists, tuples
    lists, non-finite floats ``None`` (RFC 8259 has no Infinity or NaN), anything else its repr."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            return [json_safe(v) for v in value.tolist()] if value.ndim else json_safe(float(value))
        return value.tolist() if value.dtype.kind in "biuf" else json_safe(value.tolist())
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return repr(value)


def stack_rows(rows: Sequence[np.ndarray]) -> np.ndarray:
    """``rows`` (each ``shape``) stacked into one ``(len(rows), *shape)`` array; one row is a view,
    not a copy (``np.stack`` costs ~5 us even then, a third of a one-environment step's framing)."""
    return np.asarray(rows[0])[None] if len(rows) == 1 else np.stack(rows)


_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))  # one, not one per call


def dumps(value: Any) -> bytes:
    """Strict JSON (no NaN or Infinity) as UTF-8 bytes."""
    return _ENCODER.encode(json_safe(value)).encode()


def frame(kind: Kind, slots: np.ndarray | Sequence[int] = (), body: Sequence[bytes | memoryview] = (),
          meta: Any = None) -> bytes:
    """One frame: the header, ``slots`` as u32, the ``body`` sections, then ``meta`` as JSON."""
    slots = np.asarray(slots, SLOT_DTYPE)
    text = b"" if meta is None else dumps(meta)
    return b"".join([HEADER.pack(MAGIC, VERSION, int(kind), len(slots), len(text)),
                     memoryview(slots).cast("B"), *body, text])


class Frame:
    """A received frame, checked: ``kind``, ``slots`` (u32 view), ``body`` bounds and ``meta``.

    Raises:
        WireError: the header is wrong or the lengths do not fit the buffer.
    """

    __slots__ = ("buffer", "kind", "slots", "body_start", "body_end", "_json")

    def __init__(self, buffer: bytes) -> None:
        if len(buffer) < HEADER.size:
            raise WireError(f"frame of {len(buffer)} bytes is shorter than the {HEADER.size}-byte header")
        magic, version, kind, count, json_len = HEADER.unpack_from(buffer)
        if magic != MAGIC:
            raise WireError(f"not an aquaml frame (starts with {bytes(buffer[:2])!r}, expected {MAGIC!r})")
        if version != VERSION:
            raise WireError(f"frame version {version}, this side speaks version {VERSION}")
        self.kind = _KINDS.get(kind)
        if self.kind is None:
            raise WireError(f"unknown frame kind {kind}; known: {[k.name for k in Kind]}")
        self.body_start = HEADER.size + count * SLOT_DTYPE.itemsize
        self.body_end = len(buffer) - json_len
        if self.body_end < self.body_start:
            raise WireError(f"frame of {len(buffer)} bytes cannot hold {count} slots and {json_len} bytes of JSON")
        self.buffer = buffer
        self.slots = np.frombuffer(buffer, SLOT_DTYPE, count, HEADER.size)
        self._json = json_len

    @property
    def meta(self) -> Any:
        """The JSON section (None when there is none).

        Raises:
            WireError: it is not valid UTF-8 JSON.
        """
        if not self._json:
            return None
        try:
            return json.loads(bytes(self.buffer[self.body_end:]))
        except (UnicodeDecodeError, ValueError) as exc:
            raise WireError(f"the frame's JSON section is not valid JSON ({exc})") from None

    def expect_body(self, end: int) -> None:
        """Check that the body ended exactly at ``end``.

        Raises:
            WireError: there are bytes left over (the two sides disagree on the spec).
        """
        if end != self.body_end:
            raise WireError(f"frame body holds {self.body_end - self.body_start} bytes, the spec accounts "
                            f"for {end - self.body_start}: the two sides disagree on the DataInfo")


class StepBatch:
    """What a step reply holds for ``k`` environments (arrays are views into the frame).

    Attributes:
        obs: the next observation columns, ``(k, *shape)`` each.
        reward: ``total_reward`` of each, ``(k,)`` float64.
        terminated, truncated: ``(k,)`` bool.
        reset_rows: for each of the k, its row in ``reset_obs`` or -1 (not reset by the far side).
        reset_obs: first observations of the environments the far side reset after their episode ended.
        infos, rewards: per-environment info dicts and reward components (index in the frame -> dict),
            only the non-empty ones.
    """

    __slots__ = ("obs", "reward", "terminated", "truncated", "reset_rows", "reset_obs", "infos", "rewards")


#: the rewards and flags of a one-environment STEP_REPLY: total_reward f64, terminated, truncated, reset u8
_ONE_STEP = struct.Struct("<dBBB")

_NO_RESETS = np.full(1024, -1)
_NO_RESETS.setflags(write=False)
_NO_META: dict = {}


class EnvCodec:
    """The STEP and RESET frames of one environment spec (observation and action DataInfo)."""

    def __init__(self, obs_info: DataInfo, action_info: DataInfo) -> None:
        self.obs = ArrayCodec(obs_info)
        self.action = ArrayCodec(action_info)

    def step_request(self, slots: np.ndarray, actions: Mapping[str, np.ndarray]) -> bytes:
        """Actions ``{name: (k, *shape)}`` for the environments ``slots``."""
        return frame(Kind.STEP, slots, self.action.encode(actions, len(slots)))

    def read_step_request(self, received: Frame) -> dict[str, np.ndarray]:
        actions, end = self.action.decode(received.buffer, received.body_start, len(received.slots))
        received.expect_body(end)
        return actions

    def step_reply(self, slots: np.ndarray, obs: Mapping[str, np.ndarray], reward: np.ndarray,
                   terminated: np.ndarray, truncated: np.ndarray, reset_obs: Mapping[str, np.ndarray] | None,
                   reset_mask: np.ndarray, infos: Mapping[int, dict], rewards: Mapping[int, dict]) -> bytes:
        """The reply to a STEP; ``reset_obs`` holds one row per True entry of ``reset_mask``."""
        k = len(slots)
        body = self.obs.encode(obs, k)
        if k == 1:  # the same bytes as below, without four one-element arrays
            resets = int(bool(reset_mask[0]))
            body.append(_ONE_STEP.pack(float(reward[0]), bool(terminated[0]), bool(truncated[0]), resets))
        else:
            body += [memoryview(np.ascontiguousarray(reward, REWARD_DTYPE)).cast("B"),
                     memoryview(np.ascontiguousarray(terminated, FLAG_DTYPE)).cast("B"),
                     memoryview(np.ascontiguousarray(truncated, FLAG_DTYPE)).cast("B"),
                     memoryview(np.ascontiguousarray(reset_mask, FLAG_DTYPE)).cast("B")]
            resets = int(np.count_nonzero(reset_mask))
        if resets:
            body += self.obs.encode(reset_obs, resets)
        meta = None
        if infos or rewards:
            meta = {"info": {str(i): v for i, v in infos.items()}, "reward": {str(i): v for i, v in rewards.items()}}
        return frame(Kind.STEP_REPLY, slots, body, meta)

    def read_step_reply(self, received: Frame) -> StepBatch:
        k = len(received.slots)
        buf = received.buffer
        out = StepBatch()
        out.obs, offset = self.obs.decode(buf, received.body_start, k)
        if offset + k * (REWARD_DTYPE.itemsize + 3) > received.body_end:
            raise WireError(f"step reply too short for the rewards and flags of {k} environments")
        out.reward = np.frombuffer(buf, REWARD_DTYPE, k, offset)
        offset += k * REWARD_DTYPE.itemsize
        flags = np.frombuffer(buf, FLAG_DTYPE, 3 * k, offset).reshape(3, k) != 0
        out.terminated, out.truncated, mask = flags
        offset += 3 * k
        resets = int(np.count_nonzero(mask))
        if resets:
            out.reset_rows = np.where(mask, np.cumsum(mask) - 1, -1)
            out.reset_obs, offset = self.obs.decode(buf, offset, resets)
        else:
            out.reset_rows, out.reset_obs = _NO_RESETS[:k] if k <= len(_NO_RESETS) else np.full(k, -1), {}
        received.expect_body(offset)
        meta = received.meta or _NO_META
        out.infos = {int(i): v for i, v in meta.get("info", {}).items()}
        out.rewards = {int(i): v for i, v in meta.get("reward", {}).items()}
        return out

    def read_one_step_reply(self, received: Frame) -> tuple:
        """A STEP_REPLY of one environment, read as ``read_step_reply`` reads it (the same checks)
        into plain values: ``(obs, total_reward, terminated, truncated, reset_obs, info, rewards)``,
        ``obs`` and ``reset_obs`` (None when the far side did not reset) as ``{name: row view}``.

        Raises:
            WireError: the frame is not about exactly one environment, or its lengths do not fit.
        """
        if len(received.slots) != 1:
            raise WireError(f"expected a step reply of one environment, got {len(received.slots)}")
        buf = received.buffer
        obs, offset = self.obs.decode(buf, received.body_start, 1)
        if offset + _ONE_STEP.size > received.body_end:
            raise WireError("step reply too short for the rewards and flags of one environment")
        reward, terminated, truncated, reset = _ONE_STEP.unpack_from(buf, offset)
        offset += _ONE_STEP.size
        reset_obs = None
        if reset:
            reset_obs, offset = self.obs.decode(buf, offset, 1)
            reset_obs = {n: v[0] for n, v in reset_obs.items()}
        received.expect_body(offset)
        meta = received.meta or _NO_META
        return ({n: v[0] for n, v in obs.items()}, reward, terminated != 0, truncated != 0, reset_obs,
                meta.get("info", _NO_META).get("0", {}), meta.get("reward", _NO_META).get("0"))

    @staticmethod
    def reset_request(slots: np.ndarray, seeds: Sequence[int | None]) -> bytes:
        """Reset the environments ``slots``, each with its seed (None: no seed)."""
        has_seed = np.array([s is not None for s in seeds], FLAG_DTYPE)
        values = np.array([0 if s is None else int(s) for s in seeds], SEED_DTYPE)
        return frame(Kind.RESET, slots, [memoryview(has_seed).cast("B"), memoryview(values).cast("B")])

    @staticmethod
    def read_reset_request(received: Frame) -> list[int | None]:
        k = len(received.slots)
        end = received.body_start + k * (1 + SEED_DTYPE.itemsize)
        received.expect_body(end)
        has_seed = np.frombuffer(received.buffer, FLAG_DTYPE, k, received.body_start)
        values = np.frombuffer(received.buffer, SEED_DTYPE, k, received.body_start + k)
        return [int(v) if h else None for h, v in zip(has_seed, values)]

    def reset_reply(self, slots: np.ndarray, obs: Mapping[str, np.ndarray]) -> bytes:
        return frame(Kind.RESET_REPLY, slots, self.obs.encode(obs, len(slots)))

    def read_reset_reply(self, received: Frame) -> dict[str, np.ndarray]:
        obs, end = self.obs.decode(received.buffer, received.body_start, len(received.slots))
        received.expect_body(end)
        return obs
