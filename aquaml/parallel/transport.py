"""Between nodes: transitions go to the optimizer and weights come back, as contiguous byte buffers.

A message is one uint8 array: an int64 header, then each column's bytes in DataInfo order. Nothing
on the data path is pickled (checkpoint snapshots, at the end of this file, are). Sends are
non-blocking; completions and receives are polled with sleeps in between.
"""
from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np

from aquaml.data import DataInfo
from aquaml.parallel.mpi import POLL_SECONDS, mpi, sleepy_wait

TAG_TRANSITIONS = 71
TAG_WEIGHTS = 72

#: Columns of the per-episode records that travel with transitions.
EPISODE_INFO = DataInfo(("return", "length"), ((), ()), (np.float64, np.int64))


def pack(header: list[int], parts: list[tuple[DataInfo, Mapping[str, np.ndarray]]]) -> np.ndarray:
    """One contiguous byte buffer: the int64 header, then every column of every part in order."""
    chunks = [np.asarray(header, np.int64).view(np.uint8)]
    for info, columns in parts:
        chunks += [np.ascontiguousarray(columns[n], dtype=info.dtype(n)).reshape(-1).view(np.uint8)
                   for n in info.names]
    return np.concatenate(chunks)


def unpack(buf: np.ndarray, header_len: int, parts: list[tuple[DataInfo, int]]) -> tuple[np.ndarray, list[dict]]:
    """Invert ``pack``: the header and, per part, its columns with the given row counts."""
    header = buf[:8 * header_len].view(np.int64)
    offset, out = 8 * header_len, []
    for info, rows in parts:
        columns = {}
        for n in info.names:
            shape = (rows,) + info.shape(n)
            nbytes = int(np.prod(shape, dtype=np.int64)) * info.dtype(n).itemsize
            columns[n] = buf[offset:offset + nbytes].view(info.dtype(n)).reshape(shape)
            offset += nbytes
        out.append(columns)
    return header, out


class TransitionSender:
    """A remote worker's stand-in for its buffer slice: stages transitions and ships them to rank 0.

    Args:
        comm: the task communicator.
        info: the transition columns.
        chunk: transitions per message (a flush also happens before the worker waits, and at the end).
    """

    def __init__(self, comm: Any, info: DataInfo, chunk: int = 64) -> None:
        self.comm, self.info, self.chunk = comm, info, chunk
        self._staged: list[Mapping[str, np.ndarray]] = []
        self._episodes: list[tuple[float, int]] = []
        self._rows = 0
        self._request = None
        self._sending: np.ndarray | None = None
        self.sent = 0

    def write_batch(self, slice_index: int, columns: Mapping[str, np.ndarray]) -> None:
        self._staged.append({n: np.array(columns[n]) for n in self.info.names})
        self._rows += len(columns[self.info.names[0]])
        if self._rows >= self.chunk:
            self.flush()

    def add_episodes(self, episodes: list) -> None:
        self._episodes += [(e.ret, e.length) for e in episodes]

    def flush(self, done: bool = False) -> None:
        """Send what is staged (and the episodes that ended), marking the last message ``done``."""
        if not self._rows and not self._episodes and not done:
            return
        columns = {n: np.concatenate([s[n] for s in self._staged]) if self._staged
                   else np.zeros((0,) + self.info.shape(n), self.info.dtype(n)) for n in self.info.names}
        episodes = {"return": np.array([e[0] for e in self._episodes], np.float64),
                    "length": np.array([e[1] for e in self._episodes], np.int64)}
        message = pack([self._rows, len(self._episodes), int(done)], [(self.info, columns), (EPISODE_INFO, episodes)])
        self.wait()
        self._sending = message  # kept alive until the send completes
        self._request = self.comm.Isend([message, mpi().BYTE], dest=0, tag=TAG_TRANSITIONS)
        self.sent += self._rows
        self._staged, self._episodes, self._rows = [], [], 0

    def wait(self) -> None:
        if self._request is not None:
            sleepy_wait(self._request)
            self._request = None


class TransitionReceiver:
    """On the optimizer: writes remote workers' transitions into their slices as messages arrive."""

    def __init__(self, comm: Any, info: DataInfo, buffer: Any, episode_sink: Any) -> None:
        self.comm, self.info, self.buffer, self.episode_sink = comm, info, buffer, episode_sink
        self.done: set[int] = set()

    def poll(self) -> int:
        """Take every message that has arrived; return how many transitions were written."""
        MPI = mpi()
        status, written = MPI.Status(), 0
        while self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=TAG_TRANSITIONS, status=status):
            source = status.Get_source()
            buf = np.empty(status.Get_count(MPI.BYTE), np.uint8)
            self.comm.Recv([buf, MPI.BYTE], source=source, tag=TAG_TRANSITIONS)  # already here: no wait
            rows, n_episodes = (int(v) for v in buf[:16].view(np.int64))
            header, (columns, episodes) = unpack(buf, 3, [(self.info, rows), (EPISODE_INFO, n_episodes)])
            if rows:
                self.buffer.write_batch(source - 1, columns)
            self.episode_sink(source - 1, episodes)
            if header[2]:
                self.done.add(source)
            written += rows
        return written


#: Header of an optimizer-to-leader message: int64 [version, updates, stop, has weights].
_LEADER_HEADER = 4


