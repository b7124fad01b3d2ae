"""Acting without TensorFlow's per-call overhead: the traced act graph, run op by op in numpy.

A batch-of-one call of a compiled TensorFlow function costs about 0.35 ms on this machine, 20-30
times a Pendulum step, and a worker rank does nothing but such calls and environment steps. The
graph TensorFlow traces for an actor is usually a handful of matrix products and element-wise
functions, which numpy runs for a batch of one in tens of microseconds. ``NumpyGraph`` takes a
concrete function's graph, keeps the ops its outputs need, and runs them with numpy
implementations from a fixed table; variables are read once per ``sync()``, not per call.

``HostPolicy`` is what workers and evaluation act with. It builds the numpy program from the
algorithm's act function (observations and noise in, actions out) and checks it against
TensorFlow on a probe batch. A graph with an op outside the table (an LSTM layer's loop, say),
or one whose numpy result differs from TensorFlow's, runs through TensorFlow instead, with the
same numpy noise; ``backend`` and ``reason`` say which and why. Only code that knows when the
weights change should hold a HostPolicy: it sees new weights after ``sync()``, not before.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from aquaml.compiled import CompiledCall

log = logging.getLogger(__name__)


class UnsupportedGraph(Exception):
    """The graph holds an op (or an attribute of one) that ``NumpyGraph`` has no numpy form of."""


def _unary(fn: Callable) -> Callable:
    return lambda op: (lambda x: (fn(x),))


def _binary(fn: Callable) -> Callable:
    return lambda op: (lambda a, b: (fn(a, b),))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(x.dtype)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _matmul(op) -> Callable:
    ta, tb = op.get_attr("transpose_a"), op.get_attr("transpose_b")
    return lambda a, b: (np.matmul(a.T if ta else a, b.T if tb else b),)


def _batch_matmul(op) -> Callable:
    ta, tb = op.get_attr("adj_x"), op.get_attr("adj_y")
    return lambda a, b: (np.matmul(np.swapaxes(a, -1, -2) if ta else a, np.swapaxes(b, -1, -2) if tb else b),)


def _bias_add(op) -> Callable:
    if op.get_attr("data_format") not in (b"NHWC", "NHWC"):
        raise UnsupportedGraph("BiasAdd with data_format NCHW")
    return lambda x, b: (x + b,)


def _reduce(fn: Callable) -> Callable:
    def make(op):
        keep = op.get_attr("keep_dims")
        return lambda x, axis: (np.asarray(fn(x, axis=tuple(int(a) for a in np.atleast_1d(axis)), keepdims=keep),
                                           dtype=x.dtype),)
    return make


def _cast(op) -> Callable:
    dtype = tf.as_dtype(op.get_attr("DstT")).as_numpy_dtype
    return lambda x: (np.asarray(x).astype(dtype),)


def _argmax(op) -> Callable:
    dtype = tf.as_dtype(op.get_attr("output_type")).as_numpy_dtype
    return lambda x, axis: (np.argmax(x, axis=int(axis)).astype(dtype),)


def _shape(op) -> Callable:
    dtype = tf.as_dtype(op.get_attr("out_type")).as_numpy_dtype
    return lambda x: (np.array(np.shape(x), dtype),)


def _leaky_relu(op) -> Callable:
    alpha = op.get_attr("alpha")
    return lambda x: (np.where(x > 0, x, x * x.dtype.type(alpha)),)


def _pack(op) -> Callable:
    axis = op.get_attr("axis")
    return lambda *xs: (np.stack(xs, axis=axis),)


def _squeeze(op) -> Callable:
    dims = tuple(op.get_attr("squeeze_dims"))
    return lambda x: (np.squeeze(x, axis=dims or None),)


def _split(op) -> Callable:
    n = op.get_attr("num_split")
    return lambda axis, x: tuple(np.split(x, n, axis=int(axis)))


def _split_v(op) -> Callable:
    def run(x, sizes, axis):
        sizes = [int(s) for s in sizes]
        if -1 in sizes:
            sizes[sizes.index(-1)] = x.shape[int(axis)] - (sum(sizes) + 1)
        return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=int(axis)))
    return run


def _gather(op) -> Callable:
    batch_dims = op.get_attr("batch_dims")

    def run(params, indices, axis):
        axis = int(axis) % params.ndim
        if batch_dims == 0:
            return (np.take(params, indices, axis=axis),)
        if batch_dims == 1 and indices.ndim == 1 and params.ndim == 2 and axis == 1:
            return (np.take_along_axis(params, indices[:, None].astype(np.int64), axis=1)[:, 0],)
        raise UnsupportedGraph(f"GatherV2 with batch_dims={batch_dims} on rank {params.ndim}")
    return run


def _strided_slice(op) -> Callable:
    masks = {k: op.get_attr(k) for k in ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask",
                                          "shrink_axis_mask")}

    def run(x, begin, end, strides):
        index: list = []  # numpy's index for the same slice, one entry per slice dimension
        for i, (b, e, s) in enumerate(zip(begin, end, strides)):
            if masks["ellipsis_mask"] >> i & 1:
                index.append(Ellipsis)
            elif masks["new_axis_mask"] >> i & 1:
                index.append(None)
            elif masks["shrink_axis_mask"] >> i & 1:
                index.append(int(b))
            else:
                index.append(slice(None if masks["begin_mask"] >> i & 1 else int(b),
                                   None if masks["end_mask"] >> i & 1 else int(e), int(s)))
        out = np.asarray(x)[tuple(index)]
        return (np.array(out) if np.ndim(out) == 0 else out,)
    return run


def _clip(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(x, lo), hi)


#: op type -> (op -> function of the op's input values returning a tuple of its output values)
OPS: dict[str, Callable[[Any], Callable]] = {
    **{k: _unary(lambda x: x) for k in ("Identity", "Snapshot", "StopGradient", "PreventGradient")},
    "IdentityN": lambda op: (lambda *xs: xs),
    "MatMul": _matmul, "BatchMatMulV2": _batch_matmul, "BatchMatMulV3": _batch_matmul, "BiasAdd": _bias_add,
    "AddV2": _binary(np.add), "Add": _binary(np.add), "Sub": _binary(np.subtract), "Mul": _binary(np.multiply),
    "RealDiv": _binary(np.true_divide), "Maximum": _binary(np.maximum), "Minimum": _binary(np.minimum),
    "Pow": _binary(np.power), "SquaredDifference": _binary(lambda a, b: np.square(a - b)),
    "Greater": _binary(np.greater), "GreaterEqual": _binary(np.greater_equal), "Less": _binary(np.less),
    "LessEqual": _binary(np.less_equal), "Equal": _binary(np.equal), "NotEqual": _binary(np.not_equal),
    "LogicalAnd": _binary(np.logical_and), "LogicalOr": _binary(np.logical_or),
    "LogicalNot": _unary(np.logical_not),
    "Neg": _unary(np.negative), "Exp": _unary(np.exp), "Log": _unary(np.log), "Log1p": _unary(np.log1p),
    "Expm1": _unary(np.expm1), "Tanh": _unary(np.tanh), "Sqrt": _unary(np.sqrt), "Square": _unary(np.square),
    "Abs": _unary(np.abs), "Sign": _unary(np.sign), "Floor": _unary(np.floor),
    "Rsqrt": _unary(lambda x: (1.0 / np.sqrt(x)).astype(x.dtype)),
    "Reciprocal": _unary(lambda x: (1.0 / x).astype(x.dtype)),
    "Sigmoid": _unary(_sigmoid), "Relu": _unary(lambda x: np.maximum(x, x.dtype.type(0))),
    "Relu6": _unary(lambda x: np.clip(x, x.dtype.type(0), x.dtype.type(6))),
    "Elu": _unary(lambda x: np.where(x > 0, x, np.expm1(x))),
    "Softplus": _unary(lambda x: np.logaddexp(x.dtype.type(0), x)),
    "Softsign": _unary(lambda x: x / (1 + np.abs(x))), "LeakyRelu": _leaky_relu,
    "Softmax": _unary(_softmax), "LogSoftmax": _unary(_log_softmax),
    "ClipByValue": lambda op: (lambda x, lo, hi: (_clip(x, lo, hi),)),
    "SelectV2": lambda op: (lambda c, a, b: (np.where(c, a, b),)),
    "Cast": _cast, "ArgMax": _argmax, "Shape": _shape,
    "ConcatV2": lambda op: (lambda *xs: (np.concatenate(xs[:-1], axis=int(xs[-1])),)),
    "Pack": _pack, "Squeeze": _squeeze, "Split": _split, "SplitV": _split_v, "GatherV2": _gather,
    "StridedSlice": _strided_slice,
    "Reshape": lambda op: (lambda x, shape: (np.reshape(x, [int(s) for s in shape]),)),
    "ExpandDims": lambda op: (lambda x, axis: (np.expand_dims(x, int(axis)),)),
    "Fill": lambda op: (lambda dims, value: (np.full([int(d) for d in dims], value),)),
    "ZerosLike": _unary(np.zeros_like), "OnesLike": _unary(np.ones_like),
    "BroadcastTo": lambda op: (lambda x, shape: (np.broadcast_to(x, [int(s) for s in shape]),)),
    "Sum": _reduce(np.sum), "Mean": _reduce(np.mean), "Max": _reduce(np.max), "Min": _reduce(np.min),
    "Prod": _reduce(np.prod),
}


class NumpyGraph:
    """A concrete function's outputs computed by numpy, op by op, from its graph.

    Call with the function's inputs flattened as ``tf.nest`` flattens them (a dict's entries in
    sorted key order); returns ``structured_outputs`` with numpy values. Raises UnsupportedGraph
    at construction when an op the outputs need has no numpy form here.
    """

    def __init__(self, concrete: Any, weights: Sequence[Any] = ()) -> None:
        graph = concrete.graph
        outputs = concrete.structured_outputs
        flat_out = tf.nest.flatten(outputs)
        slots: dict[str, int] = {}

        def slot(tensor) -> int:
            return slots.setdefault(tensor.name, len(slots))

        needed: set[str] = set()
        stack = [t.op for t in flat_out]
        while stack:
            op = stack.pop()
            if op.name in needed:
                continue
            needed.add(op.name)
            stack.extend(t.op for t in op.inputs)

        n_args = len(concrete.inputs) - len(graph.captures)
        self._arg_slots = [slot(t) for t in concrete.inputs[:n_args]]
        captured = {internal.name: external for external, internal in graph.captures}
        constants: dict[int, np.ndarray] = {}
        self._variables: list[tuple[int, Any, Any]] = []  # (slot, resource handle, dtype)
        self._program: list[tuple[Callable, tuple[int, ...], tuple[int, ...]]] = []
        for op in graph.get_operations():
            if op.name not in needed:
                continue
            if op.type == "Placeholder":
                external = captured.get(op.outputs[0].name)
                if external is not None and op.outputs[0].dtype != tf.resource:
                    constants[slot(op.outputs[0])] = np.asarray(external.numpy())
                else:
                    slot(op.outputs[0])
            elif op.type == "Const":
                constants[slot(op.outputs[0])] = tf.make_ndarray(op.get_attr("value"))
            elif op.type == "ReadVariableOp":
                handle = captured.get(op.inputs[0].name)
                if handle is None:
                    raise UnsupportedGraph(f"ReadVariableOp {op.name} reads a variable created inside the function")
                self._variables.append((slot(op.outputs[0]), handle, op.get_attr("dtype")))
            elif op.type == "NoOp":
                continue
            elif op.type in OPS:
                self._program.append((OPS[op.type](op), tuple(slot(t) for t in op.inputs),
                                      tuple(slot(t) for t in op.outputs)))
            else:
                raise UnsupportedGraph(f"op {op.type} ({op.name}) has no numpy form here")
        # the variables of ``weights`` this graph reads: load() takes their values straight from arrays
        index = {id(v.handle): i for i, v in enumerate(weights)}
        self._weight_slots = [(i, index[id(handle)]) for i, handle, _ in self._variables if id(handle) in index]
        #: whether load() covers every variable the graph reads (else it would leave some stale)
        self.loads_all = len(self._weight_slots) == len(self._variables)
        self._out_slots = [slot(t) for t in flat_out]
        self._base: list = [None] * len(slots)
        for i, v in constants.items():
            self._base[i] = v
        self._run = self._compile()
        self._pack = _packer(outputs)
        self.sync()

    def _compile(self) -> Callable:
        """The program as one straight-line Python function ``run(base, *args) -> [outputs]``.

        Walking the op list (gathering each op's inputs into a list, unpacking its outputs)
        cost about 1 us per op, as much as numpy's own work for a batch of one; the generated
        function keeps every value in a local. Its text holds only slot numbers and the names
        ``f0, f1, ...`` of the table's functions, never anything taken from the graph.
        """
        produced = set(self._arg_slots) | {o for _, _, outs in self._program for o in outs}
        read = {i for _, ins, _ in self._program for i in ins} | set(self._out_slots)
        lines = [f"def run(base, {''.join(f'v{i}, ' for i in self._arg_slots)}):"]
        lines += [f"    v{i} = base[{i}]" for i in sorted(read - produced)]
        namespace: dict[str, Any] = {}
        for k, (fn, ins, outs) in enumerate(self._program):
            namespace[f"f{k}"] = fn
            lines.append(f"    {''.join(f'v{o}, ' for o in outs)}= f{k}({', '.join(f'v{i}' for i in ins)})")
        lines.append(f"    return [{', '.join(f'v{i}' for i in self._out_slots)}]")
        exec(compile("\n".join(lines), "<NumpyGraph>", "exec"), namespace)  # noqa: S102  (generated above)
        return namespace["run"]

    def sync(self) -> None:
        """Read every variable the graph uses (their values are held until the next sync)."""
        for i, handle, dtype in self._variables:
            self._base[i] = tf.raw_ops.ReadVariableOp(resource=handle, dtype=dtype).numpy()

    def load(self, weights: Sequence[np.ndarray]) -> None:
        """Take new values of the construction's ``weights`` variables (same order), without
        touching the variables themselves."""
        for i, k in self._weight_slots:
            self._base[i] = np.array(weights[k], dtype=self._base[i].dtype)

    def __call__(self, *args: np.ndarray):
        return self._pack([np.array(v) for v in self._run(self._base, *args)])


def _packer(structure: Any) -> Callable[[list], Any]:
    """``tf.nest.pack_sequence_as(structure, flat)``, without its cost (3 us) for the usual flat
    dict of tensors, whose entries ``tf.nest`` orders by sorted key."""
    if isinstance(structure, dict) and all(isinstance(v, tf.Tensor) for v in structure.values()):
        keys = sorted(structure)
        return lambda flat: dict(zip(keys, flat))
    return lambda flat: tf.nest.pack_sequence_as(structure, flat)


BACKEND_VARIABLE = "AQUAML_ACT_BACKEND"


def numpy_backend_default() -> bool:
    """Whether ``AQUAML_ACT_BACKEND`` (``numpy``, the default, or ``tensorflow``) asks for numpy."""
    value = os.environ.get(BACKEND_VARIABLE, "numpy").strip().lower()
    if value not in ("numpy", "tensorflow"):
        raise ValueError(f"{BACKEND_VARIABLE} must be 'numpy' or 'tensorflow', got {value!r}")
    return value == "numpy"


class HostPolicy:
    """``policy(obs, deterministic) -> {'action': ..., ...}`` for workers and evaluation.

    Args:
        act: a ``tf.function(obs_dict, noise)`` with an input signature, deterministic given the noise
            (the observation entries it reads and the noise's shape are taken from the signature).
        seed: seeds ``rng``, the exploration noise stream.
        numpy: False to always run ``act`` through TensorFlow (default: ``numpy_backend_default()``).
        weights: the variables of ``set_weights``'s list, in its order.
        set_weights: loads such a list into the variables (how ``load`` reaches the TensorFlow path).
        gumbel: the exploration noise is standard Gumbel (Gumbel-max sampling of a discrete choice),
            not standard normal. Deterministic actions get zero noise either way.
    """

    def __init__(self, act: Any, seed: int = 0, numpy: bool | None = None, weights: Sequence[Any] = (),
                 set_weights: Callable[[list], None] | None = None, gumbel: bool = False) -> None:
        if numpy is None:
            numpy = numpy_backend_default()
        self._call = CompiledCall(act)  # the TensorFlow path, with less Python per call
        self._concrete = self._call.concrete
        self._obs_specs, self._noise_spec = self._concrete.structured_input_signature[0]
        self._noise_shape, self._gumbel = tuple(self._noise_spec.shape[1:]), gumbel
        self._weights, self._set_weights = list(weights), set_weights
        self._names = sorted(self._obs_specs)  # tf.nest's order for a dict
        self.rng = np.random.default_rng(seed)
        self._graph: NumpyGraph | None = None
        self.backend, self.reason = "tensorflow", f"{BACKEND_VARIABLE}=tensorflow"
        if numpy:
            try:
                self._graph = NumpyGraph(self._concrete, weights)
                self.backend, self.reason = "numpy", ""
                self._check_against_tensorflow(seed)
            except UnsupportedGraph as exc:
                self._graph, self.reason = None, str(exc)
        if self._graph is None and numpy:
            log.info("acting through TensorFlow: %s", self.reason)

    def _check_against_tensorflow(self, seed: int) -> None:
        rng = np.random.default_rng(seed + 1)

        def probe(spec):
            shape = [4 if d is None else d for d in spec.shape]
            if spec.dtype.is_floating:
                return rng.standard_normal(shape).astype(spec.dtype.as_numpy_dtype)
            return np.zeros(shape, spec.dtype.as_numpy_dtype)
        obs, noise = {k: probe(s) for k, s in self._obs_specs.items()}, probe(self._noise_spec)
        ours = self._graph(*[obs[k] for k in self._names], noise)
        theirs = self._concrete(obs, noise)
        for k, b in theirs.items():
            a, b = ours[k], b.numpy()
            if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-4):
                self._graph, self.backend = None, "tensorflow"
                self.reason = f"the numpy result for {k!r} differs from TensorFlow's on a probe batch"
                return

    def state_dict(self) -> dict[str, Any]:
        """What a worker snapshot keeps of this policy: its noise stream (JSON-able)."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]

    def sync(self) -> None:
        """Take the current weights (after they were published, loaded or trained)."""
        if self._graph is not None:
            self._graph.sync()

    def load(self, weights: list[np.ndarray]) -> None:
        """Act with ``weights`` (in ``set_weights``'s order) from now on. The numpy path copies them
        into its program (tens of microseconds; a worker loads weights after every update), the
        TensorFlow path sets the variables; either way ``sync()`` is not needed after it."""
        if self._graph is not None and self._graph.loads_all and len(weights) == len(self._weights):
            self._graph.load(weights)
        elif self._set_weights is not None:
            self._set_weights(weights)
            self.sync()
        else:
            raise ValueError("this HostPolicy was built without set_weights")

    def __call__(self, obs: Mapping[str, np.ndarray], deterministic: bool = False) -> dict[str, np.ndarray]:
        shape = (len(obs[self._names[0]]),) + self._noise_shape
        if deterministic:
            noise = np.zeros(shape, np.float32)
        elif self._gumbel:
            noise = self.rng.gumbel(size=shape).astype(np.float32)
        else:
            noise = self.rng.standard_normal(shape, dtype=np.float32)
        if self._graph is not None:
            return self._graph(*[obs[k] for k in self._names], noise)
        return {k: v.numpy() for k, v in self._call(obs, noise).items()}


class LivePolicy:
    """A policy that acts on the learner's own variables (one process, off-policy): ``act`` is the
    algorithm's TensorFlow act, whose noise generator is part of the algorithm's state, so there
    is no stream of its own (``rng`` is None) and no weights to take (``sync``/``load`` do nothing)."""

    rng = None

    def __init__(self, act: Callable[[Mapping[str, np.ndarray], bool], dict]) -> None:
        self._act = act

    def sync(self) -> None:
        pass

    def load(self, weights: Sequence[np.ndarray]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """Nothing: what this policy draws and counts is the algorithm's state (``extra_state``)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass

    def __call__(self, obs: Mapping[str, np.ndarray], deterministic: bool = False) -> dict[str, np.ndarray]:
        return self._act(obs, deterministic)
