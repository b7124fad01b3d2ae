"""Search spaces: which parameters a study varies, over which ranges, and which it holds fixed.

A space is a JSON or YAML file, or the same structure as a Python dict::

    search:
      learning_rate: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}
      gamma:         {type: float, low: 0.9, high: 0.999}
      batch_size:    {type: int, low: 32, high: 256, log: true}
      hidden_width:  {type: categorical, choices: [64, 128, 256]}
    fixed:
      rollout_steps: 256

Names are the fields of the algorithm's parameters class (``SACParameters``, ``PPOParameters``)
or the default models' settings in ``MODEL_SETTINGS``. Everything is checked here, before any rank
starts: an unknown name, a type the field cannot take, an empty range, a log range that reaches
zero, or a bound the parameters class refuses is a ``SpaceError`` that names the entry. Relations
between two searched parameters (SAC's ``burn_in`` below ``sequence_length``) can only be checked
per trial: a trial whose combination is refused fails with that message and the study goes on.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping


#: Settings of the default models that a space may search or fix, beside the algorithm's fields.
MODEL_SETTINGS = {
    "hidden": "categorical: lists of hidden layer widths, e.g. [[64, 64], [256, 256]]",
    "hidden_width": "int: the width of every hidden layer (with hidden_layers, or the default count)",
    "hidden_layers": "int: the number of hidden layers (with hidden_width, or the default width)",
    "learning_rate": "float: the learning rate of every model",
}
#: Algorithm fields that a study sets itself.
RESERVED = {
    "seed": "each trial's seed is the study's seed plus the trial's number",
    "total_steps": "every trial trains the study's step budget (aquaml tune --steps)",
}
KINDS = ("float", "int", "categorical")
_KEYS = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
         "categorical": {"type", "choices"}}


class SpaceError(ValueError):
    """A search space that cannot be searched; the message names the entry and what it accepts."""


def algorithm_parameters(algo: str) -> type:
    """The parameters class of the algorithm named ``algo`` (the one place names are resolved).

    Raises:
        SpaceError: no algorithm of that name.
    """
    from aquaml.algos.registry import algorithm
    try:
        return algorithm(algo).parameters_class
    except ValueError as exc:
        raise SpaceError(str(exc)) from None


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One searched parameter: a float or int range (linear or log), or a list of choices.

    ``hidden`` choices are kept as text (``'64,64'``) because Optuna's categorical choices must be
    scalars; ``SearchSpace.settings`` turns them back into widths.
    """
    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()

    def suggest(self, trial: Any) -> Any:
        """This dimension's value for an Optuna trial (the trial records it)."""
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.name, list(self.choices))

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        out = {"type": self.kind, "low": self.low, "high": self.high, "log": self.log}
        return out if self.step is None else {**out, "step": self.step}


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A validated search space for one algorithm (see the module docstring for the format)."""
    algo: str
    dimensions: tuple[Dimension, ...]
    fixed: Mapping[str, Any]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dimensions)

    def sample(self, trial: Any) -> dict[str, Any]:
        """Every dimension's value for ``trial`` (Optuna's sampler picks them, or an enqueued trial fixes them)."""
        return {d.name: d.suggest(trial) for d in self.dimensions}

    def settings(self, values: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[int, ...] | None, float | None]:
        """The algorithm fields, hidden widths (None: the default) and learning rate (None: the
        default) of a trial that drew ``values``, the fixed entries included."""
        merged = {**self.fixed, **values}
        fields = {k: v for k, v in merged.items() if k not in MODEL_SETTINGS}
        hidden = None
        if "hidden" in merged:
            hidden = _widths_of(merged["hidden"])
        elif "hidden_width" in merged or "hidden_layers" in merged:
            from aquaml.algos.registry import algorithm
            default = algorithm(self.algo).default_hidden
            width = int(merged.get("hidden_width", default[0]))
            hidden = (width,) * int(merged.get("hidden_layers", len(default)))
        rate = merged.get("learning_rate")
        return fields, hidden, None if rate is None else float(rate)

    def to_dict(self) -> dict[str, Any]:
        """The space as its file would give it (stored with the study, to check a resumed study)."""
        return {"search": {d.name: d.to_dict() for d in self.dimensions}, "fixed": dict(self.fixed)}


def _widths_of(value: Any) -> tuple[int, ...]:
    """Hidden widths from a list (a fixed entry) or the text a categorical choice keeps (``'64,64'``)."""
    if isinstance(value, str):
        return tuple(int(w) for w in value.split(","))
    return tuple(int(w) for w in value)


def load_space(source: str | Mapping[str, Any] | SearchSpace, algo: str,
               fixed: Mapping[str, Any] | None = None) -> SearchSpace:
    """Read and check a search space for ``algo``: a path to a .json/.yaml/.yml file, a dict of the
    same structure, or a SearchSpace. ``fixed`` adds fixed entries (the command line's ``--set``,
    ``--hidden``...), which must not clash with the space's.

    Raises:
        SpaceError: the file cannot be read or an entry is invalid (the message names it).
    """
    params_cls = algorithm_parameters(algo)
    if isinstance(source, SearchSpace):
        source = source.to_dict()
    if isinstance(source, (str, os.PathLike)):
        source = _read_file(os.fspath(source))
    if not isinstance(source, Mapping):
        raise SpaceError(f"a search space is a mapping with 'search' (and 'fixed'), got {type(source).__name__}")
    unknown = set(source) - {"search", "fixed"}
    if unknown:
        raise SpaceError(f"space: unknown top-level key(s) {sorted(unknown)}; a space has 'search' and 'fixed'")
    search = source.get("search")
    if not isinstance(search, Mapping) or not search:
        raise SpaceError("space: 'search' must map at least one parameter name to its range or choices")
    own_fixed = source.get("fixed") or {}
    if not isinstance(own_fixed, Mapping):
        raise SpaceError(f"space: 'fixed' must map parameter names to values, got {type(own_fixed).__name__}")
    merged_fixed = dict(own_fixed)
    for key, value in (fixed or {}).items():
        if key in own_fixed and own_fixed[key] != value:
            raise SpaceError(f"fixed.{key}: the space fixes {own_fixed[key]!r}, the command line {value!r}; give one")
        merged_fixed[key] = value
    fields = _field_kinds(params_cls)
    for key in merged_fixed:
        _check_name(f"fixed.{key}", key, fields, params_cls)
        if key in search:
            raise SpaceError(f"fixed.{key}: {key} is also searched (search.{key}); give it in one place")
    dims = tuple(_dimension(str(name), spec, fields, params_cls) for name, spec in search.items())
    names = {d.name for d in dims} | set(merged_fixed)
    if "hidden" in names and names & {"hidden_width", "hidden_layers"}:
        raise SpaceError("search: hidden (whole width lists) and hidden_width/hidden_layers both given; use one")
    algo_fixed = {k: v for k, v in merged_fixed.items() if k not in MODEL_SETTINGS}
    _try_parameters(params_cls, algo_fixed, "fixed", set())
    _check_model_values("fixed", {k: v for k, v in merged_fixed.items() if k in MODEL_SETTINGS})
    searched = {d.name for d in dims}
    for dim in dims:
        if dim.name not in MODEL_SETTINGS:
            for label, value in _boundaries(dim):
                _try_parameters(params_cls, {**algo_fixed, dim.name: value}, f"search.{dim.name}: {label}",
                                searched - {dim.name})
    return SearchSpace(algo.lower(), dims, merged_fixed)


def _read_file(path: str) -> Any:
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".json", ".yaml", ".yml"):
        raise SpaceError(f"space file {path}: expected a .json, .yaml or .yml file")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise SpaceError(f"space file {path}: cannot read it ({exc.strerror})") from None
    try:
        if ext == ".json":
            return json.loads(text)
        import yaml
        return yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001  (json and yaml raise their own error kinds)
        raise SpaceError(f"space file {path}: not valid {ext[1:].upper()}: {exc}") from None


def _field_kinds(params_cls: type) -> dict[str, str]:
    """Each field's kind from its annotation: 'bool', 'int' or 'float' (annotations are strings)."""
    kinds = {}
    for f in dataclasses.fields(params_cls):
        annotation = str(f.type)
        kinds[f.name] = "bool" if "bool" in annotation else "float" if "float" in annotation else "int"
    return kinds