class LeaderChannel:
    """On the optimizer: keeps every remote node leader up to date on weights, update count and stop.

    Each leader has at most one message in flight. What is offered while one is in flight is not
    lost: ``progress()`` sends the newest state (the newest weights, if any were offered since the
    last send, else the update count alone) as soon as the previous message has been received. All
    messages share one tag, so a leader receives them in the order they were sent, and the stop
    message is the last one: nothing is sent after it (a send nobody receives would never complete).
    """

    def __init__(self, comm: Any, leaders: list[int]) -> None:
        self.comm, self.leaders = comm, leaders
        self._in_flight: dict[int, tuple[Any, np.ndarray]] = {}
        self._sent: dict[int, tuple[int, int]] = {leader: (-1, -1) for leader in leaders}  # (version, updates)
        self._version, self._updates, self._flat = 0, 0, None
        self.stopped = False

    def offer(self, updates: int, version: int | None = None, flat: np.ndarray | None = None) -> None:
        """Record the newest update count (and weights ``flat`` as ``version``), sent when a leader is free."""
        self._updates = max(self._updates, int(updates))
        if flat is not None:
            self._version, self._flat = int(version), flat
        self.progress()

    def progress(self) -> None:
        """Send the newest state to every leader whose previous message has arrived."""
        if self.stopped:
            return
        for leader in self.leaders:
            if not self._free(leader):
                continue
            version, updates = self._sent[leader]
            with_weights = self._flat is not None and self._version > version
            if with_weights or self._updates > updates:
                self._send(leader, stop=False, with_weights=with_weights)

    def stop(self) -> None:
        """Send every leader its last message (the newest count and the stop flag) once everything
        sent before has arrived, and wait for it. Calling it again does nothing."""
        if self.stopped:
            return
        for leader in self.leaders:
            self._wait(leader)  # the leader is still receiving: it has not seen a stop yet
            self._send(leader, stop=True, with_weights=False)
        for leader in self.leaders:
            self._wait(leader)
        self.stopped = True

    def _free(self, leader: int) -> bool:
        pending = self._in_flight.get(leader)
        if pending is not None and not pending[0].Test():
            return False
        self._in_flight.pop(leader, None)
        return True

    def _wait(self, leader: int) -> None:
        pending = self._in_flight.pop(leader, None)
        if pending is not None:
            sleepy_wait(pending[0])

    def _send(self, leader: int, stop: bool, with_weights: bool) -> None:
        header = np.array([self._version, self._updates, int(stop), int(with_weights)], np.int64).view(np.uint8)
        message = np.concatenate([header, np.asarray(self._flat, np.float32).view(np.uint8)]) if with_weights \
            else header
        self._in_flight[leader] = (self.comm.Isend([message, mpi().BYTE], dest=leader, tag=TAG_WEIGHTS), message)
        self._sent[leader] = (self._version if with_weights else self._sent[leader][0], self._updates)


def receive_from_optimizer(comm: Any) -> tuple[int, np.ndarray | None, int, bool] | None:
    """On a remote node leader: every message the optimizer sent since the last call, folded into
    ``(version, flat weights or None, updates, stop)`` (the newest weights, the highest count), or
    None when nothing arrived."""
    MPI = mpi()
    status, got = MPI.Status(), None
    version, flat, updates, stop = 0, None, 0, False
    while comm.Iprobe(source=0, tag=TAG_WEIGHTS, status=status):
        buf = np.empty(status.Get_count(MPI.BYTE), np.uint8)
        comm.Recv([buf, MPI.BYTE], source=0, tag=TAG_WEIGHTS)
        got = True
        head = buf[:8 * _LEADER_HEADER].view(np.int64)
        updates = max(updates, int(head[1]))
        stop = stop or bool(head[2])
        if head[3] and int(head[0]) >= version:
            version, flat = int(head[0]), buf[8 * _LEADER_HEADER:].view(np.float32)
    if got is None:
        return None
    return version, flat, updates, stop


# --- checkpoint snapshots: rare, small-to-medium Python objects (a worker's pickled environments,
# its RNG states and counters), so pickled messages are the simple and adequate tool here ----------
TAG_SNAPSHOT = 73
TAG_RESTORE = 74


class SnapshotSender:
    """A worker's snapshots on their way to the optimizer, sent without blocking the worker."""

    def __init__(self, comm: Any) -> None:
        self.comm = comm
        self._pending: list = []

    def send(self, mark: int, state: dict) -> None:
        self._pending.append(self.comm.isend((mark, state), dest=0, tag=TAG_SNAPSHOT))
        self.progress()

    def progress(self) -> None:
        """Let MPI move pending sends along (a large message needs the sender's attention too)."""
        self._pending = [r for r in self._pending if not r.Test()]

    def wait(self) -> None:
        for request in self._pending:
            sleepy_wait(request)
        self._pending = []


def receive_snapshots(comm: Any, into: dict[int, tuple[int, dict]]) -> int:
    """Move every snapshot that has arrived into ``into[worker index] = (mark, state)`` (newest
    wins); return how many arrived."""
    MPI = mpi()
    status = MPI.Status()
    count = 0
    while comm.iprobe(source=MPI.ANY_SOURCE, tag=TAG_SNAPSHOT, status=status):
        source = status.Get_source()
        into[source - 1] = comm.recv(source=source, tag=TAG_SNAPSHOT)
        count += 1
    return count


def send_restore(comm: Any, states: list[dict | None]) -> None:
    """From the optimizer: each worker's state to start from (None: start afresh)."""
    requests = [comm.isend(state, dest=w + 1, tag=TAG_RESTORE) for w, state in enumerate(states)]
    for request in requests:
        sleepy_wait(request)


def receive_restore(comm: Any) -> dict | None:
    """On a worker: the state ``send_restore`` sent it, waiting without spinning."""
    while not comm.iprobe(source=0, tag=TAG_RESTORE):
        time.sleep(POLL_SECONDS)
    return comm.recv(source=0, tag=TAG_RESTORE)
