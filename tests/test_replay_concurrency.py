"""The replay buffer read while a worker writes: a scripted writer interleaved with the reader.

Under MPI a worker writes its slice of the node's shared buffer column by column while the optimizer
samples it and checkpoints it. The writer here is a generator that writes one column of a step (or
publishes the counter) per action; the store advances it at every fence and before every column
the reader copies, a random number of actions each time (seeded), so every interleaving of reader
and writer occurs. Each row stores its write count ``t`` in two columns written separately: a row
whose columns disagree is torn (two steps mixed), a sequence whose ``t`` are not consecutive is broken.
"""
import numpy as np
import pytest

from aquaml import DataInfo
from aquaml.buffers.replay import LocalArrayStore, ReplayBuffer
from aquaml.run.checkpoint import load_replay, save_replay

INFO = DataInfo(("t", "x"), ((), (2,)), (np.int64, np.float64))


class _HookedArray(np.ndarray):
    """A column that lets the writer run before each read of it."""
    hook = None

    def __getitem__(self, index):
        if type(self).hook is not None and isinstance(index, tuple):
            type(self).hook()
        return np.asarray(super().__getitem__(index))


class InterleavedStore(LocalArrayStore):
    """Arrays another process writes: ``advance`` runs between the reader's steps."""
    concurrent = True

    def __init__(self, advance=None):
        self.advance = advance

    def allocate(self, layout):
        arrays = super().allocate(layout)
        return {n: a if n == "__counters__" else a.view(_HookedArray) for n, a in arrays.items()}

    def fence(self):
        if self.advance is not None:
            self.advance()


def scripted_writer(buffer, slice_index, rows_per_step):
    """Steps of ``rows_per_step`` rows (environments), one column (or the counter) per action."""
    cap = buffer.slice_capacity
    while True:
        start = int(buffer.counters[slice_index])
        counts = start + np.arange(rows_per_step)
        rows = counts % cap
        buffer.arrays["x"][slice_index, rows] = np.stack([counts, counts], axis=1).astype(np.float64)
        yield
        buffer.arrays["t"][slice_index, rows] = counts
        yield
        buffer.counters[slice_index] = start + rows_per_step
        yield