def _check_name(entry: str, name: str, fields: Mapping[str, str], params_cls: type) -> None:
    if name in RESERVED:
        raise SpaceError(f"{entry}: {name} cannot be tuned or fixed here: {RESERVED[name]}")
    if name not in fields and name not in MODEL_SETTINGS:
        valid = sorted(set(fields) - set(RESERVED)) + sorted(MODEL_SETTINGS)
        raise SpaceError(f"{entry}: unknown parameter {name!r}; {params_cls.__name__} fields and model "
                         f"settings are: {', '.join(valid)}")


def _number(entry: str, key: str, value: Any) -> float:
    """A bound as a number; text such as '1e-5' is accepted (YAML 1.1 reads 1e-5 without a dot as text)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise SpaceError(f"{entry}: {key} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpaceError(f"{entry}: {key} must be a finite number, got {value!r}")
    return value


def _dimension(name: str, spec: Any, fields: Mapping[str, str], params_cls: type) -> Dimension:
    entry = f"search.{name}"
    _check_name(entry, name, fields, params_cls)
    if not isinstance(spec, Mapping) or spec.get("type") not in KINDS:
        raise SpaceError(f"{entry}: expected a mapping with type: one of {', '.join(KINDS)}, got {spec!r}")
    kind = spec["type"]
    extra = set(spec) - _KEYS[kind]
    if extra:
        raise SpaceError(f"{entry}: unknown key(s) {sorted(extra)} for type {kind}; allowed: {sorted(_KEYS[kind])}")
    field_kind = fields.get(name) or {"hidden": "hidden", "learning_rate": "float"}.get(name, "int")
    if kind == "categorical":
        return _categorical(entry, name, spec.get("choices"), field_kind)
    if field_kind in ("bool", "hidden") or (field_kind == "int" and kind == "float"):
        allowed = {"bool": "categorical", "hidden": "categorical", "int": "int or categorical"}[field_kind]
        raise SpaceError(f"{entry}: {name} takes {field_kind} values; use type {allowed}, not {kind}")
    return _range(entry, name, kind, spec)


def _range(entry: str, name: str, kind: str, spec: Mapping[str, Any]) -> Dimension:
    for key in ("low", "high"):
        if key not in spec:
            raise SpaceError(f"{entry}: a {kind} range needs low and high")
    low, high = _number(entry, "low", spec["low"]), _number(entry, "high", spec["high"])
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise SpaceError(f"{entry}: log must be true or false, got {log!r}")
    step = spec.get("step")
    if kind == "int":
        for key, value in (("low", low), ("high", high), ("step", step)):
            if value is not None and float(value) != int(value):
                raise SpaceError(f"{entry}: {key} of an int range must be a whole number, got {value!r}")
        low, high = int(low), int(high)
    if not low < high:
        raise SpaceError(f"{entry}: empty range: low ({low}) must be below high ({high}); "
                         f"use fixed: for a single value")
    if log and low <= 0:
        raise SpaceError(f"{entry}: log range through zero: low must be > 0 on a log scale, got {low}")
    if step is not None:
        step = _number(entry, "step", step)
        step = int(step) if kind == "int" else float(step)
        if log:
            raise SpaceError(f"{entry}: step and log cannot be combined (Optuna samples one or the other)")
        if not 0 < step <= high - low:
            raise SpaceError(f"{entry}: step must be > 0 and at most high - low ({high - low}), got {step}")
    if name in MODEL_SETTINGS and name != "learning_rate" and low < 1:
        raise SpaceError(f"{entry}: {name} must be at least 1, got low={low}")
    if name == "learning_rate" and low <= 0:
        raise SpaceError(f"{entry}: learning_rate must be > 0, got low={low}")
    return Dimension(name, kind, low, high, log, step)


def _categorical(entry: str, name: str, choices: Any, field_kind: str) -> Dimension:
    if not isinstance(choices, (list, tuple)) or not choices:
        raise SpaceError(f"{entry}: a categorical needs a non-empty list of choices, got {choices!r}")
    if name == "hidden":
        for c in choices:
            if not isinstance(c, (list, tuple)) or not c or any(
                    isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in c):
                raise SpaceError(f"{entry}: each choice must be a list of positive layer widths such as "
                                 f"[64, 64], got {c!r}")
        choices = [",".join(str(w) for w in c) for c in choices]
    else:
        for c in choices:
            if c is not None and not isinstance(c, (bool, int, float, str)):
                raise SpaceError(f"{entry}: choices must be numbers, true/false, text or null, got {c!r}")
        if name in MODEL_SETTINGS:
            for c in choices:
                _check_model_values(entry, {name: c})
    if len(set(map(repr, choices))) != len(choices):
        raise SpaceError(f"{entry}: choices repeat a value: {list(choices)}")
    return Dimension(name, "categorical", choices=tuple(choices))


def _check_model_values(entry: str, values: Mapping[str, Any]) -> None:
    for name, value in values.items():
        if name == "hidden":
            ok = isinstance(value, (list, tuple)) and value and all(
                isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in value)
            if not ok:
                raise SpaceError(f"{entry}: hidden must be a list of positive layer widths, got {value!r}")
        elif name == "learning_rate":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise SpaceError(f"{entry}: learning_rate must be a number > 0, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpaceError(f"{entry}: {name} must be a positive int, got {value!r}")


def _boundaries(dim: Dimension) -> list[tuple[str, Any]]:
    if dim.kind == "categorical":
        return [(f"choice {c!r}", c) for c in dim.choices]
    return [(f"low={dim.low!r}", dim.low), (f"high={dim.high!r}", dim.high)]


def _try_parameters(params_cls: type, values: Mapping[str, Any], entry: str, others: set[str]) -> None:
    """Refuse ``values`` when the parameters class does, unless its message is about a relation
    with another searched parameter (``others``), which only a trial's combination can settle."""
    try:
        params_cls(**values)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        if not any(other in message for other in others):
            raise SpaceError(f"{entry} is refused by {params_cls.__name__}: {message}") from None
