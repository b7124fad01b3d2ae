"""Run under mpiexec: every transition arrives exactly once and in order; weights are never torn.

Each worker steps an environment whose observation is (worker, step index) and writes through the
real Worker into its buffer slice (shared memory on the optimizer's node, MPI messages from other
nodes). The optimizer reads every slice incrementally while the workers write and checks the
indices run 0, 1, 2, ... with nothing lost or repeated. Meanwhile it publishes weight versions
whose every value encodes the version; readers check each vector they load is one whole version.
Prints one line per slice with a digest of its data, so two runs can be compared.
"""
import hashlib
import sys
import time

import numpy as np

from aquaml import DataInfo, RLBaseEnv
from aquaml.algos.sac import transition_info
from aquaml.buffers.replay import ReplayBuffer
from aquaml.parallel.failure import install_abort_hook
from aquaml.parallel.mpi import POLL_SECONDS, mpi, sleepy_barrier
from aquaml.parallel.links import DONE, STOP, NodeState
from aquaml.schedules.marks import share
from aquaml.parallel.topology import make_topology
from aquaml.parallel.transport import LeaderChannel, TransitionReceiver, TransitionSender, receive_from_optimizer
from aquaml.acting.worker import Worker

TOTAL = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
SHAPES = [(64, 32), (32,)]


class IndexEnv(RLBaseEnv):
    def __init__(self, worker):
        super().__init__()
        self.worker, self.t = worker, 0
        self._obs_info = DataInfo("obs", (2,), np.float64)

    def reset(self, seed=None):
        return {"obs": np.array([self.worker, self.t], np.float64)}

    def step(self, action):
        self.t += 1
        return {"obs": np.array([self.worker, self.t], np.float64)}, 1.0, False, self.t % 97 == 0, {}


def weights_for(version):
    flat = np.arange(sum(int(np.prod(s)) for s in SHAPES), dtype=np.float32) * 1e-4 + version
    return [flat[:64 * 32].reshape(64, 32), flat[64 * 32:]]


def check_weights(got):
    version, weights = got
    expected = weights_for(version)
    assert all(np.array_equal(a, b) for a, b in zip(weights, expected)), f"torn weights at version {version}"


def main():
    topo = make_topology(mpi().COMM_WORLD)
    install_abort_hook(topo.comm, topo.role)
    obs_info = DataInfo("obs", (2,), np.float64)
    info = transition_info(obs_info, DataInfo("action", (1,)))
    W = topo.num_workers
    state = NodeState(topo, lambda slices, store: ReplayBuffer(info, TOTAL + W, slices, store), SHAPES, 1024)
    if topo.is_optimizer:
        seen = np.zeros(W, np.int64)
        digests = [{n: hashlib.sha256() for n in info.names} for _ in range(W)]
        receiver = TransitionReceiver(topo.comm, info, state.buffer, lambda w, eps: None) if topo.remote_workers() else None
        sender = LeaderChannel(topo.comm, topo.remote_leaders) if topo.remote_leaders else None
        local = [r - 1 for r in range(1, topo.size) if r not in topo.remote_workers()]
        version = 0
        while True:
            if receiver is not None:
                receiver.poll()
            for w in range(W):
                if state.buffer.counters[w] > seen[w]:
                    columns, end = state.buffer.rows_since(w, int(seen[w]))
                    obs, nxt = columns["obs"], columns["next_obs"]
                    assert (obs[:, 0] == w).all(), f"slice {w} holds another worker's data"
                    # every transition once, in order: indices continue where the last read ended
                    steps = np.arange(seen[w], end)
                    assert np.array_equal(nxt[:, 1], steps + 1), f"slice {w}: gap or repeat near {seen[w]}"
                    for n in info.names:
                        digests[w][n].update(columns[n].tobytes())
                    seen[w] = end
            version += 1
            state.weights.publish(weights_for(version))
            if sender is not None:
                sender.offer(0, version, state.weights.read_flat(version - 1)[1])
            done_local = all(state.control[DONE + w] for w in local)
            done_remote = receiver is None or len(receiver.done) == len(topo.remote_workers())
            if done_local and done_remote and all(seen[w] == state.buffer.counters[w] for w in range(W)):
                break
        assert seen.sum() == TOTAL, f"read {seen.sum()} transitions, expected {TOTAL}"
        state.control[STOP] = 1
        if sender is not None:
            sender.stop()
        for w in range(W):
            digest = hashlib.sha256("".join(digests[w][n].hexdigest() for n in info.names).encode()).hexdigest()
            print(f"slice {w} rows {seen[w]} digest {digest[:16]}", flush=True)
        print(f"published {version} weight versions", flush=True)
    else:
        w = topo.worker_index
        sender = None if topo.on_optimizer_node else TransitionSender(topo.comm, info, chunk=257)
        worker = Worker([IndexEnv(w)], obs_info, DataInfo("action", (1,)), None,
                        state.buffer if sender is None else sender, slice_index=w, seed=w)
        loaded, last = 0, 0
        quota = share(TOTAL, W, w)
        while worker.steps < quota:
            worker.step(random=True)
            if topo.is_node_leader and sender is not None:
                got = receive_from_optimizer(topo.comm)
                if got is not None and got[1] is not None and got[0] > state.weights.version:
                    state.weights.publish_flat(got[1], got[0])
            got = state.weights.read(last)
            if got is not None:
                check_weights(got)
                last, loaded = got[0], loaded + 1
        if sender is not None:
            sender.flush(done=True)
            sender.wait()
        else:
            state.control[DONE + w] = 1
        while not state.control[STOP]:
            if topo.is_node_leader and sender is not None:
                got = receive_from_optimizer(topo.comm)
                if got is not None and got[3]:
                    state.control[STOP] = 1
            time.sleep(POLL_SECONDS)
        assert loaded > 0, "no weights were ever loaded"
        print(f"worker {w} loaded {loaded} whole weight versions", flush=True)
    sleepy_barrier(topo.comm)
    state.close()


if __name__ == "__main__":
    main()