def interleaved_buffer(stride, capacity=64, slices=2, seed=0):
    """A full buffer whose slices are written by scripted writers while it is read."""
    store = InterleavedStore()
    buffer = ReplayBuffer(INFO, capacity * slices, slices, store, stride=stride)
    writers = [scripted_writer(buffer, s, stride) for s in range(slices)]
    for writer in writers:  # fill (and wrap) every slice first
        for _ in range(3 * (2 * capacity // stride + 5)):
            next(writer)
    script = np.random.default_rng(seed)

    def advance():
        for writer in writers:
            for _ in range(script.integers(0, 4)):
                next(writer)
    store.advance = advance
    _HookedArray.hook = advance
    return buffer


@pytest.fixture(autouse=True)
def _no_hook_left():
    yield
    _HookedArray.hook = None


def torn(batch):
    return int(np.sum((batch["x"][..., 0] != batch["t"]) | (batch["x"][..., 1] != batch["t"])))


@pytest.mark.parametrize("stride", [1, 2])
def test_sampling_while_a_worker_writes_hands_out_no_torn_row(stride):
    buffer = interleaved_buffer(stride)
    rng = np.random.default_rng(1)
    batches = [buffer.sample(64, rng) for _ in range(60)]
    assert sum(torn(b) for b in batches) == 0
    assert len(np.unique(np.concatenate([b["t"] for b in batches]))) > 100  # the ring moved on meanwhile


@pytest.mark.parametrize("stride", [1, 2])
def test_sequences_sampled_while_a_worker_writes_are_all_contiguous(stride):
    buffer = interleaved_buffer(stride)
    rng = np.random.default_rng(2)
    batch = {k: np.concatenate(v) for k, v in zip(
        ("t", "x"), zip(*[(b["t"], b["x"]) for b in (buffer.sample_sequences(40, 8, rng) for _ in range(100))]))}
    assert batch["t"].shape == (4000, 8)
    broken = int(np.sum(np.any(np.diff(batch["t"], axis=1) != stride, axis=1)))
    assert broken == 0 and torn(batch) == 0


def test_a_checkpoint_written_while_a_worker_writes_holds_only_intact_rows(tmp_path):
    buffer = interleaved_buffer(stride=1, slices=1)
    path = str(tmp_path / "replay.h5")
    save_replay(path, buffer)
    _HookedArray.hook = None
    restored = ReplayBuffer(INFO, buffer.capacity, buffer.num_slices)
    load_replay(path, restored)
    written = int(restored.counters[0])
    assert written >= 2 * buffer.slice_capacity  # the workers' count goes on
    rng = np.random.default_rng(3)
    batch, sequences = restored.sample(20_000, rng), restored.sample_sequences(2_000, 8, rng)
    assert torn(batch) == 0 and torn(sequences) == 0
    # every row handed out is one of the slice's newest, where the writer put it
    assert batch["t"].min() >= written - buffer.slice_capacity and batch["t"].max() < written
    assert np.all(np.diff(sequences["t"], axis=1) == 1)


def test_one_process_sampling_draws_as_documented():
    """With no concurrent writer, a batch is the rows the generator's draws name, nothing redrawn
    (seeded one-process runs keep their exact progress.csv)."""
    buffer = ReplayBuffer(INFO, 30, 3)
    for s, n in ((0, 25), (2, 7)):  # slice 0 wrapped, slice 1 empty
        for _ in range(n):
            buffer.write(s, {"t": buffer.counters[s], "x": np.full(2, float(buffer.counters[s]))})
    batch = buffer.sample(500, np.random.default_rng(4))
    filled = np.minimum(buffer.counters, buffer.slice_capacity)
    flat = np.random.default_rng(4).integers(0, int(filled.sum()), size=500)
    offsets = np.cumsum(filled) - filled
    slices = np.searchsorted(offsets, flat, side="right") - 1
    np.testing.assert_array_equal(batch["t"], buffer.arrays["t"][slices, flat - offsets[slices]])


def column_writer(buffer, slice_index, rows_per_step):
    """Every column of a step of ``rows_per_step`` rows written on its own (one per action), each
    holding the row's write count ``t`` (actions: ``t % 3``); episodes never end."""
    cap = buffer.slice_capacity
    while True:
        start = int(buffer.counters[slice_index])
        counts = start + np.arange(rows_per_step)
        rows = counts % cap
        for name in buffer.info.names:
            column = buffer.arrays[name]
            if name in ("terminated", "truncated"):
                column[slice_index, rows] = 0.0
            elif name == "action":
                column[slice_index, rows] = counts % 3
            else:
                value = counts + (rows_per_step if name == "next_obs" else 0)
                column[slice_index, rows] = value.reshape((-1,) + (1,) * (column.ndim - 2))
            yield
        buffer.counters[slice_index] = start + rows_per_step
        yield


@pytest.mark.parametrize("n_steps", [1, 3])
def test_dqn_n_step_transitions_sampled_while_a_worker_writes_are_never_torn(n_steps):
    from aquaml import DQNParameters
    from test_dqn import make_dqn
    stride, gamma = 2, 0.9
    dqn = make_dqn(DQNParameters(batch_size=32, n_steps=n_steps, gamma=gamma, envs_per_worker=stride))
    store = InterleavedStore()
    buffer = ReplayBuffer(dqn.batch_info, 128, 2, store, stride=stride)
    writers = [column_writer(buffer, s, stride) for s in range(2)]
    for writer in writers:
        for _ in range(3 * 8 * (64 // stride + 5)):
            next(writer)
    script = np.random.default_rng(3)

    def advance():
        for writer in writers:
            for _ in range(script.integers(0, 8)):
                next(writer)
    store.advance = _HookedArray.hook = advance
    rng = np.random.default_rng(4)
    batches = [dqn.sample_many(buffer, rng, 2) for _ in range(60)]
    t = np.concatenate([b["obs"][..., 0].ravel() for b in batches])
    last = np.concatenate([b["next_obs"][..., 0].ravel() for b in batches])
    reward = np.concatenate([b["reward"].ravel() for b in batches])
    action = np.concatenate([b["action"].ravel() for b in batches])
    steps = np.arange(n_steps)
    assert np.array_equal(last, t + n_steps * stride)  # the window's last next_obs, n steps on
    np.testing.assert_allclose(reward, (gamma ** steps * (t[:, None] + stride * steps)).sum(axis=1), rtol=1e-6)
    assert np.array_equal(action, t.astype(np.int64) % 3)
    assert len(np.unique(t)) > 100  # the ring moved on meanwhile
