"""Algorithms by name: what ``aquaml train --algo NAME`` and ``RLTaskStarter(algo="NAME")`` look up.

aquaml registers its own (``sac``, ``ppo``, ``dqn``); a user registers one defined in their own module::

    import aquaml
    aquaml.register_algorithm("reinforce", Reinforce)        # or @aquaml.register_algorithm("reinforce")
    aquaml.RLTaskStarter(env, models, algo="reinforce", ...)

and the command line imports that module first: ``aquaml train --import mymodule --algo reinforce``.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Sequence

from aquaml.algos.base import Algorithm, OffPolicyAlgorithm, OnPolicyAlgorithm

_ALGORITHMS: dict[str, type[Algorithm]] = {}
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


def register_algorithm(name: str, cls: type[Algorithm] | None = None) -> Any:
    """Make ``cls`` known as ``name`` (lowercase letters, digits, ``-``, ``_``); returns ``cls``.
    Without ``cls`` it is a class decorator.

    Raises:
        TypeError: ``cls`` is not an ``OffPolicyAlgorithm`` or ``OnPolicyAlgorithm`` subclass.
        ValueError: the name is malformed or already taken by another class.
    """
    if cls is None:
        return lambda c: register_algorithm(name, c)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"an algorithm name is lowercase letters, digits, '-' and '_', starting with a letter; "
                         f"got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, (OffPolicyAlgorithm, OnPolicyAlgorithm))):
        raise TypeError(f"register_algorithm({name!r}, ...) needs a subclass of aquaml.algos.base.OffPolicyAlgorithm "
                        f"or OnPolicyAlgorithm (which decides its schedule), got {cls!r}")
    if _ALGORITHMS.get(name, cls) is not cls:
        raise ValueError(f"algorithm name {name!r} is already taken by {_ALGORITHMS[name].__qualname__}")
    _ALGORITHMS[name] = cls
    return cls


def algorithm(name: str | type[Algorithm]) -> type[Algorithm]:
    """The algorithm class registered as ``name`` (a class is returned as it is).

    Raises:
        ValueError: no algorithm has that name (the message lists those that do).
    """
    if isinstance(name, type):
        return name
    cls = _ALGORITHMS.get(str(name).lower())
    if cls is None:
        raise ValueError(f"unknown algorithm {name!r}; registered: {', '.join(algorithm_names())} (an algorithm "
                         "of your own: aquaml.register_algorithm, and --import MODULE on the command line)")
    return cls


def algorithm_names() -> list[str]:
    """Every registered name, sorted."""
    return sorted(_ALGORITHMS)


def name_of(cls: type[Algorithm]) -> str | None:
    """The name ``cls`` is registered under, or None."""
    return next((n for n, c in _ALGORITHMS.items() if c is cls), None)


def default_models(algo: str | type[Algorithm], obs_info: Any, action_info: Any, hidden: Sequence[int] | None = None,
                   learning_rate: float | None = None, params: Any = None) -> dict[str, Callable[[], Any]]:
    """``model_class_dict`` of default models for ``algo`` (a name or a class) on these specs, shaped
    as ``params`` need when given (``Algorithm.model_options``: DQN's dueling head).

    Raises:
        ValueError: unknown algorithm, or a hidden width that is not a positive int.
        NotImplementedError: the algorithm has no default models.
    """
    cls = algorithm(algo)
    options = {} if params is None else cls.model_options(params)
    return cls.default_models(obs_info, action_info, hidden, learning_rate, **options)
