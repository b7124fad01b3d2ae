"""Checkpoints: everything a run needs to continue exactly where it stopped, written so that a crash
at any moment leaves either the previous checkpoint or the new one, never half of one.

A checkpoint is a directory ``checkpoints/step_<000000012000>/`` holding

- ``algo.npz``: every variable of the algorithm (model and target weights, optimizer slots and
  iteration counters, temperature, ``log_std``, sampling-noise generator state, normaliser stats);
- ``state.json`` and ``state.npz``: counters, numpy RNG states, progress bookkeeping and one
  snapshot per worker (its RNG and noise streams, episode sums, current observations), the arrays
  among them in the ``.npz``;
- ``workers.<k>.envs.pkl`` (under MPI ``workers.<k>.worker.envs.pkl``), one per worker snapshot:
  its environments pickled mid-episode, the only pickles (an environment may be any Python object);
- ``replay.h5`` (optional): the replay buffer's filled rows per worker slice, compressed;
- ``MANIFEST.json``, written last: size and SHA-256 of every other file, signed with the user's
  key (``aquaml.run.signing``).

It is assembled in a temporary directory beside the others and renamed into place, so a reader
never sees a partial one. On resume, the newest checkpoint whose manifest checks out is used; a
damaged or partial one is skipped with a warning naming what is wrong. A checkpoint is resumed
only when its signature is the user's (or the user says it is trusted), because unpickling its
environments can run any code; ``aquaml export`` reads ``algo.npz`` alone. The JSON, ``.npz``
(read without pickles) and HDF5 files hold data only.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import shutil
import tempfile
import time
import warnings
from typing import Any, Mapping

import numpy as np

from aquaml.buffers.replay import ReplayBuffer
from aquaml.data import DataInfo
from aquaml.run import signing
from aquaml.storage import file_sha256, replace_dir

MANIFEST = "MANIFEST.json"
FORMAT_VERSION = 2
ALGO_ARRAYS, STATE_JSON, STATE_ARRAYS, REPLAY = "algo.npz", "state.json", "state.npz", "replay.h5"
_PICKLE_SUFFIX = ".pkl"
_PREFIX = "step_"
#: What a resume of someone else's checkpoint takes: the flag and the argument that say "I trust it".
TRUST_HINT = "aquaml train ... --trust-checkpoint, or RLTaskStarter(..., trust_checkpoint=True)"


def next_due(steps: int, interval: int) -> float:
    """The first multiple of ``interval`` after ``steps`` (infinity for interval 0: only at the end)."""
    return (steps // interval + 1) * interval if interval else math.inf


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: missing, damaged, or from an incompatible run."""


class UntrustedCheckpointError(CheckpointError):
    """A checkpoint whose loading could run code is not signed by this user (and not trusted)."""


# --- state as JSON, numpy arrays and pickled environments ------------------------------------
_ARRAY, _SCALAR, _PICKLE = "__array__", "__scalar__", "__pickle__"


