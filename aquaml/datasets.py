"""Trajectory datasets in HDF5, and behaviour cloning from them (the reference AquaML's expert learning).

A dataset is a table of steps: per row, every observation entry (the observation the action was
taken on), the ``action`` taken, its ``reward`` and whether the episode ``terminated`` or was
``truncated`` there, plus the index of the first row of every episode. It is recorded from any
policy (``record_policy``), read out of a SAC replay buffer (``trajectories_from_buffer``), saved
to and loaded from one HDF5 file (``save_data``/``load_data``), and used to train an actor to copy
the recorded actions (``behaviour_cloning``) before, or instead of, reinforcement learning.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping

import numpy as np

from aquaml.data import DataInfo, SpecError
from aquaml.envs import RLBaseEnv
from aquaml.models.base import ModelContractError, is_discrete_action
from aquaml.storage import atomic_path
from aquaml.acting.worker import reset_env, step_env

FORMAT_NAME = "aquaml.trajectories"
FORMAT_VERSION = 1
STEP_COLUMNS = ("action", "reward", "terminated", "truncated")
_SUFFIXES = (".h5", ".hdf5")
_CHUNK_BYTES = 1 << 16  # 64 KiB chunks: small enough to read a slice cheaply, big enough to compress well

Policy = Callable[[Mapping[str, np.ndarray], bool], Mapping[str, Any]]


def _step_info(obs_info: DataInfo, action_info: DataInfo) -> DataInfo:
    """The spec of one row: observation entries, ``action``, float32 ``reward``, bool end flags."""
    clash = [n for n in obs_info.names if n in STEP_COLUMNS]
    if clash:
        raise SpecError(f"observation names {clash} clash with the dataset's step columns {STEP_COLUMNS}; "
                        "rename those observation entries")
    return (obs_info.merge(action_info)
            .add_info(("reward", "terminated", "truncated"), ((), (), ()), (np.float32, np.bool_, np.bool_)))


@dataclasses.dataclass
class Trajectories:
    """Recorded steps, one row each, in time order within every episode.

    Attributes:
        obs_info: the observation entries (each a column of ``columns``).
        action_info: the spec of the one entry ``action``: an integer index for a discrete
            action, else floats in the environment's [-1, 1] convention.
        columns: ``{name: (N, *shape)}`` for every observation name and ``action``, ``reward``
            (float32, the step's ``total_reward``), ``terminated`` and ``truncated`` (bool).
        episode_starts: int64 row index of the first step of each episode, increasing, starting
            at 0. An episode runs up to the next start; the last one (and, from a wrapped replay
            buffer, the first one) may be incomplete: its last row is then neither terminated
            nor truncated.

    Raises:
        SpecError: a column is missing, has the wrong shape or dtype, the columns differ in
            length, or ``episode_starts`` is not an increasing list of rows starting at 0.
    """
    obs_info: DataInfo
    action_info: DataInfo
    columns: dict[str, np.ndarray]
    episode_starts: np.ndarray

    def __post_init__(self) -> None:
        if tuple(self.action_info.names) != ("action",):
            raise SpecError(f"Trajectories.action_info must describe exactly one entry 'action', "
                            f"got {self.action_info!r}")
        self.columns = _step_info(self.obs_info, self.action_info).validate(
            self.columns, what="Trajectories columns", batch_dims=1)
        lengths = {n: len(a) for n, a in self.columns.items()}
        if len(set(lengths.values())) > 1:
            raise SpecError(f"Trajectories columns must all have the same number of rows, got {lengths}")
        n = lengths["action"]
        starts = np.asarray(self.episode_starts)
        if starts.ndim != 1 or (starts.size and starts.dtype.kind not in "iu"):
            raise SpecError(f"episode_starts must be a 1-D array of row indices, got shape {starts.shape} "
                            f"{starts.dtype}")
        starts = starts.astype(np.int64)
        if n and (starts.size == 0 or starts[0] != 0 or np.any(np.diff(starts) <= 0) or starts[-1] >= n):
            raise SpecError(f"episode_starts must increase strictly from 0 and stay below the {n} rows, "
                            f"got {starts[:10].tolist()}{'...' if starts.size > 10 else ''}")
        if not n and starts.size:
            raise SpecError(f"episode_starts must be empty for an empty dataset, got {starts.tolist()}")
        self.episode_starts = starts

    def __len__(self) -> int:
        return len(self.columns["action"])

    @property
    def obs(self) -> dict[str, np.ndarray]:
        """The observation columns."""
        return {n: self.columns[n] for n in self.obs_info.names}

    @property
    def num_episodes(self) -> int:
        return len(self.episode_starts)

    def episode_lengths(self) -> np.ndarray:
        """Rows per episode (int64)."""
        return np.diff(np.append(self.episode_starts, len(self)))

    def episode_returns(self) -> np.ndarray:
        """Summed reward per episode (float64; incomplete episodes included as they are)."""
        if not len(self):
            return np.zeros(0)
        return np.add.reduceat(self.columns["reward"].astype(np.float64), self.episode_starts)


# --- recording ------------------------------------------------------------------------------------

def record_policy(env: RLBaseEnv, policy: Policy, *, steps: int | None = None, episodes: int | None = None,
                  seed: int = 0, deterministic: bool = True, action_info: DataInfo | None = None) -> Trajectories:
    """Roll ``policy`` out on ``env`` and record every step.

    The policy has the signature of ``algo.act``: ``policy(obs_batch, deterministic)`` gets a dict
    of observation arrays with a leading batch dimension of 1 and returns a dict holding
    ``'action'`` of shape ``(1, *action_shape)``; any other entries (recurrent state, PPO's
    ``log_prob``) are passed on to ``env.step`` as the Worker does, but not recorded. A controller
    ``ctrl(obs_dict) -> action`` of a single observation is wrapped as
    ``lambda obs, det: {'action': np.asarray(ctrl({k: v[0] for k, v in obs.items()}))[None]}``;
    a vectorised one (rows in, rows out) works unchanged, and also with ``aquaml.acting.worker.evaluate``.

    Recording stops after ``episodes`` complete episodes or ``steps`` rows, whichever comes
    first (at least one must be given); a step limit may cut the last episode short. Episode
    ``k`` is reset with ``seed + k``.

    Args:
        env: the environment; its ``obs_info`` names the recorded observation columns.
        policy: as above.
        steps, episodes: the limits.
        seed: seeds the episodes' resets.
        deterministic: passed to the policy (the expert's best action, not its exploration).
        action_info: the action spec, needed only when ``env`` declares none.

    Raises:
        ValueError: neither limit is given, or a limit is negative.
        SpecError: the policy's output or the environment's observation does not match the specs.
    """
    if steps is None and episodes is None:
        raise ValueError("record_policy needs steps=... or episodes=... (or both: whichever ends first)")
    if (steps is not None and steps < 0) or (episodes is not None and episodes < 0):
        raise ValueError(f"record_policy: steps and episodes must be >= 0, got steps={steps}, episodes={episodes}")
    obs_info = env.obs_info
    action_info = action_info if action_info is not None else env.action_info
    if action_info is None:
        raise SpecError(f"{type(env).__name__} declares no action_info; pass record_policy(..., action_info=DataInfo("
                        "'action', shape, dtype))")
    action_info = action_info.select(["action"])
    step_limit = np.inf if steps is None else steps
    episode_limit = np.inf if episodes is None else episodes
    rows: list[dict[str, Any]] = []
    starts: list[int] = []
    obs = None
    while len(rows) < step_limit:
        if obs is None:
            if len(starts) >= episode_limit:
                break
            obs = reset_env(env, obs_info, seed + len(starts))
            starts.append(len(rows))
        out = policy({n: obs[n][None] for n in obs_info.names}, deterministic)
        action = _policy_action(out, action_info)
        # copies, so an environment that scales its action in place cannot alter what is recorded
        sent = {**{k: np.array(v[0]) for k, v in out.items() if k != "action"}, "action": np.array(action)}
        result = step_env(env, obs_info, sent)
        rows.append({**obs, "action": action, "reward": result.reward["total_reward"],
                     "terminated": result.terminated, "truncated": result.truncated})
        obs = None if (result.terminated or result.truncated) else result.obs
    info = _step_info(obs_info, action_info)
    columns = ({n: np.stack([r[n] for r in rows]) for n in info.names} if rows else info.zeros((0,)))
    return Trajectories(obs_info, action_info, columns, np.asarray(starts, np.int64))


def _policy_action(out: Any, action_info: DataInfo) -> np.ndarray:
    """The one action of a batch-of-1 policy output, checked against ``action_info``."""
    if not isinstance(out, Mapping) or "action" not in out:
        raise SpecError(f"the policy must return a dict with 'action' of shape (1, *shape), "
                        f"got {type(out).__name__}{' keys ' + str(tuple(out)) if isinstance(out, Mapping) else ''}")
    checked = action_info.validate({"action": np.asarray(out["action"])}, what="policy output", batch_dims=1)
    action = checked["action"]
    if len(action) != 1:
        raise SpecError(f"policy output['action']: expected a batch of 1 (one observation in), got {len(action)} rows")
    return action[0]


def trajectories_from_buffer(buffer: Any, obs_info: DataInfo, action_info: DataInfo,
                             envs_per_slice: int = 1) -> Trajectories:
    """The rows a SAC ``ReplayBuffer`` holds, as Trajectories.

    Slices follow one another; within a slice rows come in write order (oldest first once the
    slice has wrapped, so its first episode is then incomplete). Episodes end at rows that
    terminated or were truncated. A Worker stepping ``n`` environments writes their rows
    interleaved; ``envs_per_slice=n`` separates them again into each environment's own sequence.

    Raises:
        SpecError: the buffer lacks a column of ``obs_info``/``action_info`` or the flags.
        ValueError: ``envs_per_slice`` is not positive.
    """
    if envs_per_slice < 1:
        raise ValueError(f"envs_per_slice must be >= 1, got {envs_per_slice}")
    action_info = action_info.select(["action"])
    info = _step_info(obs_info, action_info)
    missing = [n for n in info.names if n not in buffer.arrays]
    if missing:
        raise SpecError(f"the replay buffer has no columns {missing}; it holds {tuple(buffer.arrays)}")
    parts: list[dict[str, np.ndarray]] = []
    for s in range(buffer.num_slices):
        end = int(buffer.counters[s])
        written = np.arange(end - min(end, buffer.slice_capacity), end)  # global write indices still held
        for e in range(envs_per_slice):
            rows = written[written % envs_per_slice == e] % buffer.slice_capacity
            if len(rows):
                parts.append({n: buffer.arrays[n][s, rows] for n in info.names})
    columns = {n: np.concatenate([p[n] for p in parts]) if parts else buffer.arrays[n][0, :0] for n in info.names}
    done = (columns["terminated"] > 0.5) | (columns["truncated"] > 0.5)
    columns["terminated"] = columns["terminated"] > 0.5
    columns["truncated"] = columns["truncated"] > 0.5
    first = np.zeros(len(done), bool)
    # each slice (and each environment within one) starts a new episode
    first[np.cumsum([len(p["action"]) for p in parts], dtype=np.int64)[:-1]] = True
    if len(done):
        first[0] = True
        first[1:] |= done[:-1]
    return Trajectories(obs_info, action_info, columns, np.flatnonzero(first).astype(np.int64))


# --- HDF5 files -----------------------------------------------------------------------------------

def _check_suffix(path: str) -> None:
    if not str(path).lower().endswith(_SUFFIXES):
        raise ValueError(f"dataset path {path!r} must end in .h5 or .hdf5 (it is an HDF5 file)")


def _chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunks of whole rows, about ``_CHUNK_BYTES`` each (every dimension at least 1)."""
    row = tuple(max(1, d) for d in shape[1:])
    rows = max(1, _CHUNK_BYTES // max(1, itemsize * int(np.prod(row))))
    return (max(1, min(shape[0], rows)),) + row


def _write_array(group: Any, name: str, array: np.ndarray, compression: str | None) -> None:
    """One chunked (and unless ``compression=None``, compressed) dataset, growable along rows."""
    group.create_dataset(name, data=array, chunks=_chunks(array.shape, array.dtype.itemsize),
                         maxshape=(None,) * array.ndim, compression=compression,
                         shuffle=compression is not None)


def save_data(path: str, data: Trajectories, *, compression: str | None = "gzip") -> None:
    """Write ``data`` to one HDF5 file, atomically (a crash leaves any previous file as it was).

    Layout: ``obs/<name>`` per observation entry, ``action``, ``reward``, ``terminated``,
    ``truncated`` and ``episode_starts``, each chunked and compressed; the root attributes
    ``format`` (``"aquaml.trajectories"``), ``format_version``, ``obs_info`` and ``action_info``
    (``DataInfo.to_json``).

    Raises:
        ValueError: ``path`` does not end in ``.h5``/``.hdf5``.
    """
    import h5py
    _check_suffix(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT_NAME
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["obs_info"] = data.obs_info.to_json()
            f.attrs["action_info"] = data.action_info.to_json()
            obs = f.create_group("obs")
            for name in data.obs_info.names:
                _write_array(obs, name, data.columns[name], compression)
            for name in STEP_COLUMNS:
                _write_array(f, name, data.columns[name], compression)
            _write_array(f, "episode_starts", data.episode_starts, compression)


def load_data(path: str, obs_info: DataInfo | None = None, action_info: DataInfo | None = None) -> Trajectories:
    """Read a file written by ``save_data``, exactly as saved (same dtypes, shapes and values).

    Args:
        path: the ``.h5``/``.hdf5`` file.
        obs_info: the observation entries the task expects; each must be in the file with the
            same shape and dtype. Entries the file has beyond these are dropped.
        action_info: the action the task expects (shape, dtype and, if discrete, the number of choices).

    Raises:
        FileNotFoundError: there is no file at ``path``.
        ValueError: the file is not an aquaml dataset, is of a newer format, or is inconsistent.
        SpecError: the file's data does not match ``obs_info``/``action_info``.
    """
    import h5py
    _check_suffix(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no dataset at {path!r}")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path!r} is not a readable HDF5 file ({err})") from None
    with f:
        if f.attrs.get("format") != FORMAT_NAME:
            raise ValueError(f"{path!r} is an HDF5 file but not an aquaml dataset (no format={FORMAT_NAME!r} "
                             "attribute); write datasets with aquaml.datasets.save_data")
        version = int(f.attrs.get("format_version", -1))
        if version > FORMAT_VERSION:
            raise ValueError(f"{path!r} has dataset format version {version}; this aquaml reads up to "
                             f"{FORMAT_VERSION}: update aquaml")
        file_obs, file_action = (_header_info(f, path, key) for key in ("obs_info", "action_info"))
        if obs_info is not None:
            _check_expected(path, "observation", file_obs, obs_info)
            file_obs = file_obs.select(obs_info.names)
        if action_info is not None:
            _check_expected(path, "action", file_action, action_info.select(["action"]))
        info = _step_info(file_obs, file_action)
        locations = {**{n: "obs/" + n for n in file_obs.names}, **{n: n for n in STEP_COLUMNS}}
        columns = {n: _read_array(f, path, locations[n], info.shape(n), info.dtype(n)) for n in info.names}
        starts = _read_array(f, path, "episode_starts", None, np.dtype(np.int64))
    return Trajectories(file_obs, file_action, columns, starts)


def _header_info(f: Any, path: str, key: str) -> DataInfo:
    """The DataInfo a file's attribute ``key`` holds."""
    text = f.attrs.get(key)
    if text is None:
        raise ValueError(f"dataset {path}: the attribute {key!r} is missing; the file is damaged")
    return DataInfo.from_json(text)


def _read_array(f: Any, path: str, location: str, shape: tuple[int, ...] | None, dtype: np.dtype) -> np.ndarray:
    """A whole dataset, checked against what the file's own attributes declare."""
    if location not in f:
        raise ValueError(f"dataset {path}: {location!r} is missing; the file is damaged or was not "
                         "written by save_data")
    array = f[location][()]
    if (shape is not None and array.shape[1:] != shape) or array.dtype != dtype:
        raise ValueError(f"dataset {path}: {location!r} holds {array.shape[1:]} {array.dtype.name} rows but "
                         f"the file's header declares {shape} {dtype.name}; the file is damaged")
    return array


def _check_expected(path: str, what: str, found: DataInfo, expected: DataInfo) -> None:
    """Raise SpecError naming the first entry of ``expected`` that ``found`` lacks or disagrees on."""
    for name in expected.names:
        if name not in found:
            raise SpecError(f"dataset {path}: {what} {name!r} is missing; the file has {found.names}")
        for field, have, want in (("shape", found.shape(name), expected.shape(name)),
                                  ("dtype", found.dtype(name).name, expected.dtype(name).name),
                                  ("number of choices", found.meta(name).get("n"), expected.meta(name).get("n"))):
            if field == "number of choices" and want is None:
                continue
            if have != want:
                raise SpecError(f"dataset {path}: {what} {name!r} has {field} {have} but the task expects {want}")


# --- behaviour cloning ----------------------------------------------------------------------------

def _split_rows(data: Trajectories, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation rows. Whole episodes are held out when there are two or more, so
    the validation loss measures copying on unseen episodes, not on neighbours of training rows."""
    n = len(data)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0 or n < 2:
        return np.arange(n), np.arange(0)
    held = np.zeros(n, bool)
    if data.num_episodes >= 2:
        bounds = np.append(data.episode_starts, n)
        for e in rng.permutation(data.num_episodes)[:-1]:  # keep at least one episode for training
            if held.sum() >= fraction * n:
                break
            held[bounds[e]:bounds[e + 1]] = True
    else:
        held[rng.permutation(n)[:max(1, int(round(fraction * n)))]] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


def _check_actor(actor: Any, data: Trajectories) -> tuple[tuple[str, ...], int, bool]:
    """The actor's input names, the position of ``action`` among its outputs, and whether the
    action is discrete; raises naming what disagrees between actor and dataset."""
    names = getattr(actor, "input_name", None)
    info = getattr(actor, "output_info", None)
    if isinstance(names, str) or not names or not isinstance(info, Mapping) or "action" not in info:
        raise ModelContractError(f"behaviour_cloning needs an actor with input_name (a tuple of observation names) "
                                 f"and output_info (a dict with 'action'); got input_name={names!r}, "
                                 f"output_info={info!r}")
    names = tuple(names)
    missing = [n for n in names if n not in data.obs_info]
    if missing:
        raise SpecError(f"the actor reads {missing}, which the dataset does not hold; its observations are "
                        f"{data.obs_info.names}")
    discrete = is_discrete_action(data.action_info)
    declared = tuple(int(d) for d in np.atleast_1d(info["action"]))
    action_shape, action_dtype = data.action_info.shape("action"), data.action_info.dtype("action")
    if discrete:
        want = (int(data.action_info.meta("action")["n"]),)
        if declared != want:
            raise SpecError(f"the dataset's action is a choice among {want[0]}, so the actor's "
                            f"output_info['action'] must be {want} (logits); it is {declared}")
    elif action_dtype.kind != "f":
        raise SpecError(f"the dataset's action is {action_dtype.name} without a number of choices (meta 'n'); "
                        "behaviour cloning needs float actions or a discrete action spec")
    elif declared != action_shape:
        raise SpecError(f"the dataset's action has shape {action_shape} but the actor's output_info['action'] is "
                        f"{declared}")
    return names, list(info).index("action"), discrete


def _cloning_target(actor: Any, squash: bool | None) -> tuple[Any, Callable[[dict], dict], bool]:
    """The model to train, what turns recorded observations into its inputs, and ``squash``: from an
    algorithm (its actor, its ``cloning_inputs``, tanh when its deterministic action is one) or a
    bare model (inputs as recorded, tanh unless told otherwise)."""
    import keras
    if isinstance(actor, keras.Model):
        return actor, dict, True if squash is None else squash
    from aquaml.algos.base import Algorithm
    if not isinstance(actor, Algorithm):
        raise TypeError(f"behaviour_cloning clones an RLBaseModel actor or an algorithm (SAC, PPO, ...), "
                        f"got {type(actor).__name__}")
    head = actor.deterministic_head()
    tanh = head is not None and head["action"] == "tanh"
    return actor.actor.model, actor.cloning_inputs, tanh if squash is None else squash


def behaviour_cloning(actor: Any, data: Trajectories, *, epochs: int = 30, batch_size: int = 256,
                      learning_rate: float | None = None, seed: int = 0, validation_fraction: float = 0.1,
                      squash: bool | None = None) -> dict[str, float]:
    """Train ``actor`` (an RLBaseModel, or an algorithm's actor) to reproduce the dataset's actions.

    - Discrete action: the actor's ``action`` output is the logits; the loss is the softmax
      cross-entropy of the recorded index (what PPO's argmax then picks).
    - Continuous action: the loss is the mean squared error between the predicted action and the
      recorded one, clipped to [-1, 1] (the range every aquaml environment takes). With
      ``squash=True`` the prediction is ``tanh(action output)``, matching SAC, whose actor outputs
      the pre-tanh mean; with ``squash=False`` it is the raw output, matching PPO, whose
      deterministic action is the mean clipped to [-1, 1].

    Only the ``action`` output is trained (a ``log_std`` output is left as it is). Optimiser: Adam
    with ``learning_rate``, by default the actor's own ``learning_rate``. Rows are shuffled each
    epoch with ``seed``; ``validation_fraction`` of the rows (whole episodes when there are
    several) are held out.

    Given an algorithm (``starter.algo``), its actor is trained on the observations as the
    algorithm feeds them to it: a PPO with ``normalize_obs`` first folds the dataset's observations
    into its statistics and the actor learns on the normalised ones, so PPO then acts as the clone
    learned. ``squash`` then defaults to the algorithm's own (True for SAC, False for PPO); for a
    bare model it defaults to True, and the observations are fed as recorded.

    Returns:
        ``bc/train_loss`` (on all training rows after the last epoch), ``bc/val_loss`` (if any rows
        are held out), ``bc/train_accuracy``/``bc/val_accuracy`` for a discrete action, and
        ``bc/train_rows``, ``bc/val_rows``, ``bc/epochs``.

    Raises:
        TypeError: ``actor`` is neither a Keras model nor an algorithm.
        SpecError: the actor reads observations the dataset lacks, or its ``action`` output does
            not fit the dataset's action.
        ModelContractError: the actor lacks ``input_name``/``output_info`` or its call does not
            return them.
        ValueError: the dataset is empty, or an argument is out of range.
    """
    import keras
    import tensorflow as tf
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"behaviour_cloning needs epochs >= 0 and batch_size >= 1, got {epochs}, {batch_size}")
    if not len(data):
        raise ValueError("behaviour_cloning got an empty dataset")
    actor, as_seen, squash = _cloning_target(actor, squash)
    names, index, discrete = _check_actor(actor, data)
    rng = np.random.default_rng(seed)
    train_rows, val_rows = _split_rows(data, validation_fraction, rng)
    seen = as_seen(data.obs)
    inputs = {n: seen[n] for n in names}
    target = data.columns["action"]
    target = target.astype(np.int64) if discrete else np.clip(target, -1.0, 1.0).astype(np.float32)
    _check_outputs(actor, [inputs[n][:2] for n in names], index)
    lr = float(actor.learning_rate if learning_rate is None else learning_rate)
    optimizer = keras.optimizers.Adam(learning_rate=lr)
    signature = [[tf.TensorSpec((None,) + inputs[n].shape[1:], tf.as_dtype(inputs[n].dtype)) for n in names],
                 tf.TensorSpec((None,) + target.shape[1:], tf.as_dtype(target.dtype))]

    def losses(x: list, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Per-row loss and per-row correctness (1.0 for continuous actions)."""
        pred = actor(*x)[index]
        if discrete:
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=pred)
            return loss, tf.cast(tf.equal(tf.argmax(pred, axis=-1), y), tf.float32)
        pred = tf.tanh(pred) if squash else pred
        err = tf.reshape(tf.square(pred - y), [tf.shape(y)[0], -1])
        return tf.reduce_mean(err, axis=-1), tf.ones(tf.shape(y)[:1])

    @tf.function(input_signature=signature)
    def train_step(x: list, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(losses(x, y)[0])
        grads = tape.gradient(loss, actor.trainable_variables)
        # outputs other than 'action' (a log_std head) get no gradient and are left as they are
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, actor.trainable_variables) if g is not None])
        return loss

    def evaluate(rows: np.ndarray) -> tuple[float, float]:
        total = np.zeros(2)
        for b in range(0, len(rows), 4096):  # eagerly: a few large batches, not worth a trace
            part = rows[b:b + 4096]
            loss, hit = losses([tf.constant(inputs[n][part]) for n in names], tf.constant(target[part]))
            total += (float(tf.reduce_sum(loss)), float(tf.reduce_sum(hit)))
        return float(total[0] / len(rows)), float(total[1] / len(rows))

    for _ in range(epochs):
        order = rng.permutation(train_rows)
        for b in range(0, len(order), batch_size):
            part = order[b:b + batch_size]
            train_step([inputs[n][part] for n in names], target[part])
    metrics = {"bc/train_rows": float(len(train_rows)), "bc/val_rows": float(len(val_rows)),
               "bc/epochs": float(epochs)}
    for label, rows in (("train", train_rows), ("val", val_rows)):
        if len(rows):
            loss, accuracy = evaluate(rows)
            metrics[f"bc/{label}_loss"] = loss
            if discrete:
                metrics[f"bc/{label}_accuracy"] = accuracy
    return metrics


def _check_outputs(actor: Any, sample: list, index: int) -> None:
    """Call the actor once eagerly (building it if needed) and check it returns output_info's tuple."""
    try:
        out = actor(*sample)
    except Exception as err:
        shapes = {n: tuple(a.shape) for n, a in zip(actor.input_name, sample)}
        raise ModelContractError(f"the actor's call() failed on dataset rows {shapes} (argument order "
                                 f"{tuple(actor.input_name)}): {type(err).__name__}: {err}") from err
    if not isinstance(out, (tuple, list)) or len(out) != len(actor.output_info):
        raise ModelContractError(f"the actor's call() must return a tuple in output_info order "
                                 f"{tuple(actor.output_info)}, got {type(out).__name__}")
    want = (len(sample[0]),) + tuple(int(d) for d in np.atleast_1d(actor.output_info["action"]))
    if tuple(out[index].shape) != want:
        raise ModelContractError(f"the actor's 'action' output has shape {tuple(out[index].shape)} for "
                                 f"{want[0]} rows; output_info says {want[1:]} per row")
