"""DataInfo: an immutable, ordered spec of named arrays.

A DataInfo describes observations (several named inputs per step), actor outputs, rewards and
every buffer column. Shapes are per sample: an observation ``obs`` of shape ``(3,)`` is stored in a
buffer as ``(capacity, 3)`` and fed to a model as ``(batch, 3)``.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

Shape = tuple[int, ...]


class SpecError(ValueError):
    """A value does not match a DataInfo (wrong name, shape or dtype)."""


class NonFiniteError(ValueError):
    """A NaN or an infinity where training needs finite numbers (an observation, a reward, a loss)."""


def _as_shape(shape: Any, where: str) -> Shape:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    try:
        out = tuple(int(d) for d in shape)
    except TypeError:
        raise SpecError(f"{where}: a shape must be a tuple of ints like (3,), got {shape!r}") from None
    if any(d < 0 for d in out):
        raise SpecError(f"{where}: shape {out} has a negative dimension")
    return out


def _is_single_shape(shapes: Any) -> bool:
    return isinstance(shapes, (int, np.integer)) or (
        isinstance(shapes, (tuple, list)) and all(isinstance(d, (int, np.integer)) for d in shapes))


def _dtype_name(dtype: np.dtype) -> str:
    return np.dtype(dtype).name


def _compact_bound(bound: Any) -> Any:
    """A Box bound as stored: one number when it repeats over more than one element (an image's 0
    and 255), else as given (a nested list, or a number)."""
    array = np.asarray(bound)
    if array.size > 1 and np.all(array == array.flat[0]):
        return array.flat[0].item()
    return array.tolist() if isinstance(bound, np.ndarray) else bound


def box_bounds(low: np.ndarray, high: np.ndarray) -> dict[str, Any]:
    """``{'low': ..., 'high': ...}`` meta of a Box, each stored once when it repeats."""
    return {"low": _compact_bound(low), "high": _compact_bound(high)}


class DataInfo:
    """An immutable, ordered mapping ``name -> (shape, dtype)``.

    Args:
        names: the array names in order (a single string is one name).
        shapes: one shape per name; for a single name a single shape such as ``(3,)`` is accepted.
        dtypes: one dtype for all names, or one per name. Defaults to float32.
        meta: optional per-name facts that are not shape or dtype, kept for ``to_space``:
            ``{'low': [...], 'high': [...]}`` for bounded boxes (a number where the bound is the same
            everywhere), ``{'n': k}`` for a discrete choice.

    Raises:
        SpecError: names repeat, counts differ, or a shape or dtype is not understood.
    """

    __slots__ = ("_names", "_shapes", "_dtypes", "_meta")

    def __init__(self, names: str | Sequence[str], shapes: Any, dtypes: Any = np.float32,
                 meta: Mapping[str, Mapping[str, Any]] | None = None):
        names = (names,) if isinstance(names, str) else tuple(names)
        for n in names:
            if not isinstance(n, str) or not n:
                raise SpecError(f"DataInfo names must be non-empty strings, got {n!r}")
        if len(set(names)) != len(names):
            raise SpecError(f"DataInfo names repeat: {names}")
        if len(names) == 1 and _is_single_shape(shapes):
            shapes = (shapes,)
        shapes = tuple(shapes)
        if len(shapes) != len(names):
            raise SpecError(f"DataInfo got {len(names)} names {names} but {len(shapes)} shapes {shapes}")
        if isinstance(dtypes, (list, tuple)):
            if len(dtypes) != len(names):
                raise SpecError(f"DataInfo got {len(names)} names but {len(dtypes)} dtypes")
        else:
            dtypes = (dtypes,) * len(names)
        try:
            dts = tuple(np.dtype(d) for d in dtypes)
        except TypeError as err:
            raise SpecError(f"DataInfo dtypes not understood: {dtypes!r} ({err})") from None
        object.__setattr__(self, "_names", names)
        object.__setattr__(self, "_shapes", {n: _as_shape(s, f"DataInfo shape of {n!r}")
                                             for n, s in zip(names, shapes)})
        object.__setattr__(self, "_dtypes", dict(zip(names, dts)))
        unknown = set(meta or {}) - set(names)
        if unknown:
            raise SpecError(f"DataInfo meta names {sorted(unknown)} are not among {names}")
        object.__setattr__(self, "_meta", {n: {k: _compact_bound(b) if k in ("low", "high") else b
                                                   for k, b in v.items()} for n, v in (meta or {}).items()})

    def __setattr__(self, key, value):
        raise AttributeError("DataInfo is immutable; use add_info() or select() to derive a new one")

    def __reduce__(self):
        return DataInfo.from_dict, (self.to_dict(),)

    def __copy__(self) -> "DataInfo":
        return self

    def __deepcopy__(self, memo: dict) -> "DataInfo":
        return self

    # --- mapping-like access -------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    @property
    def shapes(self) -> dict[str, Shape]:
        return dict(self._shapes)

    @property
    def dtypes(self) -> dict[str, np.dtype]:
        return dict(self._dtypes)

    def shape(self, name: str) -> Shape:
        return self._shapes[self._check_name(name)]

    def dtype(self, name: str) -> np.dtype:
        return self._dtypes[self._check_name(name)]

    def meta(self, name: str) -> dict[str, Any]:
        return dict(self._meta.get(self._check_name(name), {}))

    def _check_name(self, name: str) -> str:
        if name not in self._shapes:
            raise KeyError(f"{name!r} is not in this DataInfo; names are {self._names}")
        return name

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._shapes

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DataInfo) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __repr__(self) -> str:
        body = ", ".join(f"{n}: {self._shapes[n]} {_dtype_name(self._dtypes[n])}" for n in self._names)
        return f"DataInfo({body})"

    # --- derivation ----------------------------------------------------------------------------
    def add_info(self, names: str | Sequence[str], shapes: Any, dtypes: Any = np.float32,
                 meta: Mapping[str, Mapping[str, Any]] | None = None) -> "DataInfo":
        """Return a new DataInfo with ``names`` appended (same argument rules as the constructor)."""
        extra = DataInfo(names, shapes, dtypes, meta)
        return self.merge(extra)

    def merge(self, other: "DataInfo") -> "DataInfo":
        """Concatenate two specs; a name present in both is an error."""
        clash = [n for n in other.names if n in self]
        if clash:
            raise SpecError(f"names {clash} are already in {self!r}")
        src = {**{n: self for n in self._names}, **{n: other for n in other.names}}
        names = self._names + other.names
        return DataInfo(names, [src[n].shape(n) for n in names], [src[n].dtype(n) for n in names],
                        {**self._meta, **other._meta})

    def select(self, names: Iterable[str]) -> "DataInfo":
        """The sub-spec of ``names``, in the order given."""
        names = tuple(self._check_name(n) for n in names)
        return DataInfo(names, [self._shapes[n] for n in names], [self._dtypes[n] for n in names],
                        {n: self._meta[n] for n in names if n in self._meta})

    def prefixed(self, prefix: str) -> "DataInfo":
        """The same spec with every name prefixed, e.g. ``next_obs`` from ``obs``."""
        return DataInfo([prefix + n for n in self._names], [self._shapes[n] for n in self._names],
                        [self._dtypes[n] for n in self._names],
                        {prefix + n: m for n, m in self._meta.items()})

    # --- values --------------------------------------------------------------------------------
    def zeros(self, batch: Shape = ()) -> dict[str, np.ndarray]:
        """A dict of zero arrays, each of shape ``batch + shape``."""
        return {n: np.zeros(tuple(batch) + self._shapes[n], self._dtypes[n]) for n in self._names}

    def validate(self, data: Mapping[str, Any], *, what: str = "data", batch_dims: int = 0,
                 allow_extra: bool = False, squeeze_leading_one: bool = False) -> dict[str, np.ndarray]:
        """Check ``data`` against this spec and return it as arrays of the spec's dtypes.

        Args:
            data: a mapping from every name to an array-like.
            what: how the data is called in messages (e.g. ``"observation from reset()"``).
            batch_dims: number of leading batch dimensions expected before each shape.
            allow_extra: accept (and drop) names not in the spec.
            squeeze_leading_one: accept an extra leading dimension of size 1 (the reference
                AquaML's environments return ``(1, 3)`` for a ``(3,)`` observation) and drop it.

        Raises:
            SpecError: a name is missing or unknown, a shape differs, or a value cannot be
                converted to the dtype without changing its kind (float into an int field).
        """
        if not isinstance(data, Mapping):
            raise SpecError(f"{what}: expected a dict with keys {self._names}, got {type(data).__name__}")
        missing = [n for n in self._names if n not in data]
        if missing:
            raise SpecError(f"{what}: missing {missing}; expected keys {self._names}, got {tuple(data)}")
        if not allow_extra:
            extra = [k for k in data if k not in self._shapes]
            if extra:
                raise SpecError(f"{what}: unexpected keys {extra}; expected keys {self._names}")
        return {n: self._validate_one(n, data[n], what, batch_dims, squeeze_leading_one)
                for n in self._names}

    def _validate_one(self, name: str, value: Any, what: str, batch_dims: int,
                      squeeze_leading_one: bool) -> np.ndarray:
        arr = np.asarray(value)
        want_shape, want_dtype = self._shapes[name], self._dtypes[name]
        if squeeze_leading_one and arr.ndim == batch_dims + len(want_shape) + 1 \
                and arr.shape[batch_dims] == 1:
            arr = arr.reshape(arr.shape[:batch_dims] + arr.shape[batch_dims + 1:])
        if arr.ndim != batch_dims + len(want_shape) or arr.shape[batch_dims:] != want_shape:
            batch = "(batch..., " * bool(batch_dims)
            raise SpecError(f"{what}[{name!r}]: expected shape {batch}{want_shape}"
                            f"{')' * bool(batch_dims)} {_dtype_name(want_dtype)}, "
                            f"got shape {arr.shape} {_dtype_name(arr.dtype)}")
        if arr.dtype != want_dtype:
            if not np.can_cast(arr.dtype, want_dtype, casting="same_kind") and not (
                    arr.dtype.kind in "biu" and want_dtype.kind in "biuf"):
                raise SpecError(f"{what}[{name!r}]: expected dtype {_dtype_name(want_dtype)}, "
                                f"got {_dtype_name(arr.dtype)} (shape {arr.shape})")
            arr = arr.astype(want_dtype)
        return arr

    # --- conversions ---------------------------------------------------------------------------
    def tensor_specs(self, batch_shape: Sequence[int | None] = (None,)) -> dict[str, Any]:
        """``tf.TensorSpec`` per name with ``batch_shape`` prepended (for tf.function signatures)."""
        import tensorflow as tf  # here, so that specs can be built and checked without loading TensorFlow
        return {n: tf.TensorSpec(tuple(batch_shape) + self._shapes[n], tf.as_dtype(self._dtypes[n]), name=n)
                for n in self._names}

    @classmethod
    def from_space(cls, space: Any, name: str = "obs") -> "DataInfo":
        """Build a spec from a gymnasium space.

        Box, Discrete and MultiBinary become one entry called ``name``; a Dict space becomes one
        entry per key (nested Dicts are joined with ``/``). Discrete becomes an int64 scalar.

        Raises:
            SpecError: the space type is not supported.
        """
        from gymnasium import spaces
        if isinstance(space, spaces.Dict):
            infos = [cls.from_space(sub, f"{name}/{key}" if name != "obs" and name else key)
                     for key, sub in space.spaces.items()]
            out = infos[0]
            for info in infos[1:]:
                out = out.merge(info)
            return out
        if isinstance(space, spaces.Box):
            meta = {}
            if np.all(np.isfinite(space.low)) or np.all(np.isfinite(space.high)):
                meta = {name: box_bounds(space.low, space.high)}
            return cls(name, space.shape, space.dtype, meta)
        if isinstance(space, spaces.Discrete):
            return cls(name, (), np.int64, {name: {"n": int(space.n), "start": int(space.start)}})
        if isinstance(space, spaces.MultiBinary):
            return cls(name, space.shape, np.int8, {name: {"binary": True}})
        raise SpecError(f"gymnasium space {type(space).__name__} for {name!r} is not supported; "
                        "use Box, Discrete, MultiBinary or a Dict of those")

    def to_space(self) -> Any:
        """The gymnasium space this spec describes: one space for one name, else a Dict space."""
        from gymnasium import spaces

        def one(n: str):
            meta = self._meta.get(n, {})
            if "n" in meta:
                return spaces.Discrete(meta["n"], start=meta.get("start", 0))
            if meta.get("binary"):
                return spaces.MultiBinary(list(self._shapes[n]) if len(self._shapes[n]) > 1
                                          else self._shapes[n][0])
            low = np.asarray(meta.get("low", -np.inf), dtype=self._dtypes[n])
            high = np.asarray(meta.get("high", np.inf), dtype=self._dtypes[n])
            return spaces.Box(low=np.broadcast_to(low, self._shapes[n]),
                              high=np.broadcast_to(high, self._shapes[n]), dtype=self._dtypes[n])

        if len(self._names) == 1:
            return one(self._names[0])
        return spaces.Dict({n: one(n) for n in self._names})

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self._names),
                "shapes": [list(self._shapes[n]) for n in self._names],
                "dtypes": [_dtype_name(self._dtypes[n]) for n in self._names],
                "meta": {n: self._meta[n] for n in self._names if n in self._meta}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DataInfo":
        try:
            return cls(d["names"], [tuple(s) for s in d["shapes"]], d["dtypes"], d.get("meta"))
        except KeyError as err:
            raise SpecError(f"a serialised DataInfo needs key {err}; got keys {sorted(d)}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "DataInfo":
        return cls.from_dict(json.loads(text))


#: The spec with no entries. DataInfo is immutable, so this one instance serves every default
#: (building a new empty DataInfo costs microseconds, and some defaults are read on every step).
EMPTY_INFO = DataInfo((), ())