def encode_state(value: Any, arrays: dict[str, np.ndarray], pickles: dict[str, bytes], path: str = "") -> Any:
    """``value`` as JSON data: numpy arrays and scalars move into ``arrays`` and ``bytes`` (pickled
    environments) into ``pickles``, each replaced by a reference named after its place in ``value``.

    Raises:
        TypeError: a value is none of dict (str keys), list, tuple, str, number, bool, None,
            numpy array or scalar, bytes.
    """
    if isinstance(value, Mapping):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise TypeError(f"checkpoint state {path or '/'}: keys must be strings, got {bad[:3]}")
        return {k: encode_state(v, arrays, pickles, f"{path}/{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_state(v, arrays, pickles, f"{path}/{i}") for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (np.ndarray, np.generic)):
        arrays[path] = np.asarray(value)
        return {_ARRAY if isinstance(value, np.ndarray) else _SCALAR: path}
    if isinstance(value, bytes):
        name = path.strip("/").replace("/", ".") + _PICKLE_SUFFIX
        pickles[name] = value
        return {_PICKLE: name}
    raise TypeError(f"checkpoint state {path}: a {type(value).__name__} cannot be stored (JSON data, numpy "
                    "arrays and pickled environments only)")


def decode_state(value: Any, arrays: Mapping[str, np.ndarray], pickle_bytes: Any) -> Any:
    """Invert ``encode_state``; ``pickle_bytes(name)`` gives the bytes of a pickled file."""
    if isinstance(value, dict):
        if len(value) == 1:
            (key, ref), = value.items()
            if key == _ARRAY:
                return arrays[ref]
            if key == _SCALAR:
                return arrays[ref][()]
            if key == _PICKLE:
                return pickle_bytes(ref)
        return {k: decode_state(v, arrays, pickle_bytes) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_state(v, arrays, pickle_bytes) for v in value]
    return value


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_replay(path: str, buffer: Any, counts: np.ndarray | None = None) -> None:
    """Write each slice's rows, oldest first, to an HDF5 file (gzip-compressed, chunked).

    ``counts`` caps each slice's counter (a worker's snapshot may predate rows written since);
    rows overwritten in a ring that wrapped since, or that a worker may have been writing while
    they were copied, are not saved (``first`` of the slice's group says where the rows begin).
    """
    import h5py
    now = buffer.read_counters()
    counts = now if counts is None else np.minimum(np.asarray(counts, np.int64), now)
    cap = buffer.slice_capacity
    with h5py.File(path, "w") as f:
        f.attrs["counters"] = counts
        f.attrs["slice_capacity"] = cap
        for s in range(buffer.num_slices):
            oldest = max(int(counts[s]) - cap, int(now[s]) - cap + buffer.write_margin, int(buffer.valid_from[s]), 0)
            columns, first = buffer.copy_rows(s, min(oldest, int(counts[s])), int(counts[s]))
            group = f.create_group(f"slice_{s}")
            group.attrs["first"] = first
            for name, data in columns.items():
                chunks = (min(max(len(data), 1), 4096),) + data.shape[1:]
                group.create_dataset(name, data=data, compression="gzip", compression_opts=1,
                                     chunks=chunks if len(data) else None)


def load_replay(path: str, buffer: Any) -> None:
    """Refill ``buffer`` (same layout as when saved) from ``save_replay``'s file.

    The counters continue the saved counts; rows a slice's ring would count but the file lacks
    are marked unheld (``buffer.valid_from``), so they are never sampled.
    """
    import h5py
    with h5py.File(path, "r") as f:
        counts = np.asarray(f.attrs["counters"], np.int64)
        if len(counts) != buffer.num_slices or int(f.attrs["slice_capacity"]) != buffer.slice_capacity:
            raise CheckpointError(f"{path}: replay buffer of {len(counts)} slices x {int(f.attrs['slice_capacity'])} "
                                  f"rows, but this run has {buffer.num_slices} x {buffer.slice_capacity}")
        for s in range(buffer.num_slices):
            group = f[f"slice_{s}"]
            first = int(group.attrs["first"])
            rows = np.arange(first, int(counts[s])) % buffer.slice_capacity
            for name, array in buffer.arrays.items():
                array[s, rows] = group[name][...]
            buffer.valid_from[s] = first
        buffer.store.fence()
        buffer.counters[:] = counts


class Checkpointer:
    """Writes, prunes and finds the checkpoints of one run directory.

    Args:
        run_dir: the run's directory; checkpoints go to ``run_dir/checkpoints``.
        keep: how many of the newest checkpoints to keep (older ones are deleted after a new one
            is complete).
    """

    def __init__(self, run_dir: str, keep: int = 3) -> None:
        if keep < 1:
            raise ValueError(f"keep_checkpoints must be >= 1, got {keep}")
        self.root = os.path.join(run_dir, "checkpoints")
        self.keep = keep
        self.last_seconds = 0.0
        self.last_bytes = 0

    def path(self, step: int) -> str:
        return os.path.join(self.root, f"{_PREFIX}{step:012d}")

    def save(self, step: int, arrays: Mapping[str, np.ndarray], state: Mapping[str, Any],
             replay: tuple[Any, np.ndarray | None] | None = None) -> str:
        """Write the checkpoint for ``step`` atomically; returns its path. Prunes old ones after.

        ``state`` is what ``encode_state`` takes: JSON data, numpy arrays, and ``bytes`` for each
        worker's pickled environments.
        """
        t0 = time.perf_counter()
        os.makedirs(self.root, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".tmp-{_PREFIX}{step:012d}-", dir=self.root)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would otherwise stay on the checkpoint
        try:
            self._write_files(tmp, arrays, state, replay)
            files = {}
            for name in sorted(os.listdir(tmp)):
                full = os.path.join(tmp, name)
                with open(full, "rb+") as f:
                    os.fsync(f.fileno())
                files[name] = {"bytes": os.path.getsize(full), "sha256": file_sha256(full)}
            manifest = {"format": FORMAT_VERSION, "step": int(step), "files": files, "written": time.time()}
            manifest["signature"] = signing.sign(manifest)
            with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as f:
                json.dump(manifest, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(tmp)
            final = self.path(step)
            replace_dir(tmp, final)  # the same step again (e.g. resumed at it) is replaced whole
            _fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.last_seconds = time.perf_counter() - t0
        self.last_bytes = sum(v["bytes"] for v in files.values())
        self._prune()
        return final

    @staticmethod
    def _write_files(directory: str, arrays: Mapping[str, np.ndarray], state: Mapping[str, Any],
                     replay: tuple[Any, np.ndarray | None] | None) -> None:
        with open(os.path.join(directory, ALGO_ARRAYS), "wb") as f:
            np.savez(f, **arrays)
        state_arrays: dict[str, np.ndarray] = {}
        pickles: dict[str, bytes] = {}
        document = encode_state(dict(state), state_arrays, pickles)
        with open(os.path.join(directory, STATE_JSON), "w", encoding="utf-8") as f:
            json.dump(document, f)
        with open(os.path.join(directory, STATE_ARRAYS), "wb") as f:
            np.savez(f, **state_arrays)
        for name, blob in pickles.items():
            with open(os.path.join(directory, name), "wb") as f:
                f.write(blob)
        if replay is not None:
            save_replay(os.path.join(directory, REPLAY), *replay)

    def steps(self) -> list[int]:
        """Steps of the checkpoint directories present (valid or not), oldest first."""
        if not os.path.isdir(self.root):
            return []
        found = []
        for name in os.listdir(self.root):
            if name.startswith(_PREFIX) and name[len(_PREFIX):].isdigit():
                found.append(int(name[len(_PREFIX):]))
        return sorted(found)

    def _prune(self) -> None:
        for step in self.steps()[:-self.keep]:
            shutil.rmtree(self.path(step), ignore_errors=True)
        for name in os.listdir(self.root):  # leftovers of writes that were killed
            if name.startswith((".tmp-", ".old-")):
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)

    @staticmethod
    def verify(path: str) -> dict:
        """Return the manifest of a complete, undamaged checkpoint; raise CheckpointError otherwise.

        This checks sizes and checksums, not who wrote it (``load`` checks the signature).
        """
        manifest_path = os.path.join(path, MANIFEST)
        try:
            with open(manifest_path, encoding="utf-8") as f:
                manifest = json.load(f)
        except FileNotFoundError:
            raise CheckpointError(f"{path}: no {MANIFEST} (the write did not finish)") from None
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: unreadable {MANIFEST} ({exc})") from None
        if manifest.get("format") not in (1, FORMAT_VERSION):
            raise CheckpointError(f"{path}: checkpoint format {manifest.get('format')!r}, expected {FORMAT_VERSION}")
        for name, want in manifest["files"].items():
            full = os.path.join(path, name)
            if not os.path.exists(full):
                raise CheckpointError(f"{path}: {name} is missing")
            size = os.path.getsize(full)
            if size != want["bytes"]:
                raise CheckpointError(f"{path}: {name} has {size} bytes, the manifest says {want['bytes']}")
            if file_sha256(full) != want["sha256"]:
                raise CheckpointError(f"{path}: {name} does not match its checksum")
        return manifest

    def latest(self) -> str | None:
        """The newest valid checkpoint, warning about each newer one that is damaged; None if none."""
        for step in reversed(self.steps()):
            path = self.path(step)
            try:
                self.verify(path)
                return path
            except CheckpointError as exc:
                warnings.warn(f"skipping damaged checkpoint: {exc}", stacklevel=2)
        return None

    @staticmethod
    def load_arrays(path: str) -> dict[str, np.ndarray]:
        """The algorithm's variables (``algo.npz``, read without pickles): all ``aquaml export`` needs."""
        with np.load(os.path.join(path, ALGO_ARRAYS), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    @staticmethod
    def load(path: str, trust: bool = False) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The arrays and the state of a verified checkpoint, to resume from.

        Args:
            path: the checkpoint directory (``verify`` passed).
            trust: load it even when it is not signed with the user's key.

        Raises:
            UntrustedCheckpointError: the checkpoint is not signed with the user's key (or is of
                format 1, whose state is one pickle) and ``trust`` is False; nothing was unpickled.
        """
        with open(os.path.join(path, MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
        if manifest.get("format") == 1:
            return Checkpointer.load_arrays(path), _load_format_1(path, trust)
        problem = signing.signature_problem(manifest)
        if problem is not None and not trust:
            raise UntrustedCheckpointError(
                f"{path} is not a checkpoint you wrote: {problem}. Resuming unpickles its environments, which "
                f"can run any code. If you trust where it came from, resume with {TRUST_HINT}")

        def pickle_bytes(name: str) -> bytes:
            with open(os.path.join(path, name), "rb") as f:
                blob = f.read()
            if hashlib.sha256(blob).hexdigest() != manifest["files"].get(name, {}).get("sha256"):
                raise CheckpointError(f"{path}: {name} changed after the checkpoint was checked")
            return blob  # the bytes the signed manifest vouches for, read once: unpickled by the worker

        with open(os.path.join(path, STATE_JSON), encoding="utf-8") as f:
            document = json.load(f)
        with np.load(os.path.join(path, STATE_ARRAYS), allow_pickle=False) as npz:
            state_arrays = {k: npz[k] for k in npz.files}
        return Checkpointer.load_arrays(path), decode_state(document, state_arrays, pickle_bytes)


def _load_format_1(path: str, trust: bool) -> dict[str, Any]:
    """The state of a checkpoint written before format 2: one pickle, loaded only when trusted."""
    if not trust:
        raise UntrustedCheckpointError(
            f"{path} was written by an older aquaml (checkpoint format 1): its state is one pickle (state.pkl), "
            "which can run any code when loaded, and carries no signature. If you wrote it (or trust where it "
            f"came from), resume with {TRUST_HINT}; its next checkpoints are then of format {FORMAT_VERSION}")
    with open(os.path.join(path, "state.pkl"), "rb") as f:
        return pickle.load(f)


def variables_state(groups: Mapping[str, list]) -> dict[str, np.ndarray]:
    """Flatten named lists of variables into ``{'group/i': array}``."""
    return {f"{g}/{i}": np.asarray(v.numpy()) for g, variables in groups.items() for i, v in enumerate(variables)}


def check_variables_state(groups: Mapping[str, list], arrays: Mapping[str, np.ndarray]) -> None:
    """Raise CheckpointError unless ``arrays`` has one array of the right shape for every variable."""
    for g, variables in groups.items():
        have = sum(1 for k in arrays if k.rsplit("/", 1)[0] == g)
        if have != len(variables):
            raise CheckpointError(f"checkpoint holds {have} arrays for {g!r}, this run has {len(variables)} "
                                  "(were the models changed since the checkpoint?)")
        for i, v in enumerate(variables):
            value = arrays[f"{g}/{i}"]
            if tuple(value.shape) != tuple(v.shape):
                raise CheckpointError(f"checkpoint {g}/{i} has shape {value.shape}, this run's variable "
                                      f"{getattr(v, 'path', getattr(v, 'name', ''))} has {tuple(v.shape)} "
                                      "(were the models changed since the checkpoint?)")


def load_variables_state(groups: Mapping[str, list], arrays: Mapping[str, np.ndarray]) -> None:
    """Assign ``variables_state`` arrays back, checking every count and shape first."""
    check_variables_state(groups, arrays)
    for g, variables in groups.items():
        for i, v in enumerate(variables):
            v.assign(arrays[f"{g}/{i}"])


#: Parameters a resumed run may change: how long it trains, how it reports, how long it waits on silent workers.
RESUMABLE_CHANGES = ("total_steps", "display_interval", "calculate_episodes", "stall_timeout")
#: ``aquaml train`` flags (config.json ``cli``) that shape its default models, by config key.
_CLI_MODEL_FLAGS = {"hidden": "--hidden", "learning_rate": "--learning-rate"}


def check_resumable(saved: Mapping[str, Any], current: Mapping[str, Any], run_dir: str) -> None:
    """Raise CheckpointError unless the task being started is the one ``saved`` (its config.json) describes.

    Only ``RESUMABLE_CHANGES`` may differ; everything else (algorithm, specs, parameters, model
    inputs, rank count) must match, because the checkpoint's state only fits that task.
    """
    problems = []
    for key in ("algo", "obs_info", "action_info", "ranks"):
        old, new = saved.get(key), current.get(key)
        if key.endswith("_info") and isinstance(old, dict):  # the same spec, however an older aquaml wrote it
            old = DataInfo.from_dict(old).to_dict()
        if old != new:
            problems.append(f"{key}: checkpoint {old!r}, now {new!r}")
    old, new = saved.get("parameters", {}), current.get("parameters", {})
    for key in sorted(set(old) | set(new)):
        if key not in RESUMABLE_CHANGES and old.get(key) != new.get(key):
            problems.append(f"parameters.{key}: checkpoint {old.get(key)!r}, now {new.get(key)!r}")
    old_cli, new_cli = saved.get("cli") or {}, current.get("cli") or {}
    for key, flag in _CLI_MODEL_FLAGS.items():  # the default models the aquaml command built
        if key in old_cli and key in new_cli and old_cli[key] != new_cli[key]:
            problems.append(f"{flag}: checkpoint {old_cli[key]!r}, now {new_cli[key]!r}")
    old_models = {k: v.get("input_name") for k, v in saved.get("models", {}).items()}
    new_models = {k: v.get("input_name") for k, v in current.get("models", {}).items()}
    if old_models != new_models:
        problems.append(f"models (role: input names): checkpoint {old_models}, now {new_models}")
    if problems:
        raise CheckpointError(f"cannot resume {run_dir}: this task differs from the one checkpointed "
                              "(only " + ", ".join(RESUMABLE_CHANGES) + " may change):\n  " + "\n  ".join(problems))


class TaskCheckpoints:
    """A task's checkpoint sink (``aquaml.schedules.context.CheckpointSink``): what the learner
    hands over, plus the algorithm's variables and other state, the progress bookkeeping and
    (with ``keep_buffer``) the replay buffer, written by ``checkpointer``.

    Args:
        checkpointer: the run directory's Checkpointer.
        algo: the algorithm (``state_groups``, ``extra_state``).
        progress: the run's Progress.
        ranks: the task's rank count (a resume must have the same).
        keep_buffer: include a replay buffer (an on-policy rollout buffer is never kept).
    """

    def __init__(self, checkpointer: Checkpointer, algo: Any, progress: Any, ranks: int, keep_buffer: bool) -> None:
        self.checkpointer, self.algo, self.progress = checkpointer, algo, progress
        self.ranks, self.keep_buffer = ranks, keep_buffer

    def save(self, step: int, learner: Mapping[str, Any], workers: list, buffer: Any,
             counts: np.ndarray | None = None) -> str:
        state = {"step": int(step), "ranks": self.ranks, "loop": dict(learner), "progress": self.progress.state_dict(),
                 "algo": self.algo.extra_state(), "workers": list(workers)}
        replay = (buffer, counts) if self.keep_buffer and isinstance(buffer, ReplayBuffer) else None
        return self.checkpointer.save(step, variables_state(self.algo.state_groups()), state, replay)

    def restore(self, restored: tuple[dict, dict], buffer: Any) -> tuple[dict, list]:
        arrays, state = restored
        load_variables_state(self.algo.state_groups(), arrays)
        self.algo.load_extra_state(state["algo"])
        self.progress.load_state_dict(state["progress"])
        path = os.path.join(self.checkpointer.path(state["step"]), "replay.h5")
        if isinstance(buffer, ReplayBuffer) and os.path.exists(path):
            load_replay(path, buffer)
        return state["loop"], state["workers"]
