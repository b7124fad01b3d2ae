"""Recurrent policies: state that travels as observation entries, and training on sequences.

An actor input that is also an actor output (other than ``action``) is recurrent state, e.g. an
LSTM's ``hidden1`` and ``hidden2``. The actor is written for one step:
``call(pos, hidden1, hidden2) -> (action, log_std, hidden1, hidden2)``. Environments carry the
state as observation entries (zeros after a reset, the actor's returned state after a step), so a
buffer row at step t holds the state that was the actor's *input* at t, and the ``next_`` columns
the state it returned.

Training replays a stored sequence by starting from the stored state of its first step and
calling the actor once per step (``unroll``); gradients flow back through the chain of states.
``sequence_mask`` marks the steps that carry loss: not the burn-in, and nothing after the step
that ended an episode (the next episode's steps never see this episode's state).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from aquaml.data import DataInfo, SpecError

NOT_STATE = ("action", "log_std", "value")


def recurrent_names(input_names: Any, output_info: Any) -> tuple[str, ...]:
    """The actor's recurrent state: the names it both reads and returns, in input order."""
    outputs = tuple(output_info or ())
    return tuple(n for n in (input_names or ()) if n in outputs and n not in NOT_STATE)


def recurrent_info(actor: Any) -> DataInfo:
    """The DataInfo (float32, shapes from ``output_info``) of an actor's recurrent state entries."""
    names = recurrent_names(getattr(actor, "input_name", ()), getattr(actor, "output_info", None))
    return DataInfo(names, [tuple(int(d) for d in np.atleast_1d(actor.output_info[n])) for n in names],
                    np.float32)


def with_recurrent(obs_info: DataInfo, recurrent: DataInfo) -> DataInfo:
    """The observation spec with the recurrent entries added (an environment that already declares
    one must declare it with the actor's shape, float32).

    Raises:
        SpecError: the environment declares a recurrent entry with another shape or dtype.
    """
    for n in recurrent.names:
        if n in obs_info and (obs_info.shape(n), obs_info.dtype(n)) != (recurrent.shape(n), recurrent.dtype(n)):
            raise SpecError(f"observation {n!r} is the actor's recurrent state (it reads and returns it), "
                            f"shape {recurrent.shape(n)} float32 per output_info; the environment declares "
                            f"{obs_info.shape(n)} {obs_info.dtype(n).name}")
    return obs_info.merge(recurrent.select([n for n in recurrent.names if n not in obs_info]))


def sequence_mask(terminated: Any, truncated: Any, burn_in: int = 0):
    """Which steps of ``(batch, length)`` sequences carry loss (1.0) and which do not (0.0).

    Step t counts when no step before it ended an episode (the step that ends one still counts)
    and t >= ``burn_in``. Works on numpy arrays and TensorFlow tensors alike.
    """
    import tensorflow as tf
    done = tf.maximum(tf.cast(terminated, tf.float32), tf.cast(truncated, tf.float32))
    # alive[t] = prod_{k < t} (1 - done[k]); exclusive cumprod keeps step t's own end inside
    alive = tf.math.cumprod(1.0 - done, axis=1, exclusive=True)
    length = tf.shape(done)[1]
    after_burn_in = tf.cast(tf.range(length) >= burn_in, tf.float32)
    return alive * after_burn_in[None, :]


def unroll(step: Callable[[dict], Mapping[str, Any]], sequences: Mapping[str, Any], state_names: tuple[str, ...],
           length: int, burn_in: int = 0, resets: Any = None) -> tuple[dict, dict]:
    """Call a one-step recurrent model along axis 1 of ``sequences``.

    Args:
        step: ``step(inputs) -> outputs``; both dicts of ``(batch, ...)`` tensors, the outputs
            holding the next value of every name in ``state_names``.
        sequences: ``(batch, length, ...)`` tensors by name; the state names hold the stored state
            of each step, of which only the first step's (and those of ``resets``) are used.
        state_names: the recurrent state entries.
        length: the number of steps (static).
        burn_in: steps run to warm the state up; no gradient flows into them (the state entering
            step ``burn_in`` is a constant to the optimiser).
        resets: optional ``(batch, length)`` booleans: where True, step t starts from the stored
            state instead of the carried one (an episode start inside the sequence).

    Returns:
        ``(outputs, states)``: each output stacked to ``(batch, length, ...)``, and the state
        that was the input of each step, also ``(batch, length, ...)``.
    """
    import tensorflow as tf
    state = {n: sequences[n][:, 0] for n in state_names}
    outputs: dict[str, list] = {}
    inputs_state: dict[str, list] = {n: [] for n in state_names}
    for t in range(length):
        if t > 0 and resets is not None:
            reset = tf.reshape(tf.cast(resets[:, t], tf.bool), [-1] + [1] * (len(state[state_names[0]].shape) - 1))
            state = {n: tf.where(reset, sequences[n][:, t], s) for n, s in state.items()}
        if t == burn_in and burn_in > 0:
            state = {n: tf.stop_gradient(s) for n, s in state.items()}
        inputs = {n: (state[n] if n in state else v[:, t]) for n, v in sequences.items()}
        out = step(inputs)
        for n in state_names:
            inputs_state[n].append(state[n])
        for k, v in out.items():
            outputs.setdefault(k, []).append(v)
        state = {n: out[n] for n in state_names}
    return ({k: tf.stack(v, axis=1) for k, v in outputs.items()},
            {n: tf.stack(v, axis=1) for n, v in inputs_state.items()})


def flatten_time(x: Any):
    """``(batch, length, ...)`` to ``(batch * length, ...)``."""
    import tensorflow as tf
    shape = tf.shape(x)
    return tf.reshape(x, tf.concat([[shape[0] * shape[1]], shape[2:]], axis=0))


def weighted_mean(x: Any, weights: Any = None):
    """The mean of ``x``, or its ``weights``-weighted mean (0 when every weight is 0): the losses'
    mean over the steps a sequence mask keeps."""
    import tensorflow as tf
    if weights is None:
        return tf.reduce_mean(x)
    return tf.reduce_sum(weights * x) / tf.maximum(tf.reduce_sum(weights), 1e-8)
